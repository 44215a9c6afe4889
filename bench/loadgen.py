"""An SMTP client for the scale and memory benchmarks: many concurrent
sessions over a unix socket, each timed from connect to the 250 for its
message, the way a sendmail command experiences it.

The same client drives the submit socket and Postfix's smtpd directly, so
its own cost is the same on both sides of a ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

EHLO = b"EHLO bench.example\r\n"


class SessionError(Exception):
    """The server answered something other than what a good session gets."""


def wire_message(text: bytes) -> bytes:
    """Message bytes as DATA sends them: CRLF lines, dot-stuffed, with the final '.'."""
    lines = text.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + x if x[:1] == b"." else x) + b"\r\n" for x in lines) + b".\r\n"


async def _expect(reader: asyncio.StreamReader, code: bytes, what: str) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise SessionError(f"connection closed waiting for {what}")
        if line[:3] != code:
            raise SessionError(f"{what}: {line.decode(errors='replace').strip()}")
        if line[3:4] != b"-":
            return


async def _connect(path: str):
    """Connect the way a blocking client does: while the listen queue is
    full (EAGAIN on a unix socket), wait and try again.  asyncio's own
    connect takes EAGAIN for "in progress" and hands back a dead socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        while True:
            try:
                sock.connect(path)
                break
            except BlockingIOError:
                await asyncio.sleep(0.001)
        return await asyncio.open_unix_connection(sock=sock, limit=1 << 16)
    except BaseException:
        sock.close()
        raise


async def _open(path: str):
    reader, writer = await _connect(path)
    await _expect(reader, b"220", "greeting")
    writer.write(EHLO)
    await _expect(reader, b"250", "EHLO")
    return reader, writer


async def send_one(path: str, sender: str, rcpt: str, data: bytes) -> float:
    """One session, one message; seconds from connect to the message's 250."""
    start = time.perf_counter()
    reader, writer = await _open(path)
    try:
        writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
        await _expect(reader, b"250", "MAIL")
        writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
        await _expect(reader, b"250", "RCPT")
        writer.write(b"DATA\r\n")
        await _expect(reader, b"354", "DATA")
        writer.write(data)
        await writer.drain()
        await _expect(reader, b"250", "end of data")
        elapsed = time.perf_counter() - start
        writer.write(b"QUIT\r\n")
        await _expect(reader, b"221", "QUIT")
        return elapsed
    finally:
        writer.close()


async def load(path: str, clients: int, messages: int, sender: str, rcpt: str,
               data: bytes) -> tuple[list[float], list[str], float]:
    """clients concurrent senders share messages sessions; returns the
    latencies of the accepted messages, what went wrong with the others,
    and the wall-clock seconds for all of them."""
    remaining = messages
    latencies: list[float] = []
    errors: list[str] = []

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                latencies.append(await send_one(path, sender, rcpt, data))
            except (SessionError, OSError) as err:
                errors.append(str(err) or type(err).__name__)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, errors, time.perf_counter() - start


@contextlib.asynccontextmanager
async def idle_sessions(path: str, count: int, opening: int = 25):
    """count sessions that have been greeted and said EHLO, then sit idle.
    Opened at most `opening` at a time (a listen queue is finite)."""
    gate = asyncio.Semaphore(opening)
    sessions = []

    async def one() -> None:
        async with gate:
            sessions.append(await _open(path))

    try:
        await asyncio.gather(*(one() for _ in range(count)))
        yield len(sessions)
    finally:
        for _, writer in sessions:
            writer.write(b"QUIT\r\n")
            writer.close()
        await asyncio.sleep(0.5)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]
