"""Recipients from the message header (RCPTHDR), and the resent blocks.

recipients_from_header(header, domain, extra) picks the fields that name the
recipients, parses them, and returns the envelope recipients plus the fields
to delete before forwarding.  It reads the header only, never the body.

Source of recipients:

1. No Resent-To, Resent-Cc or Resent-Bcc anywhere: To, Cc and Bcc, every
   occurrence of each, in header order.  All Bcc fields are removed.
   (Resent-From or Resent-Date alone do not switch to resent mode, as in
   Postfix's sendmail -t.)
2. Otherwise the Resent-To/Cc/Bcc of one resent block, and only that block's
   Resent-Bcc fields are removed.  Which block:

   The resent fields are the seven of RFC 5322 §3.6.6: Resent-Date, -From,
   -Sender, -To, -Cc, -Bcc and -Message-ID.  Any other name starting with
   "Resent-" (a made-up Resent-Foo) is an ordinary field: it neither
   switches resent mode (here or in the fix-ups) nor belongs to a block.

   A *run* is a maximal sequence of consecutive resent fields.  Any other
   field ends a run, trace fields (Received, Return-Path) included.

   * One run: it is the block (wherever it sits; some MUAs append their
     Resent- fields at the bottom of the header).
   * Several runs, all above the first field that is neither trace nor
     resent (RFC 5322 §3.6.6 blocks, prepended one per resend and kept
     apart by the Received fields each relay added): the topmost run is the
     newest block and the only one used.
   * Several runs, at least one of them below an ordinary field (From, To,
     Subject, ...): the resent fields are scattered, RFC 822 style.  If no
     resent field name occurs twice in the whole header, all of them form
     one block (RFC 822 allows only one resent set); otherwise the header is
     ambiguous and rejected, naming the first field seen twice.

   Adjacent blocks: a run used as a block in which a field name appears
   twice holds several blocks with no trace field between them.  It is cut
   into consecutive blocks such that every block has exactly one
   Resent-Date, exactly one Resent-From and no field name twice (what RFC
   5322 §3.6.6 asks of a block).  If there is exactly one such cut, the
   first (topmost) block is used; if there is none, or more than one (e.g.
   "Resent-From, Resent-Date, Resent-To, Resent-From, Resent-Date": does the
   Resent-To end the first block or start the second?), the run is ambiguous
   and the message is rejected, naming the first field seen twice.
   Decision: older blocks are not checked further, since their fields are
   not used.

Then: groups expand to their members (an empty group adds none);
unqualified addresses get "@domain"; the RCPT addresses in `extra` come
first; duplicates collapse (exact local part, case-insensitive domain), the
first occurrence kept.  A field used that does not parse, a recipient domain
that is not valid UTF-8, or no recipient at all raises HeaderError, which
names the field for a "554 5.6.0" reply.  Fields not used (From, Reply-To,
To in resent mode, ...) are never parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sendgate.policy.addresses import AddressSyntaxError, mailboxes, normalize_addr, qualify
from sendgate.policy.message import Field, valid_utf8

_TRACE = frozenset({"received", "return-path"})
_NORMAL_SOURCES = frozenset({"to", "cc", "bcc"})
_RESENT_SOURCES = frozenset({"resent-to", "resent-cc", "resent-bcc"})
RESENT_FIELDS = frozenset({"resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc",
                           "resent-bcc", "resent-message-id"})


class HeaderError(ValueError):
    """The header cannot give an envelope.  .field names the header field as
    a reply should name it; .reason says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


@dataclass(frozen=True)
class Extraction:
    recipients: tuple[str, ...]   # addr-specs, qualified, duplicates removed, in order
    remove: tuple[int, ...]       # header indexes to delete before forwarding, ascending
    resent: bool                  # a resent block was the source


def is_resent(field: Field) -> bool:
    """One of the seven resent fields of RFC 5322 §3.6.6 (not any name that
    starts with "Resent-").  A message with any is being re-sent for the
    fix-ups (sendgate.policy.fixups), as for Postfix's cleanup; RCPTHDR
    switches to resent mode only on Resent-To, -Cc or -Bcc (rule 2 above)."""
    return field.name.lower() in RESENT_FIELDS


def _runs(header: Sequence[Field]) -> list[list[int]]:
    """Maximal runs of consecutive Resent- fields, as lists of indexes."""
    runs: list[list[int]] = []
    previous = -2
    for i, field in enumerate(header):
        if is_resent(field):
            if i == previous + 1:
                runs[-1].append(i)
            else:
                runs.append([i])
            previous = i
    return runs


def _first_repeat(header: Sequence[Field], indexes: Sequence[int]) -> str | None:
    """Name (as written) of the first field among indexes whose name,
    compared case-insensitively, has already been seen; None if none."""
    seen: set[str] = set()
    for i in indexes:
        key = header[i].name.lower()
        if key in seen:
            return header[i].name
        seen.add(key)
    return None


def _split_blocks(header: Sequence[Field], run: Sequence[int]) -> list[list[int]] | None:
    """The run cut into adjacent blocks (module docstring), or None when
    there is not exactly one way to cut it."""
    names = [header[i].name.lower() for i in run]
    longest = len(RESENT_FIELDS)   # a block holds each name at most once

    def is_block(a: int, b: int) -> bool:
        part = names[a:b]
        return (len(set(part)) == len(part) and "resent-date" in part and "resent-from" in part)

    # ways[b]: how many cuts of run[:b] (counted up to 2); last[b]: where the
    # final block of the one cut starts.
    ways = [1] + [0] * len(run)
    last = [0] * (len(run) + 1)
    for b in range(1, len(run) + 1):
        for a in range(max(0, b - longest), b):
            if ways[a] and is_block(a, b):
                ways[b] = min(2, ways[b] + ways[a])
                last[b] = a
    if ways[len(run)] != 1:
        return None
    blocks, b = [], len(run)
    while b:
        blocks.insert(0, list(run[last[b]:b]))
        b = last[b]
    return blocks


def resent_block(header: Sequence[Field]) -> list[int]:
    """Indexes of the resent block to use (see the module docstring)."""
    runs = _runs(header)
    if not runs:
        return []   # none left, e.g. the only one was a Resent-Bcc the fix-ups removed
    first_ordinary = next(
        (i for i, f in enumerate(header) if not is_resent(f) and f.name.lower() not in _TRACE),
        len(header),
    )
    if len(runs) == 1 or runs[-1][-1] < first_ordinary:
        # RFC 5322 blocks: the topmost is the newest.
        block = runs[0]
        repeated = _first_repeat(header, block)
        if repeated is not None:
            blocks = _split_blocks(header, block)
            if blocks is None:
                raise HeaderError(repeated, "ambiguous resent block: field appears twice")
            block = blocks[0]
        return block
    # RFC 822 style: scattered among ordinary fields, usable only as one set.
    every = [i for run in runs for i in run]
    repeated = _first_repeat(header, every)
    if repeated is not None:
        raise HeaderError(repeated, "ambiguous resent fields")
    return every


def recipients_from_header(header: Sequence[Field], domain: str, extra: Sequence[str] = ()) -> Extraction:
    """Envelope recipients for a message submitted with RCPTHDR.

    header: the fields as split_message returns them.  domain: appended to
    unqualified addresses.  extra: addresses from RCPT commands, already
    qualified, put first.  Raises HeaderError.
    """
    resent = any(f.name.lower() in _RESENT_SOURCES for f in header)
    if resent:
        candidates = resent_block(header)
        sources = _RESENT_SOURCES
        bcc = "resent-bcc"
        missing = "Resent-To"
    else:
        candidates = range(len(header))
        sources = _NORMAL_SOURCES
        bcc = "bcc"
        missing = "To"

    used = [i for i in candidates if header[i].name.lower() in sources]
    remove = tuple(sorted(i for i in used if header[i].name.lower() == bcc))

    recipients: list[str] = []
    seen: set[str] = set()

    def add(addr: str) -> None:
        key = normalize_addr(addr)
        if key not in seen:
            seen.add(key)
            recipients.append(addr)

    for addr in extra:
        add(addr)
    for i in used:
        field = header[i]
        try:
            found = mailboxes(field.value)
        except AddressSyntaxError as err:
            raise HeaderError(field.name, str(err)) from None
        for mailbox in found:
            if not valid_utf8(mailbox.domain):
                raise HeaderError(field.name, "address is not valid UTF-8")
            add(qualify(mailbox.addr_spec, domain))

    if not recipients:
        raise HeaderError(missing, "no recipients found in the message header")
    return Extraction(tuple(recipients), remove, resent)
