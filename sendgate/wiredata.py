"""DATA transparency and xtext: the two SMTP encodings the sendmail command
needs on every run (and BDAT's line endings, for the submit daemon).  No
imports at all, so that loading this costs nothing.
"""


def xtext(value: str) -> str:
    """RFC 3461 xtext: '+', '=' and anything outside '!'..'~' as +HH."""
    out = []
    for byte in value.encode("utf-8", "surrogateescape"):
        if 33 <= byte <= 126 and byte not in (43, 61):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def dot_stuff(content: bytes) -> bytes:
    """Message bytes as DATA sends them: every line ending (CRLF, bare LF or
    bare CR) becomes CRLF, lines starting with '.' get another, and the
    result ends with CRLF but not with the final '.' line.

    Normalizing bare CR and LF is what makes SMTP smuggling impossible
    through us: whatever the client sent, no byte sequence it chose can end
    the upstream DATA early.
    """
    lines = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line[:1] == b"." else line) + b"\r\n" for line in lines)


PIECE_SIZE = 1 << 16


def data_pieces(content: bytes, size: int = PIECE_SIZE):
    """What DATA sends after its 354, in pieces of about size bytes: the
    pieces joined are exactly dot_stuff(content) + b".\r\n", and each is cut
    after a LF, so no line ending is split and each piece starts a line.  A
    big message is never held dot-stuffed whole beside its original (a
    50 MB message would otherwise take about six copies); a small one is
    one piece, one write."""
    start, end_all = 0, len(content)
    while True:
        cut = content.find(b"\n", start + size)
        end = end_all if cut < 0 else cut + 1
        piece = dot_stuff(content[start:end])
        if end == end_all:
            yield piece + b".\r\n"
            return
        yield piece
        start = end


def crlf_lines(content: bytes) -> bytes:
    """Message bytes as BDAT sends them: dot_stuff() without the dots (BDAT
    counts octets, so a line of "." means nothing there)."""
    lines = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)
