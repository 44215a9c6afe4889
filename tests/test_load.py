"""Load through the real stack: many users at once, every message exactly
once; thousands of sessions leave no file descriptor or memory behind."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import threading
import time

import pytest

from conftest import delivered, program, run_as


@pytest.fixture(scope="session")
def stack(postfix_stack):
    """Postfix only: this file tests Postfix's own mechanisms or wording."""
    return postfix_stack


# A client run as a test user: N concurrent sessions, one message each.
# More than its share of transactions at once: the rest wait for theirs.
CLIENT = r"""
import asyncio, collections, json, os, pwd, sys
path, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
login = pwd.getpwuid(os.getuid()).pw_name

async def reply(reader):
    while True:
        line = await reader.readline()
        if not line or line[3:4] != b"-":
            return line.decode().strip()

async def connect():
    # A full listen queue makes a non-blocking unix connect fail with EAGAIN
    # (asyncio does not wait for it): wait and retry, as a blocking one would.
    import socket
    while True:
        sock = socket.socket(socket.AF_UNIX)
        sock.setblocking(False)
        try:
            sock.connect(path)
            return await asyncio.open_unix_connection(sock=sock)
        except BlockingIOError:
            sock.close()
            await asyncio.sleep(0.05)

async def session(i):
    reader, writer = await connect()
    replies = [await reply(reader)]
    body = f"Message-ID: <{tag}-{login}-{i}@example.org>\r\nSubject: {tag}\r\n\r\nload {i}\r\n"
    writer.write(b"EHLO load\r\n")
    replies.append(await reply(reader))
    # Over the uid's share of transactions (submit_transactions_per_uid),
    # MAIL is 451 4.3.2: try again, as the spool does for the sendmail command.
    while True:
        writer.write(f"MAIL FROM:<{login}>\r\n".encode())
        replies.append(await reply(reader))
        if not replies[-1].startswith("451 4.3.2 "):
            break
        await asyncio.sleep(0.05)
    for line in ("RCPT TO:<load@example.net>", "DATA", body + ".", "QUIT"):
        writer.write(line.encode() + b"\r\n")
        replies.append(await reply(reader))
    writer.close()
    return replies[-2][:3]

async def main():
    results = await asyncio.gather(*(session(i) for i in range(count)), return_exceptions=True)
    print(json.dumps(collections.Counter(str(r) for r in results)))

asyncio.run(main())
"""


def submitd(stack) -> int:
    return int((stack.dir / "run/submitd.pid").read_text())


def fds_and_rss(pid: int) -> tuple[int, int]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    rss = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    return fds, rss


def test_two_hundred_concurrent_clients_from_two_users(stack, request):
    tag = f"load{os.getpid()}"
    results = {}

    def client(user):
        result = run_as(user, [program("python"), "-c", CLIENT, stack.socket, tag, "100"], timeout=300)
        results[user] = (result.returncode, result.stdout.decode(), result.stderr.decode()[-500:])

    threads = [threading.Thread(target=client, args=(u,)) for u in ("sgtest1", "sgtest2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for user, (status, out, err) in results.items():
        assert status == 0, err
        assert json.loads(out) == {"250": 100}, (user, out)
    copies = delivered(stack, f"Subject: {tag}", count=200, timeout=120)
    ids = sorted(c.one("Message-ID") for c in copies)
    want = sorted(f"<{tag}-{u}-{i}@example.org>" for u in ("sgtest1", "sgtest2") for i in range(100))
    assert ids == want  # every message, each exactly once


CHURN = r"""
import asyncio, sys
path, count = sys.argv[1], int(sys.argv[2])

async def one(sem):
    async with sem:
        reader, writer = await asyncio.open_unix_connection(path)
        await reader.readline()
        writer.write(b"NOOP\r\nQUIT\r\n")
        await reader.readline(); await reader.readline()
        writer.close()

async def main():
    sem = asyncio.Semaphore(20)
    await asyncio.gather(*(one(sem) for _ in range(count)))

asyncio.run(main())
"""


def test_thousands_of_sessions_leave_nothing_behind(stack):
    pid = submitd(stack)
    subprocess.run([program("python"), "-c", CHURN, stack.socket, "200"], check=True, timeout=300)
    time.sleep(0.5)
    fds_before, rss_before = fds_and_rss(pid)
    count = int(os.environ.get("SENDGATE_CHURN_SESSIONS", "2000"))
    subprocess.run([program("python"), "-c", CHURN, stack.socket, str(count)], check=True, timeout=600)
    time.sleep(0.5)
    fds_after, rss_after = fds_and_rss(pid)
    print(f"\n{count} sessions: fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB")
    assert fds_after == fds_before
    assert rss_after - rss_before < 16 * 1024
