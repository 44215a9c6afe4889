"""The submit daemon's settings (SubmitSettings), as main.settings_from()
makes them from sendgate.yaml: each client session takes the ones current
when it connects and keeps them to its end (a reload replaces them whole).
"""

from __future__ import annotations

from dataclasses import dataclass

from sendgate.policy.admission import AdmissionRules
from sendgate.policy.sender import SenderRules
from sendgate.submit_socket.pool import CacheLimits, Route


@dataclass(frozen=True)
class SubmitSettings:
    hostname: str
    upstream_path: str
    upstream_timeout: float
    size_limit: int
    recipient_limit: int
    rules: SenderRules
    admission: AdmissionRules = AdmissionRules()
    command_length_limit: int = 2048
    session_timeout: float = 3600
    idle_timeout: float = 20      # submit_idle_timeout: before MAIL and between transactions
    protocol: str = "xclient"   # submit_upstream_protocol: xclient | header
    cache: CacheLimits = CacheLimits()

    @property
    def route(self) -> Route:
        return Route(self.upstream_path, self.upstream_timeout, self.hostname, self.protocol)
