"""The daemon-wide state every client session shares (Registry): the
sessions open, per uid for the session limits, the transactions in progress
and the bytes of unfinished message data, per uid and in all (the limits of
docs/threat-model.md, "Denial of service"), the times of each uid's recent
messages for the rate limit, the kept MTA sessions, the metrics, and
whether the daemon is shutting down.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol

from sendgate.metrics import Metrics
from sendgate.submit_socket.pool import UpstreamPool


class Member(Protocol):
    """What the registry needs of a client session (protocol.SubmitSMTP)."""

    @property
    def uid(self) -> int: ...

    @property
    def idle(self) -> bool: ...

    def close_for_shutdown(self) -> None: ...


class Registry:
    """The sessions of one daemon: counts for the limits, message times for
    the rate limit, and the shutdown state.  Shared by every connection."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        self.sessions: set[Member] = set()
        self.per_uid: collections.Counter[int] = collections.Counter()
        self.recent: dict[int, collections.deque[float]] = collections.defaultdict(collections.deque)
        # Transactions in progress (each holds an MTA session or will at its
        # end of data) and bytes of unfinished DATA held, per uid.
        self.transactions: collections.Counter[int] = collections.Counter()
        self.data_held: collections.Counter[int] = collections.Counter()
        self.closing = False
        self.empty = asyncio.Event()
        self.empty.set()
        self.upstreams = UpstreamPool()

    def add(self, member: Member) -> None:
        self.sessions.add(member)
        self.per_uid[member.uid] += 1
        self.metrics.sessions(+1)
        self.empty.clear()

    def remove(self, member: Member) -> None:
        if member in self.sessions:
            self.sessions.discard(member)
            self.metrics.sessions(-1)
            self.per_uid[member.uid] -= 1
            if self.per_uid[member.uid] <= 0:
                del self.per_uid[member.uid]
        if not self.sessions:
            self.empty.set()

    def begin(self, uid: int) -> None:
        self.transactions[uid] += 1

    def end(self, uid: int) -> None:
        _decrease(self.transactions, uid, 1)

    def hold(self, uid: int, size: int) -> None:
        self.data_held[uid] += size

    def free(self, uid: int, size: int) -> None:
        _decrease(self.data_held, uid, size)

    def message_times(self, uid: int, window: float, now: float) -> collections.deque[float]:
        times = self.recent[uid]
        while times and now - times[0] >= window:
            times.popleft()
        return times

    def shut_down(self) -> None:
        """Refuse new sessions; end idle ones now, busy ones after their message."""
        self.closing = True
        self.upstreams.close()
        for member in list(self.sessions):
            if member.idle:
                member.close_for_shutdown()


def _decrease(counter: collections.Counter[int], uid: int, by: int) -> None:
    counter[uid] -= by
    if counter[uid] <= 0:
        del counter[uid]
