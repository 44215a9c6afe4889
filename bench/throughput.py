"""Part 2: throughput with Postfix's smtp-source, one message per session
(the way sendmail commands use the socket), `sessions` in parallel.

Paths, all into the same bench Postfix:
  socket, no milter     smtp-source -> submit daemon -> bnone smtpd
  direct, no milter     smtp-source -> bnone smtpd                   (anchor of the socket)
  socket, sendgate      smtp-source -> submit daemon -> sendgate smtpd + sendgate-milter
  socket, null milter   smtp-source -> submit daemon -> bnull smtpd + null_milter.py (anchor of the milter)
  direct, sendgate      smtp-source -> bsg smtpd + sendgate-milter (relay mode: no XCLIENT)
  direct, null milter   smtp-source -> bnull smtpd + null_milter.py

Through the submit daemon Postfix sees XCLIENT LOGIN=root, so sendgate-milter
does its submission work; smtp-source cannot send XCLIENT, so directly it
only sees relay mode.  The socket's own cost is the pair without milters.

Every round runs each path once, in a rotating order; a round's figures are
messages per second over smtp-source's whole run (wall clock), and the CPU
time the submit daemon and the milter used per message (from /proc, which
other work on the machine does not inflate the way it slows the rates).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time

from benchstack import DIRECT_SENDGATE, BenchError, BenchStack

SENDER = "root@example.org"
RCPT = "bob@example.net"


PATHS = {
    # name: (through the submit daemon?, Postfix service)
    "socket, no milter": (True, "bnone"),
    "direct, no milter": (False, "bnone"),
    "socket, sendgate milter": (True, "sendgate"),
    "socket, null milter": (True, "bnull"),
    "direct, sendgate milter": (False, DIRECT_SENDGATE),
    "direct, null milter": (False, "bnull"),
}
MILTER = {"sendgate": "milter", DIRECT_SENDGATE: "milter", "bnull": "null"}


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (from /proc: other load
    on the machine slows a run down but does not inflate this)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fp:
        fields = fp.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemons(stack: BenchStack, name: str) -> dict[str, int]:
    """The sendgate-side processes a path goes through: submitd, milter."""
    through_socket, service = PATHS[name]
    out = {"submitd": stack.pid(f"submit-{service}")} if through_socket else {}
    if service in MILTER:
        out["milter"] = stack.pid(MILTER[service])
    return out


def smtp_source(path: str, sessions: int, messages: int, message_file: str) -> float:
    argv = ["/usr/sbin/smtp-source", "-s", str(sessions), "-m", str(messages), "-f", SENDER, "-t", RCPT,
            "-F", message_file, "-M", "bench.example", f"unix:{path}"]
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return messages / elapsed


def run(stack: BenchStack, message_file: str, sessions: int, messages: int, rounds: int) -> dict:
    names = list(PATHS)
    rates: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            through_socket, service = PATHS[name]
            path = stack.submit(service) if through_socket else stack.direct(service)
            pids = daemons(stack, name)
            before = {d: cpu_seconds(pid) for d, pid in pids.items()}
            rates[name].append(smtp_source(path, sessions, messages, message_file))
            for d, pid in pids.items():
                cpu[name].setdefault(d, []).append((cpu_seconds(pid) - before[d]) / messages * 1000)
    return {
        "sessions": sessions, "messages": messages, "rounds": rounds,
        "rates": rates,
        "median_per_s": {n: statistics.median(v) for n, v in rates.items()},
        "cpu_ms_per_message": {n: {d: statistics.median(v) for d, v in c.items()} for n, c in cpu.items()},
    }
