"""The MTA sessions (UpstreamPool): those in use (counted), those left open
after a transaction that ended clean, kept for the next transaction of the
same Route within the limits of CacheLimits (Postfix's SMTP client
connection cache), and the MTA's capabilities, learned from its EHLO and
remembered, so that a client is greeted and answered at EHLO without an
MTA session of its own (it takes one at MAIL).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sendgate.submit_socket.upstream import Capabilities, Upstream, UpstreamError, UpstreamRefused

# How long capabilities learned from the MTA are trusted while no MTA session
# is open or kept: after that the next client's greeting waits for a new one
# (so a dead MTA is a 421 at the greeting, not at MAIL).
CAPABILITIES_TIME = 60.0
FRESH = 1.0


@dataclass(frozen=True)
class Route:
    """Where and how MTA sessions are opened: one client session's settings.
    A kept session goes only to a session of an equal route."""
    path: str
    timeout: float
    helo: str
    protocol: str = "xclient"


@dataclass(frozen=True)
class CacheLimits:
    """submit_upstream_cache_size, _cache_time_limit, reuse_count_limit,
    reuse_time_limit (the names of Postfix's SMTP client connection cache)."""
    size: int = 16
    idle_time: float = 5.0
    reuse_count: int = 100
    reuse_time: float = 300.0


class UpstreamPool:
    """MTA sessions kept open after their client went, for the next client:
    it is greeted without waiting for a connection, the MTA's greeting,
    XCLIENT and EHLO, and the MTA is spared opening a session per message.

    A kept session goes only to a client session of the same route.  With
    XCLIENT it carries the login it was given: a later session of that login
    takes it as it is; another login's takes it after XCLIENT LOGIN=<its
    login>, which restarts the MTA's session (new greeting, the milters'
    connect again, then EHLO).  It is kept only when clean: every command
    answered, no reply of 400 or more, no transaction open (the forwarder
    decides that), under the reuse limits.  It is closed after idle_time
    unused, when the MTA spoke or hung up while it waited, when the pool is
    full, and when the daemon stops.
    """

    def __init__(self) -> None:
        self.idle: list[Upstream] = []
        self.in_use = 0   # handed out, not yet released or dropped
        # The MTA's EHLO, as last seen (None: not yet, or the MTA failed since).
        self.capabilities: Capabilities | None = None
        self.learned = 0.0
        self._probe: asyncio.Task | None = None
        self.closed = False
        # flush() starts a new generation: sessions handed out before it are
        # not taken back (they were opened with the settings of before).
        self.generation = 0
        self._reaper: asyncio.TimerHandle | None = None

    async def acquire(self, route: Route, login: str, limit: int = 0) -> tuple[Upstream, str]:
        """An MTA session ready for login's first command, and how it was
        had: "kept", "switched" (kept, another login's) or "new".  Raises
        UpstreamRefused or UpstreamError when no session could be had.
        limit: the most MTA sessions in use and kept together (0: none);
        kept ones are ended to make room for a new one."""
        up = self._take(route, login)
        if up is not None:
            up.generation = self.generation
            if route.protocol != "xclient" or up.login == login:
                # One that carried no message and waited less than FRESH
                # seconds (had for a greeting: ready()) is as good as new.
                up.untried = up.messages > 0 or asyncio.get_running_loop().time() - up.released >= FRESH
                self._taken(up)
                return up, "kept"
            try:
                if await up.xclient(route.helo, login) is None:
                    self._taken(up)
                    return up, "switched"
            except UpstreamError:
                pass
            except BaseException:  # our client went meanwhile (cancelled)
                up.close()
                raise
            up.close()  # a fresh session will say whether the MTA is ill
        return await self.open(route, login, limit), "new"

    async def open(self, route: Route, login: str, limit: int = 0) -> Upstream:
        """A new MTA session for login (not from the pool)."""
        while limit and self.idle and self.in_use + len(self.idle) >= limit:
            self.idle.pop(0).quit()
        try:
            up = await Upstream.connect(route.path, route.timeout)
        except UpstreamError:
            self.capabilities = None
            raise
        try:
            refusal = await up.handshake(route.helo, login, route.protocol)
        except BaseException:
            self.capabilities = None
            up.close()
            raise
        if refusal is not None:
            self.capabilities = None
            up.close()
            raise UpstreamRefused(refusal)
        up.route, up.generation = route, self.generation
        up.opened = asyncio.get_running_loop().time()
        self._taken(up)
        return up

    def _taken(self, up: Upstream) -> None:
        self.in_use += 1
        self.capabilities, self.learned = up.capabilities, asyncio.get_running_loop().time()

    def drop(self, up: Upstream) -> None:
        """A session handed out broke: end it, keep it not."""
        self.in_use -= 1
        up.close()

    async def ready(self, route: Route, login: str, limits: CacheLimits, limit: int = 0) -> str | None:
        """Before a client's greeting: the MTA's capabilities are known and
        fresh (a session is open or kept, or one was had in the last
        CAPABILITIES_TIME seconds), else one MTA session is had and kept
        for the next transaction.  Clients arriving meanwhile wait for that
        one session rather than open their own.  Returns how the session
        was had to the client that had it, None to the others; raises
        UpstreamRefused or UpstreamError as acquire() does."""
        now = asyncio.get_running_loop().time()
        if self.capabilities is not None and (self.in_use or self.idle or now - self.learned < CAPABILITIES_TIME):
            return None
        mine = self._probe is None
        if mine:
            self._probe = asyncio.get_running_loop().create_task(self._learn(route, login, limits, limit))
            self._probe.add_done_callback(_retrieved)
        how = await asyncio.shield(self._probe)
        return how if mine else None

    async def _learn(self, route: Route, login: str, limits: CacheLimits, limit: int) -> str:
        try:
            up, how = await self.acquire(route, login, limit)
            self.release(up, limits, limit)
            return how
        finally:
            self._probe = None

    def _take(self, route: Route, login: str) -> Upstream | None:
        self._prune()
        choice = None
        for i in range(len(self.idle) - 1, -1, -1):
            up = self.idle[i]
            if up.route != route:
                continue
            if up.login == login or route.protocol != "xclient":
                choice = i
                break
            if choice is None:
                choice = i
        return None if choice is None else self.idle.pop(choice)

    def release(self, up: Upstream, limits: CacheLimits, limit: int = 0) -> None:
        """Keep up for a later client, or end it (QUIT) when it may not be
        kept (limit: as for acquire, the most in use and kept together)."""
        self.in_use -= 1
        now = asyncio.get_running_loop().time()
        if (self.closed or limits.size <= 0 or not up.reusable or not up.quiet() or up.generation != self.generation
                or up.messages >= limits.reuse_count or now - up.opened >= limits.reuse_time
                or (limit and self.in_use + len(self.idle) >= limit)):
            up.quit()
            return
        up.expires, up.released = now + limits.idle_time, now
        self.idle.append(up)
        while len(self.idle) > limits.size:
            self.idle.pop(0).quit()
        self._schedule()

    def _prune(self) -> None:
        now = asyncio.get_running_loop().time()
        keep = []
        for up in self.idle:
            if up.expires > now and up.quiet():
                keep.append(up)
            else:
                up.quit()
        self.idle = keep

    def _schedule(self) -> None:
        if self._reaper is None and self.idle:
            self._reaper = asyncio.get_running_loop().call_at(min(u.expires for u in self.idle), self._reap)

    def _reap(self) -> None:
        self._reaper = None
        self._prune()
        self._schedule()

    def close(self) -> None:
        """The daemon stops: end every kept session, keep no more."""
        self.closed = True
        self.flush()

    def flush(self) -> None:
        """End every kept session, and those in use when they come back (on
        reload: the MTA's settings may have changed too, and a kept session
        runs with those it started with)."""
        self.generation += 1
        self.capabilities = None
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for up in self.idle:
            up.quit()
        self.idle = []


def _retrieved(task: asyncio.Task) -> None:
    """The probe's failure reached its waiters; when they all went, nobody."""
    if not task.cancelled():
        task.exception()
