"""Limits, timeouts and shutdown of the submit daemon, with exact replies.

The daemon runs in-process on a temporary socket in front of the scripted
fake MTA of test_submit_adapter; the end-to-end tests run the real thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pwd
import tempfile

import pytest

from sendgate.policy.admission import AdmissionRules, Peer, may_submit, rate_refusal, session_refusal
from sendgate.policy.sender import SenderRules
from sendgate.submit_socket.protocol import SubmitSMTP
from sendgate.submit_socket.registry import Registry
from sendgate.submit_socket.settings import SubmitSettings
from test_submit_adapter import FakeMTA, read_reply

LOGIN = pwd.getpwuid(os.getuid()).pw_name
HOST = "mx.example.org"
BASE = SubmitSettings(hostname=HOST, upstream_path="", upstream_timeout=5, size_limit=100000,
                      recipient_limit=10, rules=SenderRules(domain="example.org"))


# --- the pure decisions -------------------------------------------------------

ALICE = Peer(1000, "alice", frozenset({"alice", "staff"}))


@pytest.mark.parametrize("peer,rules,want", [
    pytest.param(ALICE, AdmissionRules(), None, id="default-allows"),
    pytest.param(Peer(65534, "nobody", frozenset({"nogroup"})), AdmissionRules(),
                 ("554 5.7.1 Error: user nobody is not allowed to submit mail", "submit_deny_users"),
                 id="nobody-denied-by-default"),
    pytest.param(Peer(4242, "", frozenset()), AdmissionRules(),
                 ("554 5.7.1 Error: user uid 4242 is not allowed to submit mail", "no login name"), id="no-login"),
    pytest.param(ALICE, AdmissionRules(deny_groups=frozenset({"staff"})),
                 ("554 5.7.1 Error: user alice is not allowed to submit mail", "submit_deny_groups"), id="deny-group"),
    pytest.param(ALICE, AdmissionRules(allow_users=frozenset({"bob"})),
                 ("554 5.7.1 Error: user alice is not allowed to submit mail",
                  "submit_allow_users/submit_allow_groups"), id="not-in-allow-list"),
    pytest.param(ALICE, AdmissionRules(allow_groups=frozenset({"staff"})), None, id="allowed-by-group"),
    pytest.param(ALICE, AdmissionRules(allow_users=frozenset({"alice"}), deny_users=frozenset({"alice"})),
                 ("554 5.7.1 Error: user alice is not allowed to submit mail", "submit_deny_users"),
                 id="deny-beats-allow"),
])
def test_may_submit(peer, rules, want):
    got = may_submit(peer, rules)
    assert (None if got is None else (str(got[0]), got[1])) == want


@pytest.mark.parametrize("of_uid,total,want", [
    pytest.param(1, 5, None, id="under-limits"),
    pytest.param(2, 5, "421 4.7.0 mx Error: too many sessions from uid 1000, try again later", id="per-uid"),
    pytest.param(0, 10, "421 4.7.0 mx Error: too many sessions, try again later", id="total"),
])
def test_session_refusal(of_uid, total, want):
    got = session_refusal(ALICE, AdmissionRules(sessions_per_uid=2, session_limit=10), of_uid, total, "mx")
    assert (None if got is None else str(got[0])) == want


@pytest.mark.parametrize("recent,want", [
    pytest.param([], None, id="none-yet"),
    pytest.param([40.0, 50.0], "450 4.7.1 Error: too many messages from uid 1000 in 60 seconds, try again later",
                 id="two-in-window"),
    pytest.param([10.0, 50.0], None, id="one-expired"),
])
def test_rate_refusal(recent, want):
    got = rate_refusal(ALICE, AdmissionRules(message_rate_limit=2, rate_window=60), recent, now=99.0)
    assert (None if got is None else str(got)) == want


def test_rate_limit_off_by_default():
    assert rate_refusal(ALICE, AdmissionRules(), [1.0] * 1000, now=2.0) is None


# --- the daemon ------------------------------------------------------------------

class Client:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    async def say(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        return await read_reply(self.reader)


@contextlib.asynccontextmanager
async def daemon(answers=None, timeout=10, **overrides):
    with tempfile.TemporaryDirectory() as tmp:
        mta = FakeMTA(answers or {})
        mta_server = await asyncio.start_unix_server(mta.serve, f"{tmp}/mta")
        settings = dataclasses.replace(BASE, upstream_path=f"{tmp}/mta", **overrides)
        registry = Registry()
        server = await asyncio.get_running_loop().create_unix_server(
            lambda: SubmitSMTP(settings, timeout, registry), f"{tmp}/submit")

        async def connect() -> tuple[Client, str]:
            reader, writer = await asyncio.open_unix_connection(f"{tmp}/submit")
            return Client(reader, writer), await read_reply(reader)

        try:
            yield connect, registry
        finally:
            server.close()
            mta_server.close()


def run(coro):
    return asyncio.run(coro)


def test_sessions_per_uid():
    async def scenario():
        async with daemon(admission=AdmissionRules(sessions_per_uid=2)) as (connect, registry):
            first, second = await connect(), await connect()
            third = await connect()
            await first[0].say("QUIT")
            await asyncio.sleep(0.05)
            fourth = await connect()
            return [first[1], second[1], third[1], fourth[1]], len(registry.sessions)
    greetings, open_sessions = run(scenario())
    assert greetings[:2] == [f"220 {HOST} ESMTP sendgate"] * 2
    assert greetings[2] == f"421 4.7.0 {HOST} Error: too many sessions from uid {os.getuid()}, try again later"
    assert greetings[3] == f"220 {HOST} ESMTP sendgate"
    assert open_sessions == 2


def test_total_session_limit():
    async def scenario():
        async with daemon(admission=AdmissionRules(session_limit=1)) as (connect, _):
            await connect()
            return (await connect())[1]
    assert run(scenario()) == f"421 4.7.0 {HOST} Error: too many sessions, try again later"


def test_message_rate_limit():
    async def scenario():
        async with daemon(admission=AdmissionRules(message_rate_limit=1, rate_window=3600)) as (connect, _):
            client, _ = await connect()
            await client.say("EHLO me")
            replies = []
            for _ in range(2):
                replies.append(await client.say(f"MAIL FROM:<{LOGIN}>"))
                if replies[-1].startswith("250"):
                    await client.say("RCPT TO:<bob@example.net>")
                    await client.say("DATA")
                    replies.append(await client.say("Subject: x\r\n\r\nhi\r\n."))
            return replies
    assert run(scenario()) == ["250 2.0.0 Ok", "250 2.0.0 Ok: queued as FAKE1",
                               f"450 4.7.1 Error: too many messages from uid {os.getuid()} in 3600 seconds, "
                               "try again later"]


def test_command_length_limit():
    async def scenario():
        async with daemon(command_length_limit=100) as (connect, _):
            client, _ = await connect()
            await client.say("EHLO me")
            return await client.say("RCPT TO:<" + "a" * 200 + "@example.net>"), await client.say("NOOP")
    assert run(scenario()) == ("500 5.5.2 Error: line too long", "250 2.0.0 Ok")


def test_session_time_limit():
    async def scenario():
        async with daemon(session_timeout=0.3) as (connect, registry):
            client, _ = await connect()
            await client.say("EHLO me")
            await asyncio.sleep(0.6)
            return await read_reply(client.reader), await read_reply(client.reader), len(registry.sessions)
    assert run(scenario()) == (f"421 4.4.2 {HOST} Error: session time limit exceeded", "<closed>", 0)


@pytest.mark.parametrize("commands", [
    pytest.param(["EHLO me"], id="between-transactions"),
    pytest.param(["EHLO me", f"MAIL FROM:<{LOGIN}>", "RCPT TO:<bob@example.net>", "DATA"], id="in-data"),
])
def test_idle_client_gets_421_before_the_close(commands):
    """As Postfix's smtpd: a client silent past submit_timeout is told so."""
    async def scenario():
        async with daemon(timeout=0.3) as (connect, registry):
            client, _ = await connect()
            for command in commands:
                await client.say(command)
            return await read_reply(client.reader), await read_reply(client.reader), len(registry.sessions)
    assert run(scenario()) == (f"421 4.4.2 {HOST} Error: timeout exceeded", "<closed>", 0)


def test_slow_mta_times_out_without_leaking_the_session():
    reply, sessions = run(_slow_scenario())
    assert reply == "451 4.4.2 Error: lost connection with the mail system; message not accepted, try again later"
    assert sessions == 0


async def _slow_scenario():
    with tempfile.TemporaryDirectory() as tmp:
        async def silent_mta(reader, writer):
            writer.write(b"220 slow\r\n")
            while line := await reader.readline():
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb == b"EHLO":
                    writer.write(b"250-slow\r\n250 XCLIENT LOGIN\r\n")
                elif verb == b"XCLIENT":
                    writer.write(b"220 slow\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                elif line == b".\r\n":
                    await asyncio.sleep(3600)  # never answers the end of data
                elif verb in (b"MAIL", b"RCPT"):
                    writer.write(b"250 2.0.0 Ok\r\n")

        mta = await asyncio.start_unix_server(silent_mta, f"{tmp}/mta")
        settings = dataclasses.replace(BASE, upstream_path=f"{tmp}/mta", upstream_timeout=0.3)
        registry = Registry()
        server = await asyncio.get_running_loop().create_unix_server(
            lambda: SubmitSMTP(settings, 10, registry), f"{tmp}/submit")
        reader, writer = await asyncio.open_unix_connection(f"{tmp}/submit")
        client = Client(reader, writer)
        await read_reply(reader)
        for line in ("EHLO me", f"MAIL FROM:<{LOGIN}>", "RCPT TO:<bob@example.net>", "DATA"):
            await client.say(line)
        reply = await client.say("Subject: x\r\n\r\nhi\r\n.")
        await asyncio.sleep(0.1)
        server.close()
        mta.close()
        return reply, len(registry.sessions)


def test_shutdown_ends_idle_sessions_and_lets_busy_ones_finish():
    async def scenario():
        async with daemon() as (connect, registry):
            idle, _ = await connect()
            await idle.say("EHLO me")
            busy, _ = await connect()
            await busy.say("EHLO me")
            await busy.say(f"MAIL FROM:<{LOGIN}>")
            await busy.say("RCPT TO:<bob@example.net>")
            await busy.say("DATA")
            registry.shut_down()
            idle_reply = [await read_reply(idle.reader), await read_reply(idle.reader)]
            late, late_greeting = await connect()
            late_greeting = [late_greeting, await read_reply(late.reader)]
            busy_reply = await busy.say("Subject: x\r\n\r\nlast one\r\n.")
            after = [await read_reply(busy.reader), await read_reply(busy.reader)]
            await asyncio.sleep(0.05)
            return idle_reply, late_greeting, busy_reply, after, len(registry.sessions)
    idle_reply, late_greeting, busy_reply, after, left = run(scenario())
    shutting_down = [f"421 4.3.2 {HOST} Service shutting down, try again later", "<closed>"]
    assert idle_reply == shutting_down
    assert late_greeting == shutting_down
    assert busy_reply == "250 2.0.0 Ok: queued as FAKE1"
    assert after == shutting_down
    assert left == 0
