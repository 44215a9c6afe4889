"""The kept MTA sessions (UpstreamPool): MTA sessions left open by a client
session that ended clean, for the next client session of the same Route,
within the limits of CacheLimits (Postfix's SMTP client connection cache).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sendgate.submit_socket.upstream import Upstream, UpstreamError, UpstreamRefused


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
        self.closed = False
        # flush() starts a new generation: sessions handed out before it are
        # not taken back (they were opened with the settings of before).
        self.generation = 0
        self._reaper: asyncio.TimerHandle | None = None

    async def acquire(self, route: Route, login: str) -> tuple[Upstream, str]:
        """An MTA session ready for login's first command, and how it was
        had: "kept", "switched" (kept, another login's) or "new".  Raises
        UpstreamRefused or UpstreamError when no session could be had."""
        up = self._take(route, login)
        if up is not None:
            up.generation = self.generation
            if route.protocol != "xclient" or up.login == login:
                up.untried = True
                return up, "kept"
            try:
                if await up.xclient(route.helo, login) is None:
                    return up, "switched"
            except UpstreamError:
                pass
            except BaseException:  # our client went meanwhile (cancelled)
                up.close()
                raise
            up.close()  # a fresh session will say whether the MTA is ill
        return await self.open(route, login), "new"

    async def open(self, route: Route, login: str) -> Upstream:
        """A new MTA session for login (not from the pool)."""
        up = await Upstream.connect(route.path, route.timeout)
        try:
            refusal = await up.handshake(route.helo, login, route.protocol)
        except BaseException:
            up.close()
            raise
        if refusal is not None:
            up.close()
            raise UpstreamRefused(refusal)
        up.route, up.generation = route, self.generation
        up.opened = asyncio.get_running_loop().time()
        return up

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

    def release(self, up: Upstream, limits: CacheLimits) -> None:
        """Keep up for a later client, or end it (QUIT) when it may not be kept."""
        now = asyncio.get_running_loop().time()
        if (self.closed or limits.size <= 0 or not up.reusable or not up.quiet() or up.generation != self.generation
                or up.messages >= limits.reuse_count or now - up.opened >= limits.reuse_time):
            up.quit()
            return
        up.expires = now + limits.idle_time
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
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for up in self.idle:
            up.quit()
        self.idle = []
