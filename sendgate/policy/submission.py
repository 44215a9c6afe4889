"""The decision for one submitted message: the single call the milter makes
at end of message.

decide() combines, in this order:
1. header sanity: a NUL byte in any field, or a repeated From, Date or
   Message-ID (RFC 5322 §3.6 allows one each), rejects the message with
   554 5.6.0 naming the field: the fix-ups could not say what the message
   means.  (Several Sender: fields are not refused: the fix-ups replace
   them with one naming the user, or remove them);
2. the envelope sender rule (sender.envelope_verdict): reject, or rewrite;
3. the From: rule (sender.check_from), with From: qualified first;
4. the fix-ups (fixups.submission_fixups).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sendgate import replies
from sendgate.policy import fixups
from sendgate.policy.addresses import AddressSyntaxError, mailboxes, qualify
from sendgate.policy.identity import Principal
from sendgate.policy.message import Edit, Field
from sendgate.policy.sender import Mismatch, SenderRules, check_from, envelope_verdict
from sendgate.replies import Reply

ONCE_ONLY = frozenset({"from", "date", "message-id"})


@dataclass(frozen=True)
class Decision:
    reply: Reply | None               # a rejection, or None to accept
    edits: tuple[Edit, ...] = ()      # header edits, in order
    new_sender: str | None = None     # envelope sender to set (CHGFROM)


def header_problem(header: Sequence[Field]) -> Reply | None:
    seen: set[str] = set()
    for field in header:
        if "\x00" in field.name or "\x00" in field.value:
            return replies.R554_HEADER_NUL.format(field=field.name)
        key = field.name.lower()
        if key in ONCE_ONLY:
            if key in seen:
                return replies.R554_HEADER_REPEATED.format(field=field.name)
            seen.add(key)
    return None


def from_addresses(header: Sequence[Field], domain: str) -> list[str] | Reply:
    found: list[str] = []
    for field in header:
        if field.is_("From"):
            try:
                found.extend(qualify(m.addr_spec, domain) for m in mailboxes(field.value))
            except AddressSyntaxError as err:
                return replies.R554_HEADER.format(detail=f"{field.name}: {err}")
    return found


def decide(header: Sequence[Field], mail_from: str, principal: Principal, rules: SenderRules,
           settings: fixups.FixupSettings, stamp: fixups.Stamp) -> Decision:
    problem = header_problem(header)
    if problem is not None:
        return Decision(problem)
    refusal, new_sender = envelope_verdict(principal.login, mail_from, rules)
    if refusal is not None:
        return Decision(refusal)
    authors = from_addresses(header, rules.domain)
    if isinstance(authors, Reply):
        if rules.from_mismatch is Mismatch.REJECT:
            return Decision(authors)
        authors = []
    refusal = check_from(principal.login, authors, rules)
    if refusal is not None:
        return Decision(refusal)
    edits = fixups.submission_fixups(header, principal, settings, stamp)
    return Decision(None, tuple(edits), new_sender)
