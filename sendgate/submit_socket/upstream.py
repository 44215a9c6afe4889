"""The MTA side of a submit session: a small SMTP client over a unix socket
(the pool that keeps its sessions open from one client session to the next
is pool.py).

Lock-step, one reply per command, replies kept whole (code and every line) so
they can be relayed to our client exactly as the MTA wrote them.  Each read is
bounded in time (submit_upstream_timeout), line length and line count.  The
time bounds use asyncio.timeout(), not wait_for(), which would wrap every
read in a task of its own (bench/: a tenth of the daemon's time per session).
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass

from sendgate.replies import Reply
# Message data goes upstream dot-stuffed in pieces of PIECE_SIZE bytes or so;
# a message of one piece may go as BDAT.
from sendgate.wiredata import PIECE_SIZE, crlf_lines, data_pieces, xtext

MAX_REPLY_LINE = 4096
# A message that starts with a header field (RFC 5322 field name, colon).
HEADER_FIELD = re.compile(rb"[!-9;-~]+:")
MAX_REPLY_LINES = 100


async def _connect_unix(path: str) -> socket.socket:
    """Connect, waiting while the MTA's listen queue is full.

    A unix-domain connect() that finds the listener's backlog full fails
    with EAGAIN at once; asyncio would take that for "in progress" and hand
    back a socket that never connected.  So connect here and retry: a
    busy MTA (all its smtpd processes taken) is a wait, not a failure.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    delay = 0.01
    try:
        while True:
            try:
                sock.connect(path)
                return sock
            except BlockingIOError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
    except BaseException:
        sock.close()
        raise


class UpstreamError(Exception):
    """The MTA connection failed, closed, timed out, or spoke nonsense."""


@dataclass(frozen=True)
class Capabilities:
    size: int | None = None     # None: the MTA advertised no limit
    eightbit: bool = False
    smtputf8: bool = False
    dsn: bool = False
    chunking: bool = False

    @classmethod
    def from_ehlo(cls, reply: Reply) -> "Capabilities":
        size, eightbit, smtputf8, dsn, chunking = None, False, False, False, False
        for line in reply.lines[1:]:
            word, _, rest = line.partition(" ")
            word = word.upper()
            if word == "SIZE" and rest.strip().isdigit():
                size = int(rest) or None
            elif word == "8BITMIME":
                eightbit = True
            elif word == "SMTPUTF8":
                smtputf8 = True
            elif word == "DSN":
                dsn = True
            elif word == "CHUNKING":
                chunking = True
        return cls(size, eightbit, smtputf8, dsn, chunking)


class Upstream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float):
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.capabilities = Capabilities()
        # For the pool (pool.py): the login the MTA session was given
        # (XCLIENT), the pool.Route it was opened on, messages it has
        # carried, when it was opened, last kept and until when it may wait unused.
        self.login: str | None = None
        self.route: object = None
        self.messages = self.generation = 0
        self.opened = self.expires = self.released = 0.0
        # Reusable only while every exchange has finished with a reply below
        # 400: an unread reply, an error or a refusal ends it with its client
        # (Postfix counts errors per session and slows down after ten).
        self._pending = False
        self._spoiled = False
        # Kept and given as it is: its first command may find that the MTA
        # dropped it while it waited (forward.Forwarder.mail retries).
        self.untried = False

    @classmethod
    async def connect(cls, path: str, timeout: float) -> "Upstream":
        try:
            sock = await asyncio.wait_for(_connect_unix(path), timeout)
        except asyncio.TimeoutError:
            raise UpstreamError(f"connect to {path}: timed out (the mail system is busy)") from None
        except OSError as err:
            raise UpstreamError(f"connect to {path}: {err.strerror or err}") from None
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_REPLY_LINE)
        return cls(reader, writer, timeout)

    @property
    def reusable(self) -> bool:
        return not (self._pending or self._spoiled)

    async def reply(self) -> Reply:
        self._pending = True
        try:
            reply = await self._read_reply()
        except BaseException:
            self._spoiled = True
            raise
        self._pending = False
        self._spoiled |= reply.code >= 400
        return reply

    async def _read_reply(self) -> Reply:
        lines: list[str] = []
        code = None
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    raw = await self.reader.readuntil(b"\n")
                    line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                    if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
                        raise UpstreamError(f"malformed reply {line[:80]!r}")
                    if code is not None and int(line[:3]) != code:
                        raise UpstreamError("reply code changed within a multi-line reply")
                    code = int(line[:3])
                    lines.append(line[4:])
                    if len(line) == 3 or line[3] == " ":
                        return Reply(code, tuple(lines))
                    if len(lines) >= MAX_REPLY_LINES:
                        raise UpstreamError("reply has too many lines")
        except asyncio.TimeoutError:
            raise UpstreamError("timed out waiting for a reply") from None
        except asyncio.IncompleteReadError:
            raise UpstreamError("connection closed by the mail system") from None
        except asyncio.LimitOverrunError:
            raise UpstreamError("reply line too long") from None
        except OSError as err:
            raise UpstreamError(f"read: {err.strerror}") from None

    async def send(self, data: bytes) -> None:
        self._pending = True
        if self.writer.is_closing():
            raise UpstreamError("connection to the mail system already closed")
        try:
            self.writer.write(data)
            # Wait only when the kernel did not take it all (a big message,
            # a slow MTA): the usual command leaves nothing buffered.
            if self.writer.transport.get_write_buffer_size():
                async with asyncio.timeout(self.timeout):
                    await self.writer.drain()
        except asyncio.TimeoutError:
            raise UpstreamError("timed out sending") from None
        except (OSError, RuntimeError) as err:  # uvloop: RuntimeError on a closed transport
            raise UpstreamError(f"write: {getattr(err, 'strerror', None) or err}") from None

    async def command(self, line: str) -> Reply:
        await self.send(line.encode("utf-8", "surrogateescape") + b"\r\n")
        return await self.reply()

    async def transfer(self, content: bytes) -> Reply:
        """The message, after MAIL and RCPT, and the MTA's verdict.  When the
        MTA offers CHUNKING (RFC 3030; Postfix does) and the message is one
        piece, it goes as BDAT ... LAST: one write and one reply instead of
        DATA, 354, the dot-stuffed message and its reply.  Only a message that
        starts with a header field: Postfix's DATA reader mends other first
        lines (an empty line before white space, X-Mailbox-Line: for an mbox
        "From " line), its BDAT reader (3.7) does not (it dropped a first
        line of white space), and an empty message is "Null BDAT".
        Otherwise DATA."""
        if self.capabilities.chunking and len(content) <= PIECE_SIZE and HEADER_FIELD.match(content):
            wire = crlf_lines(content)
            self.messages += 1
            await self.send(b"BDAT %d LAST\r\n" % len(wire) + wire)
            return await self.reply()
        reply = await self.command("DATA")
        if reply.code != 354:
            return reply
        return await self.message(content)

    async def message(self, content: bytes) -> Reply:
        """Send the message after a 354, with transparency, and read the
        verdict: dot-stuffed piece by piece (wiredata.data_pieces)."""
        self.messages += 1
        for piece in data_pieces(content, PIECE_SIZE):
            await self.send(piece)
        return await self.reply()

    async def ehlo(self, helo: str) -> Reply:
        reply = await self.command(f"EHLO {helo}")
        if reply.code == 250:
            self.capabilities = Capabilities.from_ehlo(reply)
        return reply

    async def handshake(self, helo: str, login: str, protocol: str = "xclient") -> Reply | None:
        """Greeting, XCLIENT LOGIN=, EHLO (XCLIENT restarts the session, so
        an EHLO before it would be thrown away: Postfix takes XCLIENT right
        after its greeting, which saves a round trip per session).  None when
        the session is ready, else the MTA's refusal.  With protocol "header"
        (Sendmail) the session is ready after EHLO: the login travels in the
        message (forward.Forwarder.deliver)."""
        greeting = await self.reply()
        if greeting.code != 220:
            return greeting
        if protocol == "header":
            reply = await self.ehlo(helo)
            return None if reply.code == 250 else reply
        return await self.xclient(helo, login)

    async def xclient(self, helo: str, login: str) -> Reply | None:
        """XCLIENT LOGIN=, then EHLO: the MTA session now speaks for login.
        Also how a kept session passes to another login (Postfix takes
        XCLIENT between transactions and restarts the session, its milters'
        connect included)."""
        reply = await self.command(f"XCLIENT LOGIN={xtext(login)}")
        if 500 <= reply.code < 600:
            raise UpstreamError(f"the mail system refused XCLIENT LOGIN ({reply.code} {reply.one_line}): "
                                "check smtpd_authorized_xclient_hosts on its sendgate service")
        if reply.code != 220:
            return reply
        self.login = login
        reply = await self.ehlo(helo)
        return None if reply.code == 250 else reply

    def quiet(self) -> bool:
        """Nothing came from the MTA since the last reply: no timeout notice,
        no end of file.  (asyncio has no public peek: the reader's buffer is
        where such a notice would wait.)"""
        reader = self.reader
        return not (self.writer.is_closing() or reader.at_eof() or reader.exception() is not None
                    or len(reader._buffer))  # noqa: SLF001

    def close(self) -> None:
        self._spoiled = True
        try:
            self.writer.close()
        except Exception:  # closing an already broken socket: nothing left to do
            pass

    def quit(self) -> None:
        """Say QUIT and go, without waiting for the 221 (just go when a
        reply is still due: the MTA is not listening for commands)."""
        if not (self._pending or self.writer.is_closing()):
            try:
                self.writer.write(b"QUIT\r\n")
            except (OSError, RuntimeError):
                pass
        self.close()


class UpstreamRefused(UpstreamError):
    """The MTA answered the session's opening with a refusal (kept in .reply)."""

    def __init__(self, reply: Reply):
        super().__init__(f"{reply.code} {reply.one_line}")
        self.reply = reply
