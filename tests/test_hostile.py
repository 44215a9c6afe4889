"""Hostile input on the submit socket, through the real stack: the reply is
clear, nothing is smuggled past us, the daemon stays up and small."""

from __future__ import annotations

import pathlib
import re
import socket
import threading

import pytest

from conftest import delivered


@pytest.fixture(scope="session")
def stack(postfix_stack):
    """Postfix only: this file tests Postfix's own mechanisms or wording."""
    return postfix_stack


SENDER = b"MAIL FROM:<root@example.org>"


class Raw:
    """A byte-exact SMTP client (the tests run as root: login root)."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return " | ".join(lines + ["<closed>"])
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if len(lines[-1]) < 4 or lines[-1][3] != "-":
                return " | ".join(lines)

    def say(self, data: bytes) -> str:
        self.send(data + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(stack):
    client = Raw(stack.socket)
    assert client.greeting.startswith("220 ")
    assert client.say(b"EHLO hostile.example").startswith("250-")
    yield client
    client.close()


def submitd_rss_kib(stack) -> int:
    pid = int((stack.dir / "run/submitd.pid").read_text())
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


SMUGGLING = [
    pytest.param(b"\n.\n", id="lf-dot-lf"),
    pytest.param(b"\r.\r", id="cr-dot-cr"),
    pytest.param(b"\n.\r\n", id="lf-dot-crlf"),
    pytest.param(b"\r\n.\r", id="crlf-dot-cr"),
    pytest.param(b"\r\n.\n", id="crlf-dot-lf"),
    pytest.param(b"\r\n\x00.\r\n", id="crlf-nul-dot-crlf"),
]


@pytest.mark.parametrize("sequence", SMUGGLING)
def test_smuggling_never_makes_a_second_message(stack, raw, request, sequence):
    tag = request.node.callspec.id
    assert raw.say(SENDER).startswith("250 ")
    assert raw.say(b"RCPT TO:<bob@example.net>").startswith("250 ")
    assert raw.say(b"DATA").startswith("354 ")
    raw.send(b"Subject: smuggle-" + tag.encode() + b"\r\n\r\nhello" + sequence
             + b"MAIL FROM:<root@example.org>\r\nRCPT TO:<victim-" + tag.encode() + b"@example.net>\r\nDATA\r\n"
             + b"Subject: smuggled\r\n\r\nevil\r\n.\r\n")
    final = raw.reply()
    assert raw.say(b"QUIT") == "221 2.0.0 Bye"
    if b"\x00" in sequence:
        # Not a line break either; the NUL makes the whole message unacceptable.
        assert final == "554 5.6.0 Error: message contains a NUL character, not accepted"
        return
    assert re.match(r"250 2\.0\.0 Ok: \d+ bytes queued as ", final), final
    copies = delivered(stack, f"victim-{tag}")
    assert [c.one("X-Original-To") for c in copies] == ["bob@example.net"]
    assert b"\nMAIL FROM:<root@example.org>\n" in copies[0].raw


def test_nul_in_body_is_refused_whole(stack, raw):
    assert raw.say(SENDER).startswith("250 ")
    assert raw.say(b"RCPT TO:<bob@example.net>").startswith("250 ")
    assert raw.say(b"DATA").startswith("354 ")
    assert raw.say(b"Subject: nul-body\r\n\r\nab\x00cd\r\n.") == \
        "554 5.6.0 Error: message contains a NUL character, not accepted"
    assert raw.say(b"RSET") == "250 2.0.0 Ok"


@pytest.mark.parametrize("data,want", [
    pytest.param(b"Subject: big\r\n" + b"X-Big: " + b"\r\n a".join([b"x" * 1000] * 10500) + b"\r\n\r\nbody\r\n.",
                 "552 5.3.4 Error: message file too big", id="10mb-header"),
    pytest.param(b"Subject: long\r\n\r\n" + b"y" * (1 << 20) + b"\r\n.", "500 5.5.2 Error: line too long",
                 id="1mb-line"),
])
def test_oversized_data_is_refused_and_the_session_goes_on(stack, raw, data, want):
    assert raw.say(SENDER).startswith("250 ")
    assert raw.say(b"RCPT TO:<bob@example.net>").startswith("250 ")
    assert raw.say(b"DATA").startswith("354 ")
    assert raw.say(data) == want
    assert raw.say(SENDER).startswith("250 "), "the MTA transaction was not reset"
    assert raw.say(b"RSET") == "250 2.0.0 Ok"
    assert submitd_rss_kib(stack) < 256 * 1024


def test_hundred_thousand_recipients(stack, raw):
    assert raw.say(SENDER).startswith("250 ")
    lines = b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(100_000))
    writer = threading.Thread(target=raw.send, args=(lines,))
    writer.start()
    replies = [raw.reply() for _ in range(100_000)]
    writer.join()
    assert replies[:1000] == ["250 2.1.5 Ok"] * 1000
    assert set(replies[1000:]) == {"452 4.5.3 Error: too many recipients"}
    assert raw.say(b"RSET") == "250 2.0.0 Ok"
    assert submitd_rss_kib(stack) < 256 * 1024


@pytest.mark.parametrize("command,want", [
    pytest.param(b"EHLO a\x01b", "501 5.5.4 Syntax: EHLO hostname", id="ehlo-control-character"),
    pytest.param(b"HELO \xff\xfe", "501 5.5.4 Syntax: HELO hostname", id="helo-not-utf8"),
    pytest.param(b"MAIL FROM:<\xff\xfe@example.org>", "501 5.1.7 Bad sender address syntax", id="sender-not-utf8"),
    pytest.param(b"MAIL FROM:<root@example.org\x00>", "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]",
                 id="sender-nul"),
    pytest.param(b"RCPT TO:<a@b>", "503 5.5.1 Error: need MAIL command", id="rcpt-first"),
    pytest.param(b"DATA", "503 5.5.1 Error: need MAIL command", id="data-first"),
    pytest.param(b"X" * 5000, "500 5.5.2 Error: line too long", id="long-command"),
    pytest.param(b"\x80\x81\x82 garbage", "500 5.5.2 Error: bad syntax", id="binary-command"),
])
def test_bad_commands(raw, command, want):
    assert raw.say(command) == want


def test_recipient_not_utf8(raw):
    assert raw.say(SENDER).startswith("250 ")
    assert raw.say(b"RCPT TO:<\xff@example.net>") == "501 5.1.3 Bad recipient address syntax"


def test_pipelined_garbage_ends_the_session(raw):
    raw.send(b"".join(b"GARBAGE%d \x01\x02\r\n" % i for i in range(50)))
    replies = []
    while not (reply := raw.reply()).endswith("<closed>"):
        replies.append(reply)
    assert replies[:4] == ["500 5.5.2 Error: command not recognized"] * 4
    assert replies[4] == "502 5.5.1 Too many unrecognized commands, goodbye."


def test_daemon_survives_all_of_it(stack):
    client = Raw(stack.socket)
    assert client.greeting.startswith("220 ")
    assert client.say(b"QUIT") == "221 2.0.0 Bye"
    assert submitd_rss_kib(stack) < 256 * 1024
