"""The MTA side of a submit session: a small SMTP client over a unix socket.

Lock-step, one reply per command, replies kept whole (code and every line) so
they can be relayed to our client exactly as the MTA wrote them.  Each read is
bounded in time (submit_upstream_timeout), line length and line count.  The
time bounds use asyncio.timeout(), not wait_for(), which would wrap every
read in a task of its own (bench/: a tenth of the daemon's time per session).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from sendgate.wiredata import dot_stuff, xtext

MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100
# Message data goes upstream dot-stuffed in pieces of about this many bytes,
# so that a big message is never held dot-stuffed whole besides its original.
PIECE_SIZE = 1 << 16


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
class Reply:
    code: int
    lines: tuple[str, ...]

    def __str__(self) -> str:
        """The reply as our client should see it (push() adds the last CRLF)."""
        last = len(self.lines) - 1
        return "\r\n".join(f"{self.code}{' ' if i == last else '-'}{line}"
                           for i, line in enumerate(self.lines))

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400


@dataclass(frozen=True)
class Capabilities:
    size: int | None = None     # None: the MTA advertised no limit
    eightbit: bool = False
    smtputf8: bool = False
    dsn: bool = False

    @classmethod
    def from_ehlo(cls, reply: Reply) -> "Capabilities":
        size, eightbit, smtputf8, dsn = None, False, False, False
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
        return cls(size, eightbit, smtputf8, dsn)


class Upstream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float):
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.capabilities = Capabilities()

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

    async def reply(self) -> Reply:
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
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except asyncio.TimeoutError:
            raise UpstreamError("timed out sending") from None
        except OSError as err:
            raise UpstreamError(f"write: {err.strerror or err}") from None

    async def command(self, line: str) -> Reply:
        await self.send(line.encode("utf-8", "surrogateescape") + b"\r\n")
        return await self.reply()

    async def message(self, content: bytes) -> Reply:
        """Send the message after a 354, with transparency, and read the verdict.

        Dot-stuffed piece by piece: each piece ends after a LF, so no line
        ending is split and the next piece starts a line; the pieces joined
        are exactly dot_stuff(content).  A small message is one write."""
        start, size = 0, len(content)
        while True:
            cut = content.find(b"\n", start + PIECE_SIZE)
            end = size if cut < 0 else cut + 1
            piece = dot_stuff(content[start:end])
            if end == size:
                await self.send(piece + b".\r\n")
                return await self.reply()
            await self.send(piece)
            start = end

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
        message (see SubmitSMTP._deliver)."""
        greeting = await self.reply()
        if greeting.code != 220:
            return greeting
        if protocol == "header":
            reply = await self.ehlo(helo)
            return None if reply.code == 250 else reply
        reply = await self.command(f"XCLIENT LOGIN={xtext(login)}")
        if 500 <= reply.code < 600:
            raise UpstreamError(f"the mail system refused XCLIENT LOGIN ({reply.code} {reply.text}): "
                                "check smtpd_authorized_xclient_hosts on its sendgate service")
        if reply.code != 220:
            return reply
        reply = await self.ehlo(helo)
        return None if reply.code == 250 else reply

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # closing an already broken socket: nothing left to do
            pass

    def quit(self) -> None:
        """Say QUIT and go, without waiting for the 221."""
        try:
            self.writer.write(b"QUIT\r\n")
        except OSError:
            pass
        self.close()
