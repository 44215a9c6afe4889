"""Pure SMTP syntax helpers for the submit daemon: the arguments of HELO,
EHLO, MAIL and RCPT, split into the path and the ESMTP parameters (what the
parameters mean is sendgate.policy.transaction's).  No I/O.
"""

from __future__ import annotations

import re

_PARAM_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
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


def valid_helo(name: str | None) -> bool:
    """A HELO/EHLO argument: present, printable (so valid UTF-8 too: the
    bytes that are not come in as unprintable surrogates)."""
    return bool(name) and name.isprintable()
