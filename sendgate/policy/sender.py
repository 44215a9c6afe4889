"""Which addresses a principal may use as envelope sender or From: mailbox.

Patterns, per login, from the sender_login_maps setting:
  alice@example.org   exactly that address (the domain compares case-insensitively)
  *@example.org       any address in that domain
  alice+*@example.org the login with any +detail in that domain
A login with no entry may use login@myorigin and nothing else.  Logins in
sender_trusted_users may use any address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from sendgate import replies
from sendgate.replies import Reply


@dataclass(frozen=True)
class SenderRules:
    domain: str
    login_maps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    trusted: frozenset[str] = frozenset()
    allow_null_sender: bool = True


def qualify(address: str, domain: str) -> str:
    """An unqualified envelope address gets @domain (RFC 6409 §4.2)."""
    return address if (not address or "@" in address) else f"{address}@{domain}"


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


def patterns_for(login: str, rules: SenderRules) -> tuple[str, ...]:
    return rules.login_maps.get(login) or (f"{login}@{rules.domain}",)


def default_address(login: str, rules: SenderRules) -> str:
    """The address a login sends as when it names none: its first exact pattern."""
    for pattern in patterns_for(login, rules):
        local, _ = _split(pattern)
        if "*" not in local:
            return pattern
    return f"{login}@{rules.domain}"


def may_use(login: str, address: str, rules: SenderRules) -> bool:
    if login in rules.trusted:
        return True
    address = qualify(address, rules.domain)
    return any(_matches(p, address) for p in patterns_for(login, rules))


def check_envelope_sender(login: str, address: str, rules: SenderRules) -> Reply | None:
    """None when login may use address as MAIL FROM, else the reject reply.

    address is the path without angle brackets; '' is the null sender.
    """
    if address == "":
        if rules.allow_null_sender or login in rules.trusted:
            return None
        return replies.R553_NULL_SENDER.format(login=login)
    if may_use(login, address, rules):
        return None
    return replies.R553_SENDER_NOT_OWNED.format(address=address, login=login)
