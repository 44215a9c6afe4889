"""Header fields as the policy engine sees them.

A message header is a sequence of Field(name, value).  Values are text decoded
from the wire as UTF-8 with surrogateescape, so any 8-bit or broken byte
survives a round trip unchanged.  Folded values keep their line breaks as a
bare "\\n" followed by the continuation's white space; this is also how
libmilter hands folded headers to a milter, so both daemons build the same
Field values from the same header.
"""

from __future__ import annotations

from dataclasses import dataclass

ENCODING = "utf-8"
ERRORS = "surrogateescape"


@dataclass(frozen=True)
class Field:
    """One header field: name as written, value without the colon and the
    white space that follows it."""

    name: str
    value: str

    def is_(self, name: str) -> bool:
        return self.name.lower() == name.lower()

    def unfolded(self) -> str:
        """The value with folding removed (RFC 5322 §2.2.3)."""
        return self.value.replace("\r\n", "").replace("\n", "")


def decode(data: bytes) -> str:
    return data.decode(ENCODING, ERRORS)


def encode(text: str) -> bytes:
    return text.encode(ENCODING, ERRORS)


def valid_utf8(text: str) -> bool:
    """Whether text came from bytes that were valid UTF-8: decode() here, and
    aiosmtpd for SMTP commands, turn each byte that is not into a lone
    surrogate (surrogateescape), and text with any surrogate cannot be
    written out as UTF-8."""
    return not any("\ud800" <= c <= "\udfff" for c in text)


def _is_field_name(name: str) -> bool:
    # RFC 5322 §3.6.8: printable US-ASCII except colon.
    return bool(name) and all(33 <= ord(c) <= 126 for c in name)


def _scan(data: bytes) -> tuple[list[tuple[str, list[str], int, int]], int]:
    """Find the header fields: (name, value lines, start, end) and where the
    body starts.  See split_message for the rules."""
    fields: list[tuple[str, list[str], int, int]] = []
    pos = 0
    size = len(data)
    while pos < size:
        end = data.find(b"\n", pos)
        nxt = size if end < 0 else end + 1
        line = data[pos:nxt].rstrip(b"\n").rstrip(b"\r")
        if not line:
            return fields, nxt
        if line[:1] in (b" ", b"\t") and fields:
            name, parts, start, _ = fields[-1]
            parts.append(decode(line))
            fields[-1] = (name, parts, start, nxt)
            pos = nxt
            continue
        name, colon, rest = line.partition(b":")
        text_name = decode(name)
        if not colon or not _is_field_name(text_name):
            break
        fields.append((text_name, [decode(rest.lstrip(b" \t"))], pos, nxt))
        pos = nxt
    return fields, pos


def split_message(data: bytes) -> tuple[list[Field], bytes]:
    """Split a message into header fields and body.

    Lines may end in CRLF or bare LF.  The header ends at the first empty
    line, or, as in Postfix's cleanup, at the first line that is neither a
    field nor a continuation: that line and everything after it is body.
    The returned body starts after the separating empty line, if there was
    one.
    """
    fields, body = _scan(data)
    return [Field(name, "\n".join(parts)) for name, parts, _, _ in fields], data[body:]


def delete_fields(data: bytes, indexes: tuple[int, ...] | list[int]) -> bytes:
    """The message with the header fields at those 0-based indexes cut out,
    every other byte left exactly as it was."""
    fields, _ = _scan(data)
    drop = set(indexes)
    out, pos = [], 0
    for i, (_, _, start, end) in enumerate(fields):
        if i in drop:
            out.append(data[pos:start])
            pos = end
    out.append(data[pos:])
    return b"".join(out)


def find(header: list[Field] | tuple[Field, ...], name: str) -> list[int]:
    """Indexes (0-based) of every field called name, case-insensitively."""
    return [i for i, f in enumerate(header) if f.is_(name)]


@dataclass(frozen=True)
class AddHeader:
    """Add a field: at the end, or before the field at 0-based position index."""

    name: str
    value: str
    index: int | None = None


@dataclass(frozen=True)
class ChangeHeader:
    """Replace the value of the occurrence-th field called name (1-based, as
    libmilter's smfi_chgheader counts); an empty value deletes the field."""

    name: str
    occurrence: int
    value: str


Edit = AddHeader | ChangeHeader


def apply_edits(header: list[Field] | tuple[Field, ...], edits: list[Edit]) -> list[Field]:
    """The header after the edits, applied in order, as an MTA applies them."""
    out = list(header)
    for edit in edits:
        if isinstance(edit, AddHeader):
            field = Field(edit.name, edit.value)
            if edit.index is None:
                out.append(field)
            else:
                out.insert(edit.index, field)
            continue
        places = find(out, edit.name)
        if edit.occurrence > len(places):
            continue
        at = places[edit.occurrence - 1]
        if edit.value:
            out[at] = Field(out[at].name, edit.value)
        else:
            del out[at]
    return out
