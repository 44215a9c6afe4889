"""The milter's settings: what it reads from sendgate.yaml, and the reload.

libmilter owns SIGHUP (it stops the milter), so a reload cannot be a
signal.  Instead the adapter asks SettingsSource for the settings at each new
MTA connection and at each message (MAIL), and the file is looked at (stat)
at most once a second: an edited file takes effect on the next message, also
in an MTA session that stays open (the submit daemon keeps its MTA sessions
for the next client).  A file that does not pass the check is logged once
and ignored; the running settings stay.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from sendgate.milter.ratestore import RateStore
from sendgate.policy.fixups import FixupSettings
from sendgate.policy.limits import RateLimits
from sendgate.policy.loopback import LoopbackMode
from sendgate.policy.sender import SenderRules

log = logging.getLogger("sendgate/milter")


@dataclass(frozen=True)
class MilterSettings:
    fixups: FixupSettings
    rules: SenderRules
    rates: RateLimits
    store: RateStore
    local_daemon_name: str   # where XCLIENT logins and X-Sendgate-Login: count
    sasl_realms: tuple[str, ...] = ()  # SASL logins user@REALM that are the local user
    loopback: LoopbackMode = LoopbackMode.IDENTIFY   # loopback TCP clients without a login


def settings_from(cfg, store: RateStore) -> MilterSettings:
    """The settings in a loaded configuration (sendgate.config.Config); the
    rate store is the running one (rate_store needs a restart)."""
    return MilterSettings(
        fixups=cfg.fixup_settings(),
        rules=cfg.sender_rules(),
        rates=RateLimits(window=cfg.rate_window, messages=cfg.rate_message_limit,
                         recipients=cfg.rate_recipient_limit),
        store=store,
        local_daemon_name=cfg.milter_local_daemon_name,
        sasl_realms=cfg.sasl_realms,
        loopback=LoopbackMode(cfg.milter_loopback_clients),
    )


class SettingsSource:
    """The milter's settings, read again when the configuration file changes."""

    def __init__(self, path: str, settings: MilterSettings, load, clock=time.monotonic):
        self.path, self.settings, self.load, self.clock = path, settings, load, clock
        self.seen = self._stamp()
        self.checked = clock()

    def _stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> MilterSettings:
        now = self.clock()
        if now - self.checked >= 1.0:
            self.checked = now
            stamp = self._stamp()
            if stamp != self.seen:
                self.seen = stamp
                try:
                    self.settings = self.load(self.path)
                    log.info("reloaded %s", self.path)
                except Exception as err:  # a bad edit must not stop the mail
                    log.error("reload failed, keeping the running configuration: %s", err)
        return self.settings
