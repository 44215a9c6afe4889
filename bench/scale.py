"""Part 3a: messages per second and latency percentiles at several numbers of
concurrent clients, through the submit socket (Postfix with sendgate-milter
behind it) against Postfix's smtpd directly (with the same milter, which
takes that mail as relayed from the network).  One message per session; both sides
are driven by the same client (loadgen.py), level by level, socket and
direct alternating.  A session that fails (a 4xx, a dropped connection) is
counted, not timed; messages/s counts accepted messages only.
"""

from __future__ import annotations

import asyncio
import statistics

from benchstack import DIRECT_SENDGATE, BenchError, BenchStack
from loadgen import load, percentile

SENDER = "root@example.org"
RCPT = "bob@example.net"


def run(stack: BenchStack, data: bytes, levels: list[int], messages: dict[int, int], rounds: int) -> dict:
    targets = {"socket": stack.submit("sendgate"), "direct": stack.direct(DIRECT_SENDGATE)}
    out: dict = {"levels": levels, "messages": messages, "rounds": rounds, "results": {}}
    for clients in levels:
        samples: dict[str, list[float]] = {n: [] for n in targets}
        rates: dict[str, list[float]] = {n: [] for n in targets}
        errors: dict[str, list[str]] = {n: [] for n in targets}
        for r in range(rounds):
            names = list(targets) if r % 2 == 0 else list(reversed(targets))
            for name in names:
                latencies, failed, elapsed = asyncio.run(
                    load(targets[name], clients, messages[clients], SENDER, RCPT, data))
                if not latencies:
                    raise BenchError(f"{name}, {clients} clients: every session failed: {failed[:3]}")
                samples[name].extend(latencies)
                errors[name].extend(failed)
                rates[name].append(len(latencies) / elapsed)
        out["results"][str(clients)] = {
            name: {
                "per_s": statistics.median(rates[name]),
                "p50_ms": percentile(samples[name], 50) * 1000,
                "p99_ms": percentile(samples[name], 99) * 1000,
                "max_ms": max(samples[name]) * 1000,
                "sessions": len(samples[name]),
                "errors": len(errors[name]),
                "error_examples": sorted(set(errors[name]))[:3],
            } for name in targets
        }
    return out
