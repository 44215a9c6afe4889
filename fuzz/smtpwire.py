"""Target: SMTP command and parameter parsing (sendgate/smtpwire.py).
The first byte picks the keyword (FROM: or TO:), the rest is the argument.
Properties: parse_path_argument raises nothing but SyntaxProblem; the path
it returns has no control character and no unquoted angle bracket, and every
parameter is KEYWORD[=VALUE] with no space; valid_helo raises nothing."""

import atheris

from common import Finding, main

with atheris.instrument_imports(include=["sendgate"]):
    from sendgate.smtpwire import SyntaxProblem, parse_path_argument, valid_helo


def one_input(data: bytes) -> None:
    if not data:
        return
    keyword = "FROM:" if data[0] & 1 else "TO:"
    arg = data[1:].decode("utf-8", "surrogateescape")
    valid_helo(arg)
    try:
        path, params = parse_path_argument(arg, keyword)
    except SyntaxProblem:
        return
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise Finding(f"control character in path {path!r}")
    for p in params:
        if not p or any(c.isspace() for c in p):
            raise Finding(f"bad parameter {p!r} accepted")


def seeds() -> list[bytes]:
    args = ["\x01FROM:<alice@example.org> BODY=8BITMIME SIZE=100", "\x01FROM:<>",
            "\x00TO:<bob@example.org> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob+40example.org",
            "\x00TO:<@relay.example,@b.example:bob@example.org>", '\x00TO:<"a b>c"@example.org>',
            "\x01FROM: alice@example.org", "\x00TO:<jörg@bücher.example> SMTPUTF8"]
    return [a.encode() for a in args]


if __name__ == "__main__":
    main(one_input, seeds)
