"""Optional Prometheus metrics for the daemons.

Off unless submit_metrics_listen / milter_metrics_listen is set; then an
HTTP endpoint serves /metrics on that address (loopback when only a port is
given).  Each daemon exports what it alone knows:

  sendgate_messages_total{daemon, mode, outcome}  messages decided
  sendgate_fixups_total{action, field}            milter header edits
  sendgate_sessions_open                          submit sessions now
  sendgate_upstream_sessions_total{how}           MTA sessions a client session got:
                                                  new, kept (from the pool), switched
                                                  (kept, passed to another login)
  sendgate_upstream_seconds                       MTA taking the message (DATA or BDAT)
  sendgate_milter_seconds                         milter end-of-message work
"""

from __future__ import annotations

import logging


class Metrics:
    """Records when an endpoint was started; a no-op otherwise."""

    def __init__(self, registry=None):
        self.enabled = registry is not None
        if not self.enabled:
            return
        from prometheus_client import Counter, Gauge, Histogram
        self._messages = Counter("sendgate_messages", "Messages decided", ["daemon", "mode", "outcome"],
                                 registry=registry)
        self._fixups = Counter("sendgate_fixups", "Header edits by the milter", ["action", "field"], registry=registry)
        self._sessions = Gauge("sendgate_sessions_open", "Submit sessions open", registry=registry)
        self._upstream_sessions = Counter("sendgate_upstream_sessions", "MTA sessions given to client sessions",
                                          ["how"], registry=registry)
        self._upstream = Histogram("sendgate_upstream_seconds", "Time for the MTA to take a message (DATA or BDAT) and answer",
                                   registry=registry)
        self._milter = Histogram("sendgate_milter_seconds", "Time for the milter's end-of-message decision",
                                 registry=registry)

    @classmethod
    def start(cls, listen: str, log: logging.Logger) -> "Metrics":
        if not listen:
            return cls()
        from prometheus_client import CollectorRegistry, start_http_server
        host, _, port = listen.rpartition(":")
        registry = CollectorRegistry()
        metrics = cls(registry)
        start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
        log.info("metrics on http://%s:%s/metrics", host or "127.0.0.1", port)
        return metrics

    def message(self, daemon: str, mode: str, outcome: str) -> None:
        if self.enabled:
            self._messages.labels(daemon, mode, outcome).inc()

    def fixup(self, action: str, field: str) -> None:
        if self.enabled:
            self._fixups.labels(action, field).inc()

    def sessions(self, change: int) -> None:
        if self.enabled:
            self._sessions.inc(change)

    def upstream_session(self, how: str) -> None:
        if self.enabled:
            self._upstream_sessions.labels(how).inc()

    def upstream_time(self, seconds: float) -> None:
        if self.enabled:
            self._upstream.observe(seconds)

    def milter_time(self, seconds: float) -> None:
        if self.enabled:
            self._milter.observe(seconds)
