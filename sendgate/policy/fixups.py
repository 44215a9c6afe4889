"""RFC 6409 §8 submission fix-ups: header edits for an authenticated user's mail.

Input: the header as received, the principal, the settings, and a Stamp
carrying the two values that need a clock or randomness (the caller makes
them, so this module stays pure and its tests exact).  Output: a list of
Edits for the adapter to apply (milter addheader/chgheader, or the submit
socket rewriting the message itself).

Rules, each switchable:
* Date, Message-ID: added when missing (§8.2, §8.3).
* From: added when missing, with the principal's address and full name.
* Sender: (§8.1, RFC 5322 §3.6.2) set to the principal when the principal is
  not one of the From: mailboxes, or From: holds several mailboxes.  A client
  Sender: naming anyone else is replaced, or removed when none is needed.
* Resent mode: a message with any Resent- field is being re-sent (Postfix's
  and Sendmail's rule), and the Resent- variants of all the above are used
  instead, added at the top of the header where the newest block belongs.

Fix-ups are idempotent: applying the edits and running again yields no edits.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from sendgate.policy.addresses import AddressSyntaxError, mailboxes, normalize_addr
from sendgate.policy.identity import Principal
from sendgate.policy.message import AddHeader, ChangeHeader, Edit, Field, find


@dataclass(frozen=True)
class FixupSettings:
    hostname: str
    add_date: bool = True
    add_message_id: bool = True
    add_from: bool = True
    set_sender: bool = True


@dataclass(frozen=True)
class Stamp:
    date: str      # an RFC 5322 date-time for now
    unique: str    # a globally unique id-left for a new Message-ID


_ATEXT_SPECIALS = set("!#$%&'*+-/=?^_`{|}~ ")


def _display_name(name: str) -> str:
    """A display name as header text: atoms as they are, ASCII with specials
    quoted, anything else as one RFC 2047 encoded word."""
    if not name:
        return ""
    if not name.isascii():
        encoded = base64.b64encode(name.encode("utf-8", "surrogateescape")).decode("ascii")
        return f"=?utf-8?b?{encoded}?="
    if all(c.isalnum() or c in _ATEXT_SPECIALS for c in name):
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def format_mailbox(display_name: str, address: str) -> str:
    shown = _display_name(display_name)
    return f"{shown} <{address}>" if shown else address


def is_resent(header: list[Field] | tuple[Field, ...]) -> bool:
    return any(f.name.lower().startswith("resent-") for f in header)


def _from_mailboxes(field: Field) -> list[str] | None:
    """Normalized From: addresses, or None when the field cannot be parsed."""
    try:
        return [normalize_addr(m.addr_spec) for m in mailboxes(field.value)]
    except AddressSyntaxError:
        return None


def _sender_edits(header, principal: Principal, from_name: str, sender_name: str,
                  adding_from: bool) -> list[Edit]:
    me = normalize_addr(principal.address)
    froms = find(header, from_name)
    if adding_from:
        needed = False
    elif not froms:
        needed = True
    else:
        listed: list[str] = []
        for i in froms:
            parsed = _from_mailboxes(header[i])
            if parsed is None:
                listed = []
                break
            listed.extend(parsed)
        needed = me not in listed or len(listed) > 1
    senders = find(header, sender_name)
    mine = [n for n, i in enumerate(senders, 1) if _from_mailboxes(header[i]) == [me]]
    edits: list[Edit] = []
    keep = mine[0] if (needed and mine) else None
    # Delete from the highest occurrence down, so earlier numbers stay valid.
    for n in range(len(senders), 0, -1):
        if n == keep or (not needed and n in mine):
            continue
        if needed and keep is None and n == 1:
            edits.append(ChangeHeader(sender_name, 1, format_mailbox(principal.display_name, principal.address)))
            keep = 1
            continue
        edits.append(ChangeHeader(sender_name, n, ""))
    if needed and not senders:
        edits.append(AddHeader(sender_name, format_mailbox(principal.display_name, principal.address),
                               0 if sender_name.startswith("Resent-") else None))
    return edits


def submission_fixups(header: list[Field] | tuple[Field, ...], principal: Principal,
                      settings: FixupSettings, stamp: Stamp) -> list[Edit]:
    resent = is_resent(header)
    prefix = "Resent-" if resent else ""
    at_top = 0 if resent else None
    edits: list[Edit] = []
    if settings.add_date and not find(header, prefix + "Date"):
        edits.append(AddHeader(prefix + "Date", stamp.date, at_top))
    if settings.add_message_id and not find(header, prefix + "Message-ID"):
        edits.append(AddHeader(prefix + "Message-ID", f"<{stamp.unique}@{settings.hostname}>", at_top))
    adding_from = settings.add_from and not find(header, prefix + "From")
    if adding_from:
        edits.append(AddHeader(prefix + "From", format_mailbox(principal.display_name, principal.address), at_top))
    if settings.set_sender:
        edits.extend(_sender_edits(header, principal, prefix + "From", prefix + "Sender", adding_from))
    return edits
