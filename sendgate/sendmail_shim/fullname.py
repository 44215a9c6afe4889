"""sendmail -F: `From: NAME <address>` for a message that has no From:.

Loaded only when -F is given (every cron and anacron mail): it imports
binascii alone, not sendgate.policy (dataclasses, inspect, re, typing cost
more than the rest of a send).  display_name gives what
sendgate/policy/fixups.py's format_mailbox gives, and the header scan
follows sendgate/policy/message.py's split_message (tests/test_sendmail_fullname.py
holds both to them)."""

import binascii

_ATEXT_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~ ")


def display_name(name: str) -> str:
    """Atoms as they are, specials quoted, non-ASCII as one RFC 2047 word."""
    if not name.isascii():
        encoded = binascii.b2a_base64(name.encode("utf-8", "surrogateescape"), newline=False).decode("ascii")
        return f"=?utf-8?b?{encoded}?="
    if all(c.isalnum() or c in _ATEXT_SPECIALS for c in name):
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def mailbox(name: str, address: str) -> str:
    shown = display_name(name) if name else ""
    return f"{shown} <{address}>" if shown else address


def header_names(data: bytes) -> tuple[list[bytes], bool]:
    """The header's field names (lower case), and whether a header was
    found at all (False: the whole input is body).  The header ends at an
    empty line or at the first line that is neither a field nor a
    continuation."""
    names: list[bytes] = []
    pos, size = 0, len(data)
    while pos < size:
        end = data.find(b"\n", pos)
        nxt = size if end < 0 else end + 1
        line = data[pos:nxt].rstrip(b"\n").rstrip(b"\r")
        if not line:
            return names, True
        if line[:1] in (b" ", b"\t") and names:
            pos = nxt
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not name or not all(33 <= c <= 126 for c in name):
            break
        names.append(name.lower())
        pos = nxt
    return names, bool(names)


def with_from(message: bytes, full_name: str, address: str) -> bytes:
    """The message with `From: NAME <address>` on top when it has no From:
    field; unchanged otherwise."""
    names, has_header = header_names(message)
    if b"from" in names:
        return message
    line = f"From: {mailbox(full_name, address)}\n".encode("utf-8", "surrogateescape")
    return line + message if has_header else line + b"\n" + message
