"""Part 3b: memory.

Idle sessions: the resident size of each daemon before and while `count`
sessions sit idle after EHLO on the submit socket.  Each of them holds one
Postfix smtpd session and so one milter connection: sendgate-milter behind
the `sendgate` service, the null pymilter behind `bnull` (its anchor).  The
anchor of the submit daemon is Postfix's own cost for the same sessions:
the proportional set size (PSS) of the smtpd processes serving them.

A big message: the peak resident size growth of the submit daemon and of
sendgate-milter while one message of `size` bytes passes the socket (the
peak is reset through /proc/PID/clear_refs first), and the peak RSS of the
three sendmail commands (/usr/bin/time -f %M) sending it.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import time

from benchstack import VENV_BIN, BenchError, BenchStack
from loadgen import idle_sessions, send_one, wire_message

SENDER = "root@example.org"
RCPT = "bob@example.net"


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fp:
        for line in fp:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {field} for pid {pid}")


def rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS")


def pss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fp:
                total += next(int(x.split()[1]) for x in fp if x.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
    return total


def _idle(stack: BenchStack, service: str, milter: str, count: int) -> dict:
    submitd, milter_pid = stack.pid(f"submit-{service}"), stack.pid(milter)
    before = {"submitd": rss_kb(submitd), "milter": rss_kb(milter_pid),
              "smtpd": pss_kb(stack.smtpd_pids(service))}

    async def hold() -> dict:
        async with idle_sessions(stack.submit(service), count) as opened:
            await asyncio.sleep(1)
            return {"sessions": opened, "submitd": rss_kb(submitd), "milter": rss_kb(milter_pid),
                    "smtpd": pss_kb(stack.smtpd_pids(service)), "smtpd_processes": len(stack.smtpd_pids(service))}

    during = asyncio.run(hold())
    return {"before_kb": before, "during_kb": during}


def idle(stack: BenchStack, count: int) -> dict:
    return {"sendgate": _idle(stack, "sendgate", "milter", count),
            "null": _idle(stack, "bnull", "null", count)}


def big_message(path: str, size: int) -> None:
    line = b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\n"
    with open(path, "wb") as fp:
        fp.write(b"To: bob@example.net\nSubject: big\n\n")
        fp.write(line * (size // len(line)))


def _reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fp:
        fp.write("5")


def big(stack: BenchStack, message_file: str) -> dict:
    with open(message_file, "rb") as fp:
        data = wire_message(fp.read())
    daemons = {"submitd": stack.pid("submit-sendgate"), "milter": stack.pid("milter")}
    before = {}
    for name, pid in daemons.items():
        _reset_peak(pid)
        before[name] = rss_kb(pid)
    seconds = asyncio.run(send_one(stack.submit("sendgate"), SENDER, RCPT, data))
    growth = {name: _status_kb(pid, "VmHWM") - before[name] for name, pid in daemons.items()}
    clients = {}
    host, port = stack.inbound
    msg = shlex.quote(message_file)
    commands = {
        "sendgate-sendmail": f"SENDGATE_CONFIG={shlex.quote(stack.submit_config('sendgate'))} "
                             f"{shlex.quote(stack.launcher())} -t -i < {msg}",
        "postfix sendmail": f"/usr/sbin/sendmail -C {shlex.quote(stack.postfix_config)} -t -i < {msg}",
        "msmtp": f"msmtp --file=/dev/null --host={host} --port={port} --domain=localhost "
                 f"--from=root@example.org -t < {msg}",
    }
    for name, command in commands.items():
        start = time.perf_counter()
        result = subprocess.run(["/usr/bin/time", "-f", "%M", "sh", "-c", command],
                                capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise BenchError(f"{name} failed with the big message ({result.returncode}): {result.stderr}")
        clients[name] = {"peak_rss_kb": int(result.stderr.strip().splitlines()[-1]),
                         "seconds": time.perf_counter() - start}
    return {"size": len(data), "socket_seconds": seconds, "growth_kb": growth, "before_kb": before,
            "commands": clients}
