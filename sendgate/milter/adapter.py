"""The pymilter adapter: callbacks collect, end-of-message decides, edits apply.

One PolicyMilter instance serves one MTA connection; per-message state is
reset at MAIL FROM and on abort.  The callbacks before end-of-message never
reject, so they are negotiated as no-reply steps and cost the MTA no round
trip.  At end-of-message one pure policy call decides and apply_edits turns its
Edits into libmilter actions.
"""

from __future__ import annotations

import logging
import os
import pwd
import time
import uuid
from dataclasses import dataclass
from email.utils import formatdate

import Milter

from sendgate.daemon import quote
from sendgate.policy import fixups
from sendgate.policy.identity import Mode, Principal, mode_for
from sendgate.policy.message import AddHeader, ChangeHeader, Edit, Field
from sendgate.policy.sender import SenderRules, default_address
from sendgate.policy.submission import decide

log = logging.getLogger("sendgate/milter")


@dataclass(frozen=True)
class MilterSettings:
    fixups: fixups.FixupSettings
    rules: SenderRules


def full_name(login: str) -> str:
    """The GECOS full name of a local login, '' for SASL-only users."""
    try:
        gecos = pwd.getpwnam(login).pw_gecos
    except KeyError:
        return ""
    name = gecos.split(",", 1)[0]
    return name.replace("&", login.capitalize())


def new_stamp() -> fixups.Stamp:
    return fixups.Stamp(date=formatdate(localtime=True), unique=uuid.uuid4().hex)


class SettingsSource:
    """The milter's settings, read again when the configuration file changes.

    libmilter owns SIGHUP (it stops the milter), so a reload cannot be a
    signal.  Instead each new MTA connection asks for the settings, and the
    file is looked at (stat) at most once a second: an edited file takes
    effect on the next connection.  A file that does not pass the check is
    logged once and ignored; the running settings stay.
    """

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


class PolicyMilter(Milter.Base):
    source: SettingsSource  # set once by main() before the milter starts

    def __init__(self) -> None:
        self.settings = self.source.current()
        self.reset()

    def reset(self) -> None:
        self.mail_from = ""
        self.login: str | None = None
        self.fields: list[Field] = []
        self.nrcpt = 0

    @Milter.noreply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.reset()
        self.mail_from = mailfrom[1:-1] if mailfrom.startswith("<") and mailfrom.endswith(">") else mailfrom
        self.login = self.getsymval("{auth_authen}") or None
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, to: str, *params: str) -> int:
        self.nrcpt += 1
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        self.fields.append(Field(name, value))
        return Milter.CONTINUE

    def eom(self) -> int:
        qid = self.getsymval("i") or "NOQUEUE"
        facts = f"from=<{quote(self.mail_from)}> nrcpt={self.nrcpt}"
        if mode_for(self.login) is Mode.RELAY:
            log.info("%s: relay: %s: no fix-ups", qid, facts)
            return Milter.CONTINUE
        login = self.login or ""
        rules = self.settings.rules
        principal = Principal(login, default_address(login, rules), full_name(login))
        decision = decide(self.fields, self.mail_from, principal, rules, self.settings.fixups, new_stamp())
        if decision.reply is not None:
            refusal = decision.reply
            log.info("%s: reject: login=%s %s: %s", qid, quote(login), facts, refusal)
            self.setreply(str(refusal.code), refusal.enhanced, refusal.text.replace("%", "%%"))
            return Milter.REJECT
        if decision.new_sender is not None:
            self.chgfrom(f"<{decision.new_sender}>")
        self.apply(list(decision.edits))
        changed = [describe(e) for e in decision.edits]
        if decision.new_sender is not None:
            changed.append(f"sender=<{decision.new_sender}>")
        log.info("%s: submission: login=%s %s fixups=%s: accepted", qid, quote(login), facts,
                 ",".join(changed) or "none")
        return Milter.CONTINUE

    def abort(self) -> int:
        self.reset()
        return Milter.CONTINUE

    def apply(self, edits: list[Edit]) -> None:
        inserted = 0
        for edit in edits:
            if isinstance(edit, AddHeader) and edit.index is None:
                self.addheader(edit.name, edit.value)
            elif isinstance(edit, AddHeader):
                # The policy's index is a 0-based position among the fields
                # the milter saw.  Postfix counts insert positions from its
                # own hidden Received: (index 0 would go above it, 1 just
                # below it), so position p is index p + 1; each field we
                # insert moves the next one down, keeping the policy's order.
                inserted += 1
                self.addheader(edit.name, edit.value, edit.index + inserted)
            elif isinstance(edit, ChangeHeader):
                self.chgheader(edit.name, edit.occurrence, edit.value)


def describe(edit: Edit) -> str:
    if isinstance(edit, AddHeader):
        return f"+{edit.name}"
    return f"-{edit.name}" if not edit.value else f"~{edit.name}"
