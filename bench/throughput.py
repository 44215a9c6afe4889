"""Part 2: throughput with Postfix's smtp-source, one message per session
(the way sendmail commands use the socket), `sessions` in parallel.

Paths, all into the same bench Postfix:
  socket, no milter     smtp-source -> submit daemon -> bnone smtpd
  direct, no milter     smtp-source -> bnone smtpd                   (anchor of the socket)
  socket, sendgate      smtp-source -> submit daemon -> sendgate smtpd + sendgate-milter
  socket, null milter   smtp-source -> submit daemon -> bnull smtpd + null_milter.py (anchor of the milter)
  direct, sendgate      smtp-source -> sendgate smtpd + sendgate-milter (relay mode: no XCLIENT)
  direct, null milter   smtp-source -> bnull smtpd + null_milter.py

Through the submit daemon Postfix sees XCLIENT LOGIN=root, so sendgate-milter
does its submission work; smtp-source cannot send XCLIENT, so directly it
only sees relay mode.  The socket's own cost is the pair without milters.

Every round runs each path once, in a rotating order; a round's figures are
messages per second over smtp-source's whole run (wall clock).
"""

from __future__ import annotations

import statistics
import subprocess
import time

from benchstack import BenchError, BenchStack

SENDER = "root@example.org"
RCPT = "bob@example.net"


def paths(stack: BenchStack) -> dict[str, str]:
    return {
        "socket, no milter": stack.submit("bnone"),
        "direct, no milter": stack.direct("bnone"),
        "socket, sendgate milter": stack.submit("sendgate"),
        "socket, null milter": stack.submit("bnull"),
        "direct, sendgate milter": stack.direct("sendgate"),
        "direct, null milter": stack.direct("bnull"),
    }


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
    targets = paths(stack)
    names = list(targets)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rates[name].append(smtp_source(targets[name], sessions, messages, message_file))
    return {
        "sessions": sessions, "messages": messages, "rounds": rounds,
        "rates": rates,
        "median_per_s": {n: statistics.median(v) for n, v in rates.items()},
    }
