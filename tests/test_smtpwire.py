"""SMTP syntax helpers: argument parsing, xtext, and DATA transparency."""

from __future__ import annotations

import pytest

from sendgate.smtpwire import SyntaxProblem, parse_path_argument
from sendgate.wiredata import dot_stuff, xtext


@pytest.mark.parametrize("arg,want", [
    pytest.param("FROM:<a@b>", ("a@b", []), id="plain"),
    pytest.param("from: <a@b> SIZE=10 body=8BITMIME", ("a@b", ["SIZE=10", "body=8BITMIME"]), id="params-keep-case"),
    pytest.param("FROM:<>", ("", []), id="null"),
    pytest.param("FROM:a@b", ("a@b", []), id="no-brackets"),
    pytest.param('FROM:<"a b>c"@d> RET=HDRS', ('"a b>c"@d', ["RET=HDRS"]), id="quoted-local-part"),
    pytest.param("FROM:<@r1,@r2:a@b>", ("a@b", []), id="source-route"),
    pytest.param("FROM:<a@b> RCPTHDR", ("a@b", ["RCPTHDR"]), id="rcpthdr"),
])
def test_parse_path_argument(arg, want):
    assert parse_path_argument(arg, "FROM:") == want


@pytest.mark.parametrize("arg,why", [
    pytest.param("TO:<a@b>", "expected FROM:", id="wrong-keyword"),
    pytest.param("FROM:<a@b", "unbalanced angle bracket", id="unbalanced"),
    pytest.param("FROM:<a@b>x", "text after the address", id="trailing"),
    pytest.param("FROM:<a@b> =x", "bad parameter '=x'", id="bad-param"),
    pytest.param("FROM:<a@b\x00>", "control character in command", id="nul"),
    pytest.param("FROM:<a<b>", "bad address syntax", id="nested-bracket"),
    pytest.param("FROM:", "missing address", id="empty"),
])
def test_parse_path_argument_refuses(arg, why):
    with pytest.raises(SyntaxProblem) as err:
        parse_path_argument(arg, "FROM:")
    assert str(err.value) == why


@pytest.mark.parametrize("value,want", [("alice", "alice"), ("a+b=c d", "a+2Bb+3Dc+20d"), ("é", "+C3+A9")])
def test_xtext(value, want):
    assert xtext(value) == want


@pytest.mark.parametrize("content,want", [
    pytest.param(b"a\r\nb\r\n", b"a\r\nb\r\n", id="crlf"),
    pytest.param(b"a\nb\n", b"a\r\nb\r\n", id="lf"),
    pytest.param(b"a\r\n.b\r\n.\r\n", b"a\r\n..b\r\n..\r\n", id="dots-stuffed"),
    pytest.param(b"no newline", b"no newline\r\n", id="unterminated"),
    # SMTP smuggling: none of these may leave a line holding a lone dot.
    pytest.param(b"a\n.\nMAIL FROM:<x>\n", b"a\r\n..\r\nMAIL FROM:<x>\r\n", id="smuggle-lf-dot-lf"),
    pytest.param(b"a\r.\rMAIL", b"a\r\n..\r\nMAIL\r\n", id="smuggle-cr-dot-cr"),
    pytest.param(b"a\n.\r\nMAIL", b"a\r\n..\r\nMAIL\r\n", id="smuggle-lf-dot-crlf"),
    pytest.param(b"a\r\n.\rMAIL", b"a\r\n..\r\nMAIL\r\n", id="smuggle-crlf-dot-cr"),
    pytest.param(b"", b"", id="empty"),
])
def test_dot_stuff(content, want):
    out = dot_stuff(content)
    assert out == want
    assert b"\r\n.\r\n" not in b"\r\n" + out
