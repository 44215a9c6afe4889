"""Pure SMTP syntax helpers shared by the submit daemon and the sendmail
command: MAIL/RCPT argument parsing, ESMTP parameters, xtext, and the DATA
transparency rules.  No I/O and no heavy imports (the sendmail command loads
this on every run).
"""

from __future__ import annotations

import re

_PARAM_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


class SyntaxProblem(ValueError):
    """The command argument cannot be parsed; str() says why."""


def _bad_char(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def parse_path_argument(arg: str, keyword: str) -> tuple[str, list[str]]:
    """Split 'FROM:<addr> P1 P2' (keyword 'FROM:') into ('addr', ['P1', 'P2']).

    The path is returned without angle brackets ('' for <>) and without a
    source route.  Parameters keep their case.  Lenient the way Postfix is by
    default: spaces after the colon and a missing pair of brackets are
    accepted.
    """
    if not arg[: len(keyword)].upper() == keyword:
        raise SyntaxProblem(f"expected {keyword}")
    rest = arg[len(keyword):].lstrip(" ")
    if _bad_char(rest):
        raise SyntaxProblem("control character in command")
    if rest.startswith("<"):
        in_quote = escaped = False
        for i, c in enumerate(rest[1:], 1):
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_quote = not in_quote
            elif c == ">" and not in_quote:
                path, tail = rest[1:i], rest[i + 1:]
                break
        else:
            raise SyntaxProblem("unbalanced angle bracket")
        if tail and not tail.startswith(" "):
            raise SyntaxProblem("text after the address")
    else:
        path, _, tail = rest.partition(" ")
        if not path:
            raise SyntaxProblem("missing address")
    if path.startswith("@"):
        # Source route <@a,@b:user@domain>: obsolete, ignored (RFC 5321 §4.1.1.3).
        _, colon, path = path.partition(":")
        if not colon:
            raise SyntaxProblem("bad source route")
    bare = _QUOTED.sub("", path)
    if "<" in bare or ">" in bare or bare.count("@") > 1:
        raise SyntaxProblem("bad address syntax")
    params = tail.split()
    for p in params:
        keyword_part = p.split("=", 1)[0]
        if not _PARAM_KEYWORD.match(keyword_part):
            raise SyntaxProblem(f"bad parameter {p!r}")
    return path, params


def param_name(param: str) -> str:
    return param.split("=", 1)[0].upper()


def param_value(param: str) -> str | None:
    _, eq, value = param.partition("=")
    return value if eq else None


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
    lines = _LINE_BREAK.split(content)
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line[:1] == b"." else line) + b"\r\n" for line in lines)
