"""Every reply the submit daemon makes itself carries an enhanced status code."""

from __future__ import annotations

import re

import pytest

from sendgate import replies
from sendgate.replies import with_enhanced_code


@pytest.mark.parametrize("status,want", [
    pytest.param("500 Error: bad syntax", "500 5.5.2 Error: bad syntax", id="aiosmtpd-bad-syntax"),
    pytest.param('500 Error: command "FOO" not recognized', "500 5.5.2 Error: command not recognized", id="unknown"),
    pytest.param("500 Line too long (see RFC5321 4.5.3.1.6)", "500 5.5.2 Error: line too long", id="long-line"),
    pytest.param("552 Error: Too much mail data", "552 5.3.4 Error: message file too big", id="too-big"),
    pytest.param("503 Error: send HELO first", "503 5.5.1 Error: send HELO/EHLO first", id="helo-first"),
    pytest.param("421 something new", "421 4.0.0 something new", id="fallback"),
    pytest.param("250 2.0.0 Ok", "250 2.0.0 Ok", id="already-enhanced"),
    pytest.param("220 host ESMTP", "220 host ESMTP", id="greeting-exempt"),
    pytest.param("354 End data", "354 End data", id="354-exempt"),
    pytest.param("250-host\r\n250 PIPELINING", "250-host\r\n250 PIPELINING", id="multiline-untouched"),
])
def test_with_enhanced_code(status, want):
    assert with_enhanced_code(status) == want


def test_reply_constants_are_consistent():
    for name, value in vars(replies).items():
        if isinstance(value, replies.Reply):
            assert name.startswith(f"R{value.code}_"), name
            assert re.fullmatch(rf"{str(value.code)[0]}\.\d{{1,3}}\.\d{{1,3}}", value.enhanced), name


OWN = replies.Reply.own(451, "4.3.0", "<{address}>: try again")
RELAYED = replies.Reply(550, ("5.1.1 first line", "5.1.1 second line"))
BARE = replies.Reply(250, ("",))


@pytest.mark.parametrize("reply,wire,enhanced,text,one_line", [
    pytest.param(OWN.format(address="a@b"), "451 4.3.0 <a@b>: try again", "4.3.0", "<a@b>: try again",
                 "4.3.0 <a@b>: try again", id="own"),
    pytest.param(RELAYED, "550-5.1.1 first line\r\n550 5.1.1 second line", "5.1.1", "first line 5.1.1 second line",
                 "5.1.1 first line 5.1.1 second line", id="relayed-multiline"),
    pytest.param(replies.Reply(250, ("mx.example.org",)), "250 mx.example.org", "", "mx.example.org",
                 "mx.example.org", id="relayed-without-enhanced-code"),
    pytest.param(BARE, "250 ", "", "", "", id="code-alone"),
])
def test_reply_forms(reply, wire, enhanced, text, one_line):
    assert (str(reply), reply.enhanced, reply.text, reply.one_line) == (wire, enhanced, text, one_line)


@pytest.mark.parametrize("code,positive,temporary", [
    pytest.param(199, False, False, id="1yz"),
    pytest.param(250, True, False, id="2yz"),
    pytest.param(354, True, False, id="3yz"),
    pytest.param(421, False, True, id="4yz"),
    pytest.param(554, False, False, id="5yz"),
])
def test_reply_classes(code, positive, temporary):
    reply = replies.Reply(code, ("x",))
    assert (reply.positive, reply.temporary) == (positive, temporary)


@pytest.mark.parametrize("value,limit,want", [
    pytest.param("a@b", 10, "a@b", id="as-is"),
    pytest.param("abcdef", 3, "abc...", id="cut"),
    pytest.param("\u00e9\udcff\r\n", 10, "\\xe9\\udcff\\r\\n", id="ascii"),
])
def test_shown(value, limit, want):
    assert replies.shown(value, limit) == want
