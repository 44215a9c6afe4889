"""Which addresses a principal may use as envelope sender or From: mailbox.

Patterns, per login, from the sender_login_maps setting:
  alice@example.org   exactly that address (the domain compares case-insensitively)
  *@example.org       any address in that domain
  alice+*@example.org the login with any +detail in that domain
A login with no entry may use login@myorigin and nothing else.  Logins in
sender_trusted_users may use any address.

What happens on a mismatch is configurable, separately for the envelope
sender and for the From: mailboxes:
  envelope: reject (553 at MAIL), rewrite (the milter changes the envelope
            sender to the user's address), or sender (accept it; the
            user is named in Sender:)
  From:     sender (accept; Sender: names the user, the RFC 6409 §8.1
            fix-up) or reject (550 at end of data)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from sendgate import replies
from sendgate.policy.addresses import qualify
from sendgate.replies import Reply


class Mismatch(enum.Enum):
    REJECT = "reject"
    REWRITE = "rewrite"
    SENDER = "sender"


@dataclass(frozen=True)
class SenderRules:
    domain: str
    login_maps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    trusted: frozenset[str] = frozenset()
    allow_null_sender: bool = True
    envelope_mismatch: Mismatch = Mismatch.REJECT
    from_mismatch: Mismatch = Mismatch.SENDER


def _split(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain.lower()


def _matches(pattern: str, address: str) -> bool:
    p_local, p_domain = _split(pattern)
    a_local, a_domain = _split(address)
    if p_domain != a_domain:
        return False
    if p_local == "*":
        return True
    if p_local.endswith("+*"):
        base = p_local[:-2]
        return a_local == base or a_local.startswith(base + "+")
    return p_local == a_local


def _login_address(login: str, rules: SenderRules) -> str:
    return f"{login}@{rules.domain}"


def patterns_for(login: str, rules: SenderRules) -> tuple[str, ...]:
    return rules.login_maps.get(login) or (_login_address(login, rules),)


def default_address(login: str, rules: SenderRules) -> str:
    """The address a login sends as when it names none: its first exact
    pattern, else login@domain (all its patterns are wildcards)."""
    for pattern in patterns_for(login, rules):
        local, _ = _split(pattern)
        if "*" not in local:
            return pattern
    return _login_address(login, rules)


def may_use(login: str, address: str, rules: SenderRules) -> bool:
    if login in rules.trusted:
        return True
    address = qualify(address, rules.domain)
    return any(_matches(p, address) for p in patterns_for(login, rules))


def check_envelope_sender(login: str, address: str, rules: SenderRules) -> Reply | None:
    """None when login may use address as MAIL FROM, else the reject reply
    (whatever the configured action; see envelope_verdict).

    address is the path without angle brackets; '' is the null sender.
    """
    if address == "":
        if rules.allow_null_sender or login in rules.trusted:
            return None
        return replies.R553_NULL_SENDER.format(login=login)
    if may_use(login, address, rules):
        return None
    return replies.R553_SENDER_NOT_OWNED.format(address=address, login=login)


def envelope_verdict(login: str, address: str, rules: SenderRules) -> tuple[Reply | None, str | None]:
    """(reject reply, new envelope sender) for MAIL FROM:<address>; both None
    when the address may be used or the mismatch action is `sender`."""
    refusal = check_envelope_sender(login, address, rules)
    if refusal is None or rules.envelope_mismatch is Mismatch.SENDER:
        return None, None
    if rules.envelope_mismatch is Mismatch.REWRITE:
        return None, default_address(login, rules)
    return refusal, None


def check_from(login: str, addresses: Sequence[str], rules: SenderRules) -> Reply | None:
    """The reject reply when from_mismatch is reject and a From: mailbox is
    not the login's; addresses are the From: addr-specs, qualified."""
    if rules.from_mismatch is not Mismatch.REJECT:
        return None
    for address in addresses:
        if not may_use(login, address, rules):
            return replies.R550_FROM_NOT_OWNED.format(address=address, login=login)
    return None
