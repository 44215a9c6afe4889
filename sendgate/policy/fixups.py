"""RFC 6409 §8 submission fix-ups: header edits for an authenticated user's mail.

Input: the header as received, the principal, the settings, and a Stamp
carrying the two values that need a clock or randomness (the caller makes
them, so this module stays pure and its tests exact).  Output: a list of
Edits, which sendgate/milter/plan.py turns into milter actions.

Rules, each switchable:
* Date, Message-ID: added when missing (§8.2, §8.3).
* From: added when missing, with the principal's address and full name.
* Qualification (§4.2): an address without a domain in From, Sender,
  Reply-To, To, Cc, Bcc or their Resent- forms gets @domain, as Postfix's
  append_at_myorigin does.  The field is then rewritten from its parsed
  form, so comments in it are dropped; fields that need nothing are never
  touched.  Decision: the local part is not verified first (RFC 6409 §8
  asks for that where possible); the MTA bounces an unknown local user.
* Sender: (§8.1, RFC 5322 §3.6.2) set to the principal when the principal is
  not one of the From: mailboxes, or From: holds several mailboxes.  A client
  Sender: naming anyone else is replaced, or removed when none is needed.
* Bcc: removed (the resent block's Resent-Bcc in resent mode).
* Resent mode: a message with any Resent- field is being re-sent (the rule
  of Postfix's cleanup and of Sendmail), and the Resent- variants of Date,
  Message-ID, From and Sender are used, checked in the newest resent block
  (sendgate.policy.envelope.resent_block) and added at the start of that
  block, which for RFC 5322 blocks is the top of the header.

Fix-ups are idempotent: applying the edits and running again yields no edits.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Sequence

from sendgate.policy.addresses import (AddressSyntaxError, Group, Mailbox, mailboxes, normalize_addr,
                                       parse_address_list, qualify)
from sendgate.policy.envelope import HeaderError, is_resent, resent_block
from sendgate.policy.identity import Principal
from sendgate.policy.message import AddHeader, ChangeHeader, Edit, Field, apply_edits, find


@dataclass(frozen=True)
class FixupSettings:
    hostname: str
    domain: str = ""
    add_date: bool = True
    add_message_id: bool = True
    add_from: bool = True
    set_sender: bool = True
    qualify: bool = True
    remove_bcc: bool = True


@dataclass(frozen=True)
class Stamp:
    date: str      # an RFC 5322 date-time for now
    unique: str    # a globally unique id-left for a new Message-ID


ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc")
_ATEXT_SPECIALS = set("!#$%&'*+-/=?^_`{|}~ ")


def _display_name(name: str, encode: bool) -> str:
    """A display name as header text: atoms as they are, specials quoted,
    non-ASCII as one RFC 2047 encoded word when encode is set."""
    if not name:
        return ""
    if encode and not name.isascii():
        encoded = base64.b64encode(name.encode("utf-8", "surrogateescape")).decode("ascii")
        return f"=?utf-8?b?{encoded}?="
    if all(c.isalnum() or c in _ATEXT_SPECIALS for c in name):
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def format_mailbox(display_name: str, address: str, encode: bool = True) -> str:
    shown = _display_name(display_name, encode)
    return f"{shown} <{address}>" if shown else address


def _occurrence(header: Sequence[Field], index: int) -> int:
    """1-based number of header[index] among the fields of its name."""
    return find(header, header[index].name).index(index) + 1


def _addresses(field: Field) -> list[str] | None:
    """Normalized addresses of a field, or None when it cannot be parsed."""
    try:
        return [normalize_addr(m.addr_spec) for m in mailboxes(field.value)]
    except AddressSyntaxError:
        return None


def _qualified_value(value: str, domain: str) -> str | None:
    """The field value with every unqualified address qualified, or None
    when nothing needs it (or the value cannot be parsed)."""
    try:
        items = parse_address_list(value)
    except AddressSyntaxError:
        return None

    def render(m: Mailbox) -> str:
        addr = qualify(m.addr_spec, domain)
        return format_mailbox(m.display_name, addr, encode=False) if m.display_name else addr

    flat = [m for item in items for m in (item.members if isinstance(item, Group) else (item,))]
    if all(m.domain for m in flat):
        return None
    parts = []
    for item in items:
        if isinstance(item, Group):
            parts.append(f"{_display_name(item.display_name, False)}: {', '.join(render(m) for m in item.members)};")
        else:
            parts.append(render(item))
    return ", ".join(parts)


def _qualify_edits(header: Sequence[Field], domain: str) -> list[Edit]:
    edits: list[Edit] = []
    for i, field in enumerate(header):
        name = field.name.lower().removeprefix("resent-")
        if name in ADDRESS_FIELDS:
            value = _qualified_value(field.value, domain)
            if value is not None:
                edits.append(ChangeHeader(field.name, _occurrence(header, i), value))
    return edits


def _sender_edits(header: Sequence[Field], scope: Sequence[int], principal: Principal, prefix: str,
                  adding_from: bool) -> list[Edit]:
    me = normalize_addr(principal.address)
    froms = [i for i in scope if header[i].is_(prefix + "From")]
    if adding_from:
        needed = False
    elif not froms:
        needed = True
    else:
        listed: list[str] = []
        for i in froms:
            parsed = _addresses(header[i])
            if parsed is None:
                listed = []
                break
            listed.extend(parsed)
        needed = me not in listed or len(listed) > 1
    senders = [i for i in scope if header[i].is_(prefix + "Sender")]
    mine = [i for i in senders if _addresses(header[i]) == [me]]
    keep = mine[0] if (needed and mine) else None
    value = format_mailbox(principal.display_name, principal.address)
    edits: list[Edit] = []
    # Delete from the highest occurrence down, so earlier numbers stay valid.
    for i in reversed(senders):
        if i == keep or (not needed and i in mine):
            continue
        if needed and keep is None and i == senders[0]:
            edits.append(ChangeHeader(header[i].name, _occurrence(header, i), value))
            keep = i
            continue
        edits.append(ChangeHeader(header[i].name, _occurrence(header, i), ""))
    if needed and not senders:
        edits.append(AddHeader(prefix + "Sender", value, (scope[0] if scope else 0) if prefix else None))
    return edits


def _bcc_edits(header: Sequence[Field], scope: Sequence[int], name: str) -> list[Edit]:
    places = [i for i in scope if header[i].is_(name)]
    return [ChangeHeader(header[i].name, _occurrence(header, i), "") for i in reversed(places)]


def submission_fixups(header: Sequence[Field], principal: Principal, settings: FixupSettings,
                      stamp: Stamp) -> list[Edit]:
    resent = any(is_resent(f) for f in header)
    prefix = "Resent-" if resent else ""
    scope: Sequence[int] = range(len(header))
    if resent:
        try:
            scope = resent_block(header)
        except HeaderError:
            pass  # ambiguous blocks: look at the whole header
    present = lambda name: any(header[i].is_(prefix + name) for i in scope)  # noqa: E731
    # New Resent- fields join their block: at its first field.
    at_top = scope[0] if resent and scope else None

    edits: list[Edit] = []
    if settings.qualify and settings.domain:
        edits.extend(_qualify_edits(header, settings.domain))
    if settings.remove_bcc:
        edits.extend(_bcc_edits(header, scope, prefix + "Bcc"))
    if settings.add_date and not present("Date"):
        edits.append(AddHeader(prefix + "Date", stamp.date, at_top))
    if settings.add_message_id and not present("Message-ID"):
        edits.append(AddHeader(prefix + "Message-ID", f"<{stamp.unique}@{settings.hostname}>", at_top))
    adding_from = settings.add_from and not present("From")
    if adding_from:
        edits.append(AddHeader(prefix + "From", format_mailbox(principal.display_name, principal.address), at_top))
    if settings.set_sender:
        # Judge Sender: on the header as it will be, qualified and without Bcc.
        view = apply_edits(header, [e for e in edits if isinstance(e, ChangeHeader)])
        view_scope = range(len(view))
        if resent:
            try:
                view_scope = resent_block(view)
            except HeaderError:
                pass
        edits.extend(_sender_edits(view, view_scope, principal, prefix, adding_from))
    return edits
