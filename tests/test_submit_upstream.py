"""The submit daemon's MTA client sends message data in pieces; the bytes on
the wire must be exactly the dot-stuffed message and its final dot."""

from __future__ import annotations

import asyncio
import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from sendgate.wiredata import dot_stuff
from sendgate.submit_socket import upstream
from sendgate.submit_socket.upstream import Upstream


async def _wire(content: bytes) -> bytes:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    mta_reader, mta_writer = await asyncio.open_connection(sock=theirs)
    up = Upstream(reader, writer, timeout=10)
    task = asyncio.create_task(up.message(content))
    async with asyncio.timeout(10):
        received = await mta_reader.readexactly(len(dot_stuff(content)) + 3)
    mta_writer.write(b"250 2.0.0 Ok: queued as X\r\n")
    reply = await task
    assert reply.code == 250
    up.close()
    mta_writer.close()
    return received


lines = st.lists(st.sampled_from([b"", b".", b"..", b"a", b".x", b"hello world", b"\r", b"x" * 40]), max_size=40)
endings = st.lists(st.sampled_from([b"\r\n", b"\n", b"\r"]), min_size=40, max_size=40)


@settings(max_examples=200, deadline=None)
@given(lines, endings, st.booleans(), st.integers(1, 64))
def test_pieces_join_to_the_dot_stuffed_message(body, ends, trailing, piece):
    content = b"".join(line + end for line, end in zip(body, ends))
    if not trailing and content:
        content = content[:-1]
    saved, upstream.PIECE_SIZE = upstream.PIECE_SIZE, piece
    try:
        assert asyncio.run(_wire(content)) == dot_stuff(content) + b".\r\n"
    finally:
        upstream.PIECE_SIZE = saved
