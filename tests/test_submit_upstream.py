"""The submit daemon's MTA client sends message data in pieces; the bytes on
the wire must be exactly the dot-stuffed message and its final dot.  To an
MTA that offers CHUNKING a one-piece message goes as BDAT ... LAST."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sendgate.wiredata import dot_stuff
from sendgate.submit_socket import upstream
from sendgate.submit_socket.upstream import Capabilities, Upstream


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


async def _transfer(content: bytes, chunking: bool) -> list[bytes]:
    """What transfer() writes, one entry per MTA reply it waited for."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    mta_reader, mta_writer = await asyncio.open_connection(sock=theirs)
    up = Upstream(reader, writer, timeout=10)
    up.capabilities = Capabilities(chunking=chunking)
    task = asyncio.create_task(up.transfer(content))
    seen = []
    async with asyncio.timeout(10):
        first = await mta_reader.readline()
        if first.startswith(b"BDAT "):
            seen.append(first + await mta_reader.readexactly(int(first.split()[1])))
        else:
            seen.append(first)
            mta_writer.write(b"354 go ahead\r\n")
            data = b""
            while not (data == b".\r\n" or data.endswith(b"\r\n.\r\n")):
                data += await mta_reader.read(65536)
            seen.append(data)
    mta_writer.write(b"250 2.0.0 Ok\r\n")
    assert (await task).code == 250
    up.close()
    mta_writer.close()
    return seen


@pytest.mark.parametrize("content,chunking,want", [
    pytest.param(b"Subject: x\n\n.\nbare\rcr\r\n", True, [b"BDAT 27 LAST\r\nSubject: x\r\n\r\n.\r\nbare\r\ncr\r\n"],
                 id="bdat-crlf-no-dot-stuffing"),
    pytest.param(b"Subject: x", True, [b"BDAT 12 LAST\r\nSubject: x\r\n"], id="bdat-ends-with-crlf"),
    pytest.param(b"  indented\nsecond\n", True, [b"DATA\r\n", b"  indented\r\nsecond\r\n.\r\n"],
                 id="first-line-white-space-goes-as-data"),
    pytest.param(b"From alice Mon Nov 30\nSubject: x\n\nx\n", True,
                 [b"DATA\r\n", b"From alice Mon Nov 30\r\nSubject: x\r\n\r\nx\r\n.\r\n"], id="mbox-from-line-goes-as-data"),
    pytest.param(b"just a body\n", True, [b"DATA\r\n", b"just a body\r\n.\r\n"], id="no-header-goes-as-data"),
    pytest.param(b"", True, [b"DATA\r\n", b".\r\n"], id="empty-goes-as-data"),
    pytest.param(b"Subject: x\n\n.\n", False, [b"DATA\r\n", b"Subject: x\r\n\r\n..\r\n.\r\n"], id="no-chunking-data"),
    pytest.param(b"Subject: x\n" + b"x" * 70000 + b"\n", True, [b"DATA\r\n", b"Subject: x\r\n" + b"x" * 70000 + b"\r\n.\r\n"],
                 id="over-one-piece-data"),
])
def test_transfer(content, chunking, want):
    assert asyncio.run(_transfer(content, chunking)) == want
