"""The submit daemon's forwarding, against a scripted fake MTA.

A fake MTA is right for this adapter test: it makes the MTA answer what a
real one answers only under faults (a 4xx for one recipient, a refused DATA,
a connection dropped mid-message).  The real-Postfix behaviour is covered by
the end-to-end tests.  Each case is a client dialogue, the fake MTA's
answers, and the exact replies and upstream commands expected.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import tempfile

import pytest

from sendgate.policy.sender import SenderRules
from sendgate.submit_socket.protocol import SubmitSMTP
from sendgate.submit_socket.settings import SubmitSettings

LOGIN = pwd.getpwuid(os.getuid()).pw_name
ME = f"{LOGIN}@example.org"
MESSAGE = ["To: bob@example.net, carol@example.net", "Subject: s", "", "hi", "."]


class FakeMTA:
    """Answers like Postfix with XCLIENT; `answers` overrides by command prefix.
    A value of None drops the connection instead of answering."""

    def __init__(self, answers: dict[str, str | None]):
        self.answers = answers
        self.seen: list[str] = []

    async def serve(self, reader, writer, seen: list[str] | None = None):
        seen = self.seen if seen is None else seen
        writer.write(b"220 fake ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            text = line.decode().rstrip("\r\n")
            if in_data:
                if text == ".":
                    in_data = False
                    seen.append("<message>")
                    reply = self.answer("<end-of-data>", "250 2.0.0 Ok: queued as FAKE1")
                else:
                    continue
            else:
                seen.append(text)
                verb = text.split(" ", 1)[0].upper()
                default = {"EHLO": "250-fake\r\n250-XCLIENT LOGIN NAME\r\n250 SIZE 1000000",
                           "XCLIENT": "220 fake ESMTP", "DATA": "354 go ahead", "QUIT": "221 bye"}.get(verb, "250 2.0.0 Ok")
                reply = self.answer(text, default)
                if verb == "DATA" and reply and reply.startswith("354"):
                    in_data = True
            if reply is None:
                writer.close()
                return
            writer.write(reply.encode() + b"\r\n")
            try:
                await writer.drain()
            except ConnectionResetError:  # the client went without reading
                return

    def answer(self, text: str, default: str) -> str | None:
        for prefix, reply in self.answers.items():
            if text.startswith(prefix):
                return reply
        return default


async def converse(answers, commands, upstream_missing=False):
    with tempfile.TemporaryDirectory() as tmp:
        mta = FakeMTA(answers)
        mta_path, our_path = f"{tmp}/mta", f"{tmp}/submit"
        mta_server = await asyncio.start_unix_server(mta.serve, mta_path)
        if upstream_missing:
            mta_server.close()
            await mta_server.wait_closed()
            os.unlink(mta_path)
        settings = SubmitSettings(hostname="mx.example.org", upstream_path=mta_path, upstream_timeout=5,
                                  size_limit=100000, recipient_limit=3, rules=SenderRules(domain="example.org"))
        ours = await asyncio.get_running_loop().create_unix_server(lambda: SubmitSMTP(settings, 10), our_path)
        reader, writer = await asyncio.open_unix_connection(our_path)
        replies = [await read_reply(reader)]
        in_data = False
        for command in commands:
            writer.write(command.encode() + b"\r\n")
            if in_data and command != ".":
                continue  # message lines get no reply
            replies.append(await read_reply(reader))
            in_data = replies[-1].startswith("354")
        writer.close()
        ours.close()
        mta_server.close()
        return replies, mta.seen


async def read_reply(reader) -> str:
    lines = []
    while True:
        line = (await asyncio.wait_for(reader.readline(), 10)).decode().rstrip("\r\n")
        if not line:
            return " | ".join(lines + ["<closed>"])
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return " | ".join(lines)


def run(answers, commands, **kw):
    return asyncio.run(converse(answers, commands, **kw))


RCPTHDR = ["EHLO me", f"MAIL FROM:<{LOGIN}> RCPTHDR", "DATA", *MESSAGE]
PLAIN = ["EHLO me", f"MAIL FROM:<{LOGIN}>", "RCPT TO:<bob@example.net>", "DATA", *MESSAGE]


@pytest.mark.parametrize("answers,commands,want_last,want_upstream_tail", [
    pytest.param({}, RCPTHDR, "250 2.0.0 Ok: queued as FAKE1",
                 [f"MAIL FROM:<{ME}>", "RCPT TO:<bob@example.net>", "RCPT TO:<carol@example.net>", "DATA",
                  "<message>"], id="rcpthdr-replayed"),
    pytest.param({"RCPT TO:<carol": "450 4.2.0 <carol@example.net>: mailbox busy"}, RCPTHDR,
                 "451 4.3.0 <carol@example.net>: Recipient address temporarily refused, message not accepted: "
                 "4.2.0 <carol@example.net>: mailbox busy",
                 ["RCPT TO:<bob@example.net>", "RCPT TO:<carol@example.net>", "RSET"], id="rcpthdr-one-4xx-is-451"),
    pytest.param({"RCPT TO:<bob": "550 5.1.1 <bob@example.net>: unknown"}, RCPTHDR,
                 "554 5.1.0 <bob@example.net>: Recipient address rejected, message not accepted: "
                 "5.1.1 <bob@example.net>: unknown", ["RCPT TO:<bob@example.net>", "RSET"], id="rcpthdr-one-5xx-is-554"),
    pytest.param({"MAIL": "451 4.3.0 try later"}, RCPTHDR, "451 4.3.0 try later", [f"MAIL FROM:<{ME}>"],
                 id="rcpthdr-mail-refused-relayed"),
    pytest.param({"DATA": "554 5.5.1 Error: no valid recipients"}, PLAIN, "554 5.5.1 Error: no valid recipients",
                 ["RCPT TO:<bob@example.net>", "DATA"], id="data-refused-relayed"),
    pytest.param({"<end-of-data>": None}, PLAIN,
                 "451 4.4.2 Error: lost connection with the mail system; message not accepted, try again later",
                 ["DATA", "<message>"], id="mta-dies-at-end-of-data"),
    pytest.param({"RCPT": "550-5.1.1 first line\r\n550 5.1.1 second line"}, PLAIN[:3],
                 "550-5.1.1 first line | 550 5.1.1 second line", ["RCPT TO:<bob@example.net>"],
                 id="multiline-reply-relayed-whole"),
    pytest.param({}, ["EHLO me", f"MAIL FROM:<{LOGIN}> RCPTHDR", "DATA", "Subject: none", "", "x", "."],
                 "554 5.6.0 To: no recipients found in the message header", [f"EHLO mx.example.org"],
                 id="rcpthdr-nothing-forwarded-without-recipients"),
    pytest.param({}, ["EHLO me", f"MAIL FROM:<{LOGIN}>", "RCPT TO:<a@x>", "RCPT TO:<b@x>", "RCPT TO:<c@x>",
                      "RCPT TO:<d@x>"], "452 4.5.3 Error: too many recipients", ["RCPT TO:<c@x>"],
                 id="recipient-limit"),
    pytest.param({}, ["EHLO me", f"MAIL FROM:<{LOGIN}> SIZE=200000"], "552 5.3.4 Error: message file too big",
                 ["EHLO mx.example.org"], id="declared-size-over-limit"),
])
def test_forwarding(answers, commands, want_last, want_upstream_tail):
    replies, seen = run(answers, commands)
    # An MTA session that may not be kept ends with its transaction (QUIT),
    # before the client goes.
    seen = [line for line in seen if line != "QUIT"]
    assert replies[-1] == want_last
    assert seen[-len(want_upstream_tail):] == want_upstream_tail
    assert seen[:2] == [f"XCLIENT LOGIN={LOGIN}", "EHLO mx.example.org"]


def test_mta_unreachable_is_421_at_once():
    replies, seen = run({}, [], upstream_missing=True)
    assert replies == ["421 4.3.0 mx.example.org Service not available: the mail system is not reachable, "
                       "try again later"]


def test_mta_refusing_the_session_is_421():
    replies, _ = run({"XCLIENT": "550 5.7.0 Error: insufficient authorization"}, [])
    assert replies == ["421 4.3.0 mx.example.org Service not available: the mail system is not reachable, "
                       "try again later"]


def test_ehlo_advertises_what_is_safe():
    replies, _ = run({}, ["EHLO me"])
    assert replies[1] == ("250-mx.example.org | 250-PIPELINING | 250-SIZE 100000 | 250-ENHANCEDSTATUSCODES | "
                          "250 RCPTHDR")


def test_protocol_state_is_what_aiosmtpd_would_set():
    """SubmitSMTP sets up aiosmtpd's protocol state itself (without its
    per-connection introspection); it must be what SMTP.__init__ sets, but
    the AUTH mechanisms, which we never offer (smtp_AUTH answers 502)."""
    from aiosmtpd.smtp import SMTP

    from sendgate.submit_socket.protocol import _DELEGATE, READ_AHEAD

    settings = SubmitSettings(hostname="mx.example.org", upstream_path="/nowhere", upstream_timeout=5,
                              size_limit=100000, recipient_limit=3, rules=SenderRules(domain="example.org"))

    async def both():
        ours = SubmitSMTP(settings, 10)
        theirs = SubmitSMTP.__new__(SubmitSMTP)
        SMTP.__init__(theirs, _DELEGATE, hostname=settings.hostname, ident="ESMTP sendgate",
                      data_size_limit=settings.size_limit, enable_SMTPUTF8=True, decode_data=False, timeout=10)
        return vars(ours), vars(theirs)

    ours, theirs = asyncio.run(both())
    assert set(theirs) - set(ours) == set()
    assert set(ours) - set(theirs) == {"settings", "registry", "command_size_limit", "command_size_limits",
                                       "_session_timer", "_command_limit", "_idle_timer", "_lost"}
    assert set(theirs["_auth_methods"]) == {"LOGIN", "PLAIN"} and ours["_auth_methods"] == {}
    assert ours["_smtp_methods"].keys() == theirs["_smtp_methods"].keys()
    assert ours["_handle_hooks"].keys() == theirs["_handle_hooks"].keys() == {"DATA"}
    objects = {"_stream_reader", "_strong_reader", "_stream_reader_wr", "_closed", "_smtp_methods", "_handle_hooks", "_auth_methods",
               "_client_connected_cb", "loop", "_loop"}
    plain = {k for k in theirs if k not in objects and k in ours}
    assert {k: ours[k] for k in plain} == {k: theirs[k] for k in plain}
    # Our reader's limit is the command line's (READ_AHEAD); DATA raises it
    # to line_length_limit, aiosmtpd's for every line.
    assert theirs["_strong_reader"]._limit == SubmitSMTP.line_length_limit
    assert ours["_strong_reader"]._limit == READ_AHEAD
