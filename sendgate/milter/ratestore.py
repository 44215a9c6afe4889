"""Where the rate counters live: in this process, or in Redis.

A store adds a message (and its recipients) to a principal's counters for
one window and returns the new totals; sendgate.policy.limits decides on
them.  Counters are keyed by principal and window start, so a new window
starts from zero without any reset.

MemoryStore (rate_store: memory) serves one milter process: every path into
one MTA (the submit socket's service and network submission) goes through
that process, so its counters cover both.  RedisStore (rate_store: redis)
lets several milters, on several MTA hosts, share one set of counters.  A
store that cannot answer raises StoreError; the milter then tempfails the
message (a lookup failure is never an accept).
"""

from __future__ import annotations

import threading
from typing import Protocol

from sendgate.policy.limits import Usage


class StoreError(Exception):
    """The counters could not be read or updated."""


class RateStore(Protocol):
    def add(self, principal: str, start: int, window: int, messages: int, recipients: int) -> Usage:
        """Add to principal's counters for the window that begins at start
        and lasts window seconds; return the totals after the addition."""


class MemoryStore:
    """Counters in a dict, guarded by a lock: libmilter runs one thread per
    MTA connection.  Windows older than the current one are dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], tuple[int, int]] = {}
        self._current = 0

    def add(self, principal: str, start: int, window: int, messages: int, recipients: int) -> Usage:
        with self._lock:
            if start > self._current:
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= start}
                self._current = start
            m, r = self._counts.get((principal, start), (0, 0))
            m, r = m + messages, r + recipients
            self._counts[(principal, start)] = (m, r)
            return Usage(m, r)


class RedisStore:
    """One Redis hash per principal and window, fields m and r, updated in
    one MULTI/EXEC and expiring one window after the window ends."""

    PREFIX = "sendgate:rate:"

    def __init__(self, url: str, password: str | None = None, timeout: float = 2.0) -> None:
        try:
            import redis
        except ImportError as err:
            raise StoreError("rate_store is redis but the Python package redis is not installed "
                             "(pip install 'sendgate[redis]')") from err
        self._errors = (redis.RedisError, OSError)
        self._client = redis.Redis.from_url(url, password=password, socket_timeout=timeout,
                                            socket_connect_timeout=timeout)

    def add(self, principal: str, start: int, window: int, messages: int, recipients: int) -> Usage:
        key = f"{self.PREFIX}{principal}:{start}"
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.hincrby(key, "m", messages)
            pipe.hincrby(key, "r", recipients)
            pipe.expireat(key, start + 2 * window)
            m, r, _ = pipe.execute()
        except self._errors as err:
            raise StoreError(f"redis: {err}") from err
        return Usage(int(m), int(r))


def open_store(kind: str, redis_url: str, password_file: str = "") -> RateStore:
    """The store rate_store names.  The password file is read here, after
    the milter became its service user: a file that user cannot read is a
    StoreError at start, not a failure at the first message."""
    if kind != "redis":
        return MemoryStore()
    password = None
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as fp:
                password = fp.readline().rstrip("\r\n")
        except OSError as err:
            raise StoreError(f"rate_redis_password_file {password_file}: {err.strerror}") from None
    return RedisStore(redis_url, password)
