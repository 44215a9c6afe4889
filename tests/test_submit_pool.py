"""The submit daemon's cache of MTA sessions (UpstreamPool), against the
scripted fake MTA of test_submit_adapter.

Each case runs client-side steps on one pool and says how the last session
was had ("new", "kept", "switched") and what the fake MTA saw on each of
its connections.  Whether a kept session really speaks for the right login
in Postfix (XCLIENT between sessions, the milter's view) is
tests/test_upstream_cache.py, on a real stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import tempfile

import pytest

from sendgate.submit_socket.pool import CacheLimits, Route, UpstreamPool
from test_submit_adapter import LOGIN, FakeMTA, read_reply

EHLO = "EHLO mx.example.org"


CONNECTION: contextvars.ContextVar[int] = contextvars.ContextVar("connection")


class CountingMTA(FakeMTA):
    """The fake MTA, with what it saw kept per connection, and answers that
    can be changed for one connection later (`broken[index]`), as when
    Postfix times a kept session out."""

    def __init__(self, answers):
        super().__init__(answers)
        self.connections: list[list[str]] = []
        self.broken: dict[int, dict[str, str | None]] = {}

    async def serve(self, reader, writer):
        seen: list[str] = []
        self.connections.append(seen)
        CONNECTION.set(len(self.connections) - 1)  # each connection is a task of its own
        await super().serve(reader, writer, seen)

    def answer(self, text: str, default: str) -> str | None:
        for prefix, reply in self.broken.get(CONNECTION.get(), {}).items():
            if text.startswith(prefix):
                return reply
        return super().answer(text, default)


async def deliver(up):
    for line in ("MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>", "DATA"):
        await up.command(line)
    await up.message(b"Subject: x\r\n\r\nx\r\n")


@contextlib.asynccontextmanager
async def fake_mta(answers=None):
    """A CountingMTA listening on a unix socket: (the MTA, its path)."""
    with tempfile.TemporaryDirectory() as tmp:
        mta = CountingMTA(answers or {})
        server = await asyncio.start_unix_server(mta.serve, f"{tmp}/mta")
        try:
            yield mta, f"{tmp}/mta"
        finally:
            await asyncio.sleep(0.05)  # let the fake MTA read the last QUITs
            server.close()


async def scenario(steps, answers=None, limits=CacheLimits(), protocol="xclient"):
    """steps: ("get", login) takes a session, ("deliver",) sends a message on
    it, ("command", line) sends one command, ("send", line) writes without
    reading the reply, ("put",) gives it back, ("wait", seconds), ("flush",)
    ends the kept sessions (SIGHUP), ("close",) closes the pool.  Returns how each "get" had its session and the MTA's
    view per connection."""
    async with fake_mta(answers) as (mta, path):
        pool, route, up, hows = UpstreamPool(), Route(path, 5, "mx.example.org", protocol), None, []
        for step, *arg in steps:
            if step == "get":
                up, how = await pool.acquire(route, arg[0])
                hows.append(how)
            elif step == "deliver":
                await deliver(up)
            elif step == "command":
                await up.command(arg[0])
            elif step == "send":
                await up.send(arg[0].encode() + b"\r\n")
            elif step == "put":
                pool.release(up, limits)
            elif step == "wait":
                await asyncio.sleep(arg[0])
            elif step == "flush":
                pool.flush()
            elif step == "close":
                pool.close()
    return hows, mta.connections


def run(*args, **kw):
    return asyncio.run(scenario(*args, **kw))


ALICE = ["XCLIENT LOGIN=alice", EHLO]
UPSTREAM_HELLO = [f"XCLIENT LOGIN={LOGIN}", EHLO]
MESSAGE = ["MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.net>", "DATA", "<message>"]


@pytest.mark.parametrize("steps,answers,limits,want_hows,want_connections", [
    pytest.param([("get", "alice"), ("deliver",), ("put",), ("get", "alice"), ("deliver",)], {}, CacheLimits(),
                 ["new", "kept"], [ALICE + MESSAGE + MESSAGE], id="same-login-takes-it-as-it-is"),
    pytest.param([("get", "alice"), ("deliver",), ("put",), ("get", "bob"), ("deliver",)], {}, CacheLimits(),
                 ["new", "switched"], [ALICE + MESSAGE + ["XCLIENT LOGIN=bob", EHLO] + MESSAGE],
                 id="another-login-gets-it-after-xclient"),
    pytest.param([("get", "alice"), ("put",), ("get", "bob"), ("put",), ("get", "alice")], {}, CacheLimits(),
                 ["new", "switched", "switched"],
                 [ALICE + ["XCLIENT LOGIN=bob", EHLO, "XCLIENT LOGIN=alice", EHLO]],
                 id="switched-back-with-xclient-again"),
    pytest.param([("get", "alice"), ("command", "RCPT TO:<x@example.net>"), ("put",), ("get", "alice")],
                 {"RCPT": "550 5.1.1 unknown"}, CacheLimits(), ["new", "new"],
                 [ALICE + ["RCPT TO:<x@example.net>", "QUIT"], ALICE], id="not-kept-after-a-refusal"),
    pytest.param([("get", "alice"), ("send", "NOOP"), ("put",), ("get", "alice")], {}, CacheLimits(),
                 ["new", "new"], [ALICE + ["NOOP"], ALICE], id="not-kept-with-a-reply-unread"),
    pytest.param([("get", "alice"), ("deliver",), ("put",), ("get", "alice")], {}, CacheLimits(reuse_count=1),
                 ["new", "new"], [ALICE + MESSAGE + ["QUIT"], ALICE], id="reuse-count-limit"),
    pytest.param([("get", "alice"), ("put",), ("wait", 0.15), ("get", "alice")], {},
                 CacheLimits(idle_time=0.05), ["new", "new"], [ALICE + ["QUIT"], ALICE], id="idle-time-limit"),
    pytest.param([("get", "alice"), ("put",), ("get", "alice")], {}, CacheLimits(size=0), ["new", "new"],
                 [ALICE + ["QUIT"], ALICE], id="cache-size-0-keeps-nothing"),
    pytest.param([("get", "alice"), ("close",), ("put",), ("get", "alice")], {}, CacheLimits(), ["new", "new"],
                 [ALICE + ["QUIT"], ALICE], id="nothing-kept-once-closed"),
    pytest.param([("get", "alice"), ("put",), ("close",)], {}, CacheLimits(), ["new"], [ALICE + ["QUIT"]],
                 id="close-ends-kept-sessions"),
    pytest.param([("get", "alice"), ("put",), ("flush",), ("get", "alice")], {}, CacheLimits(), ["new", "new"],
                 [ALICE + ["QUIT"], ALICE], id="flush-ends-kept-sessions"),
    pytest.param([("get", "alice"), ("flush",), ("put",), ("get", "alice"), ("put",), ("get", "alice")], {},
                 CacheLimits(), ["new", "new", "kept"], [ALICE + ["QUIT"], ALICE],
                 id="flush-ends-sessions-in-use-when-they-come-back"),
])
def test_pool(steps, answers, limits, want_hows, want_connections):
    hows, connections = run(steps, answers, limits)
    assert hows == want_hows
    assert connections == want_connections


def test_pool_full_ends_the_oldest():
    steps = [("get", "a"), ("get", "b"), ("get", "c")]
    async def go():
        async with fake_mta() as (mta, path):
            pool, route = UpstreamPool(), Route(path, 5, "mx.example.org")
            ups = [(await pool.acquire(route, login))[0] for _, login in steps]
            for up in ups:
                pool.release(up, CacheLimits(size=2))
        return [u.login for u in pool.idle], mta.connections
    kept, connections = asyncio.run(go())
    assert kept == ["b", "c"]
    assert [c[-1] for c in connections] == ["QUIT", EHLO, EHLO]


def test_mta_hanging_up_while_kept_is_not_reused():
    async def go():
        async with fake_mta() as (mta, path):
            pool, route = UpstreamPool(), Route(path, 5, "mx.example.org")
            up, _ = await pool.acquire(route, "alice")
            pool.release(up, CacheLimits())
            # Postfix's smtpd_timeout: a 421, then the connection closes.
            up.reader.feed_data(b"421 4.4.2 mx Error: timeout exceeded\r\n")
            _, how = await pool.acquire(route, "alice")
        return how, len(mta.connections)
    assert asyncio.run(go()) == ("new", 2)


def test_header_protocol_ignores_the_login():
    hows, connections = run([("get", "alice"), ("deliver",), ("put",), ("get", "bob"), ("deliver",)],
                            protocol="header")
    assert hows == ["new", "kept"]
    assert connections == [[EHLO] + MESSAGE + MESSAGE]


def test_another_route_does_not_take_it():
    async def go():
        async with fake_mta() as (_, path):
            pool = UpstreamPool()
            up, _ = await pool.acquire(Route(path, 5, "mx.example.org"), "alice")
            pool.release(up, CacheLimits())
            _, how = await pool.acquire(Route(path, 5, "other.example.org"), "alice")
        return how
    assert asyncio.run(go()) == "new"


async def client_sessions(dialogues, breaks=None):
    """Client sessions one after another through one submit server (one
    pool); a dialogue ending in None disconnects without QUIT.  breaks:
    {session index: (connection index, answers)} changes the fake MTA's
    answers on one connection before that session.  Returns the fake MTA's
    view per connection and each session's replies."""
    from sendgate.policy.sender import SenderRules
    from sendgate.submit_socket.protocol import SubmitSMTP
    from sendgate.submit_socket.registry import Registry
    from sendgate.submit_socket.settings import SubmitSettings

    replies = []
    async with fake_mta() as (mta, path):
        settings = SubmitSettings(hostname="mx.example.org", upstream_path=path, upstream_timeout=5,
                                  size_limit=100000, recipient_limit=3, rules=SenderRules(domain="example.org"))
        registry = Registry()
        ours = await asyncio.get_running_loop().create_unix_server(
            lambda: SubmitSMTP(settings, 10, registry), path + "-submit")
        for n, dialogue in enumerate(dialogues):
            if n in (breaks or {}):
                connection, answers = breaks[n]
                mta.broken[connection] = answers
            reader, writer = await asyncio.open_unix_connection(path + "-submit")
            got = [await read_reply(reader)]
            for command in dialogue:
                if command is None:
                    break
                writer.write(command.encode() + b"\r\n")
                if not command.startswith(("Subject:", "To:", "x")) and command != "":
                    got.append(await read_reply(reader))
            replies.append(got)
            writer.close()
            await asyncio.sleep(0.05)  # the server sees the end of the session
        ours.close()
    return mta.connections, replies


ME_FROM = f"MAIL FROM:<{LOGIN}>"
SENT = ["EHLO me", ME_FROM, "RCPT TO:<bob@example.net>", "DATA", "Subject: s", "", "x", "."]
UP_SENT = [f"MAIL FROM:<{LOGIN}@example.org>", "RCPT TO:<bob@example.net>", "DATA", "<message>"]


@pytest.mark.parametrize("first,want", [
    pytest.param(SENT + ["QUIT"], [UPSTREAM_HELLO + UP_SENT + UP_SENT], id="message-then-quit-is-kept"),
    pytest.param(SENT + [None], [UPSTREAM_HELLO + UP_SENT + UP_SENT], id="message-then-hang-up-is-kept"),
    pytest.param(["EHLO me", ME_FROM, "RCPT TO:<bob@example.net>", "RSET", "QUIT"],
                 [UPSTREAM_HELLO + UP_SENT[:2] + ["RSET"] + UP_SENT], id="rset-then-quit-is-kept"),
    pytest.param(["EHLO me", ME_FROM, "RCPT TO:<bob@example.net>", "QUIT"],
                 [UPSTREAM_HELLO + UP_SENT[:2] + ["QUIT"], UPSTREAM_HELLO + UP_SENT],
                 id="open-transaction-is-not-kept"),
    pytest.param(["EHLO me", f"MAIL FROM:<{LOGIN}> RCPTHDR", "QUIT"],
                 [UPSTREAM_HELLO + UP_SENT], id="open-rcpthdr-transaction-holds-no-mta-session"),
])
def test_which_client_sessions_leave_their_mta_session_kept(first, want):
    connections, _ = asyncio.run(client_sessions([first, SENT + ["QUIT"]]))
    assert connections == want


RCPTHDR_SENT = ["EHLO me", f"MAIL FROM:<{LOGIN}> RCPTHDR", "DATA", "To: bob@example.net", "Subject: s", "", "x", ".",
                "QUIT"]
MAIL_UP = UP_SENT[0]


@pytest.mark.parametrize("second,answers,want_second_connection", [
    pytest.param(SENT + ["QUIT"], {"MAIL": "421 4.4.2 mx Error: timeout exceeded"}, [MAIL_UP],
                 id="timed-out-421"),
    pytest.param(SENT + ["QUIT"], {"MAIL": "451 4.7.1 Service unavailable - try again later"}, [MAIL_UP],
                 id="milter-connection-dead-451"),
    pytest.param(SENT + ["QUIT"], {"MAIL": None}, [MAIL_UP], id="closed"),
    pytest.param(RCPTHDR_SENT, {"MAIL": "421 4.4.2 mx Error: timeout exceeded"}, [MAIL_UP], id="rcpthdr-replay"),
])
def test_kept_session_that_fails_its_first_command_is_replaced(second, answers, want_second_connection):
    """The client never hears of it: MAIL goes again on a new MTA session."""
    connections, replies = asyncio.run(client_sessions([SENT + ["QUIT"], second], breaks={1: (0, answers)}))
    assert connections[0] == UPSTREAM_HELLO + UP_SENT + want_second_connection
    assert connections[1] == UPSTREAM_HELLO + UP_SENT
    assert replies[1][-2:] == ["250 2.0.0 Ok: queued as FAKE1", "221 2.0.0 Bye"]


def test_new_session_refusing_mail_is_relayed_not_retried():
    connections, replies = asyncio.run(client_sessions(
        [SENT + ["QUIT"]], breaks={0: (0, {"MAIL": "451 4.7.1 Service unavailable - try again later"})}))
    assert connections == [UPSTREAM_HELLO + [MAIL_UP, "QUIT"]]
    assert replies[0][2] == "451 4.7.1 Service unavailable - try again later"
