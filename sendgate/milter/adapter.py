"""The pymilter adapter: callbacks collect, end-of-message decides, edits apply.

One PolicyMilter instance serves one MTA connection; per-message state is
reset at MAIL FROM and on abort.  The callbacks before end-of-message never
reject, so they are negotiated as no-reply steps and cost the MTA no round
trip; the steps the policy does not read (connect, HELO, DATA, end of
header, body, unknown commands) are not asked for at all, and the MTA sends
only the macros named in MACROS (an MTA that cannot take a macro list is
refused at negotiation, and applies its default action: tempfail).  At
end-of-message the pure policy decides and apply turns its Edits into
libmilter actions.

Fail closed: an exception in a no-reply callback cannot refuse anything
there, so it is remembered and end-of-message tempfails the message; an
exception at end-of-message tempfails it at once.  Either way one log line
names the callback and the error.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from email.utils import formatdate

import Milter

from sendgate import replies
from sendgate.daemon import quote
from sendgate.metrics import Metrics
from sendgate.milter.ratestore import RateStore
from sendgate.policy import fixups, handoff, limits
from sendgate.policy.identity import Mode, Principal, mode_for, session_login
from sendgate.policy.message import AddHeader, ChangeHeader, Edit, Field
from sendgate.policy.sender import SenderRules, default_address
from sendgate.policy.submission import decide
from sendgate.userdb import full_name

log = logging.getLogger("sendgate/milter")


@dataclass(frozen=True)
class MilterSettings:
    fixups: fixups.FixupSettings
    rules: SenderRules
    rates: limits.RateLimits
    store: RateStore
    local_daemon_name: str = "sendgate-local"   # where XCLIENT logins and X-Sendgate-Login: count


def collecting(func):
    """For the no-reply callbacks: an exception is logged and remembered, so
    that end-of-message tempfails instead of the message passing unchecked."""
    @functools.wraps(func)
    def wrapper(self, *args):
        try:
            return func(self, *args)
        except Exception as err:  # noqa: BLE001 - any failure must fail closed
            if self.failure is None:
                self.failure = f"{func.__name__}: {type(err).__name__}: {err}"
                log.error("error in %s callback: %s: %s (the message will be tempfailed)",
                          func.__name__, type(err).__name__, quote(str(err)))
            return Milter.CONTINUE
    return wrapper


_date_of_second: tuple[int, str] = (0, "")


def new_stamp() -> fixups.Stamp:
    """The Date: value for now (formatted once a second: formatdate() was a
    tenth of the milter's work per message, bench/) and 128 random bits for
    the Message-ID."""
    global _date_of_second
    now = time.time()
    second, date = _date_of_second
    if int(now) != second:
        date = formatdate(now, localtime=True)
        _date_of_second = (int(now), date)
    return fixups.Stamp(date=date, unique=os.urandom(16).hex())


class SettingsSource:
    """The milter's settings, read again when the configuration file changes.

    libmilter owns SIGHUP (it stops the milter), so a reload cannot be a
    signal.  Instead each message (at MAIL) asks for the settings, and the
    file is looked at (stat) at most once a second: an edited file takes
    effect on the next message, also in an MTA session that stays open
    (the submit daemon keeps its MTA sessions for the next client).  A file that does not pass the check is
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


# The macros the policy reads, asked for at negotiation so that the MTA
# sends these and no others.  {daemon_name} is a connect macro by default,
# and the connect step is not negotiated, so it is asked for at MAIL.
# The queue id ("i") is asked for at MAIL as well: Sendmail assigns it
# there and does not send it again at end of message when asked.
MACROS = {Milter.M_ENVFROM: ("{auth_authen}", "{auth_type}", "{daemon_name}", "i"), Milter.M_EOM: ("i",)}
# The only edits the policy makes: header fields added, changed, deleted,
# and the envelope sender; the MTA is told not to expect any other.
ACTIONS = Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGFROM | Milter.SETSYMLIST


class PolicyMilter(Milter.Base):
    source: SettingsSource  # set once by main() before the milter starts
    metrics = Metrics()     # replaced by main() when milter_metrics_listen is set

    def negotiate(self, opts: list[int]) -> int:
        """Base.negotiate asks for no-reply and skipped steps from the
        decorators; the macro lists are set here because pymilter 1.0.5's
        @symlist passes libmilter bytes where it needs str, which would make
        Base.negotiate fall back to every step with a reply."""
        rc = super().negotiate(opts)
        if rc == Milter.CONTINUE:
            opts[0] = self._actions = self._actions & ACTIONS
            if not self._actions & Milter.SETSYMLIST:
                raise Milter.DisabledAction("SETSYMLIST")
            for stage, names in MACROS.items():
                self._ctx.setsymlist(stage, " ".join(names))
        return rc

    def __init__(self) -> None:
        self.settings = self.source.current()
        self.reset()

    def reset(self) -> None:
        self.mail_from = ""
        self.login: str | None = None
        self.fields: list[Field] = []
        self.nrcpt = 0
        self.failure: str | None = None
        self.mode = Mode.RELAY

    @Milter.noreply
    @collecting
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.reset()
        self.settings = self.source.current()
        self.mail_from = mailfrom[1:-1] if mailfrom.startswith("<") and mailfrom.endswith(">") else mailfrom
        auth_type, daemon = self.getsymval("{auth_type}"), self.getsymval("{daemon_name}")
        self.login = session_login(self.getsymval("{auth_authen}"), auth_type, daemon,
                                   self.settings.local_daemon_name)
        if self.login is None and self.getsymval("{auth_authen}"):
            log.warning("ignoring login=%s: auth_type=%s on daemon_name=%s, which is not %s",
                        quote(self.getsymval("{auth_authen}")), quote(auth_type or ""), quote(daemon or ""),
                        self.settings.local_daemon_name)
        return Milter.CONTINUE

    @Milter.noreply
    @collecting
    def envrcpt(self, to: str, *params: str) -> int:
        self.nrcpt += 1
        return Milter.CONTINUE

    @Milter.noreply
    @collecting
    def header(self, name: str, value: str) -> int:
        self.fields.append(Field(name, value))
        return Milter.CONTINUE

    def eom(self) -> int:
        qid = self.getsymval("i") or "NOQUEUE"
        started = time.perf_counter()
        try:
            if self.failure is not None:
                raise RuntimeError(f"earlier callback failed: {self.failure}")
            action = self.decide(qid)
        except Exception as err:  # noqa: BLE001 - any failure must fail closed
            log.error("%s: error in end-of-message: %s: %s: tempfail", qid, type(err).__name__, quote(str(err)))
            action = self.refuse(replies.R451_POLICY_ERROR)
        outcome = {Milter.CONTINUE: "accepted", Milter.REJECT: "rejected"}.get(action, "tempfail")
        self.metrics.message("milter", self.mode.value, outcome)
        self.metrics.milter_time(time.perf_counter() - started)
        return action

    def refuse(self, reply) -> int:
        self.setreply(str(reply.code), reply.enhanced, reply.text.replace("%", "%%"))
        return Milter.TEMPFAIL if reply.temporary else Milter.REJECT

    def remove_identity(self, who: handoff.HandOff) -> None:
        for occurrence in who.remove:
            self.chgheader(handoff.IDENTITY_FIELD, occurrence, "")

    def rate_refusal(self, login: str):
        """Count this message for login; the refusal when it is over a limit."""
        rates = self.settings.rates
        if not rates.active:
            return None
        start = limits.window_start(time.time(), rates.window)
        usage = self.settings.store.add(login, start, rates.window, 1, self.nrcpt)
        refusal = limits.check_rate(login, usage, rates)
        if refusal is not None:
            self.settings.store.add(login, start, rates.window, -1, -self.nrcpt)
        return refusal

    def decide(self, qid: str) -> int:
        facts = f"from=<{quote(self.mail_from)}> nrcpt={self.nrcpt}"
        who = handoff.resolve(self.login, self.getsymval("{daemon_name}"),
                              self.settings.local_daemon_name, self.fields)
        if who.refusal is not None:
            log.warning("%s: reject: %s field on daemon %s: %s %s", qid, handoff.IDENTITY_FIELD,
                        quote(self.getsymval("{daemon_name}") or "?"), facts, who.refusal)
            return self.refuse(who.refusal)
        if who.remove and who.source != "header":
            log.warning("%s: removed %d %s field(s) from a client: %s", qid, len(who.remove),
                        handoff.IDENTITY_FIELD, facts)
        self.mode = mode_for(who.login)
        if self.mode is Mode.RELAY:
            self.remove_identity(who)
            log.info("%s: relay: %s: no fix-ups", qid, facts)
            return Milter.CONTINUE
        login = who.login or ""
        rules = self.settings.rules
        principal = Principal(login, default_address(login, rules), full_name(login))
        # The policy judges the message as it will leave: without the
        # identity field, which goes first so that the positions it counts
        # are the MTA's.
        fields = [f for f in self.fields if not f.is_(handoff.IDENTITY_FIELD)]
        decision = decide(fields, self.mail_from, principal, rules, self.settings.fixups, new_stamp())
        if decision.reply is not None:
            log.info("%s: reject: login=%s %s: %s", qid, quote(login), facts, decision.reply)
            return self.refuse(decision.reply)
        refusal = self.rate_refusal(login)
        if refusal is not None:
            log.info("%s: defer: login=%s %s: %s", qid, quote(login), facts, refusal)
            return self.refuse(refusal)
        self.remove_identity(who)
        if decision.new_sender is not None:
            # No ESMTP parameters, sent as an empty string: the 8.14 protocol
            # allows leaving them out, but some MTA-side decoders want both.
            self.chgfrom(f"<{decision.new_sender}>", "")
        self.apply(list(decision.edits))
        for edit in decision.edits:
            action = "add" if isinstance(edit, AddHeader) else ("change" if edit.value else "delete")
            self.metrics.fixup(action, edit.name)
        if decision.new_sender is not None:
            self.metrics.fixup("rewrite", "envelope-sender")
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
        for position, edit in enumerate(edits):
            if isinstance(edit, AddHeader) and edit.index is None:
                self.addheader(edit.name, edit.value)
            elif isinstance(edit, AddHeader):
                # The policy's index is a 0-based position among the fields
                # the milter saw.  Postfix and Sendmail count insert positions
                # after their own Received: (index 0 would go above it, 1 just
                # below it), so position p is index p + 1; each field we
                # insert moves the next one down, keeping the policy's order.
                inserted += 1
                self.addheader(edit.name, edit.value, edit.index + inserted)
                # Sendmail's header templates (Date:, From:, Message-Id: and
                # their Resent- variants) stay beside an inserted field, where
                # an appended one replaces them.  Deleting the occurrence after
                # the last one the message has removes that default (a no-op
                # on Postfix, which has none).
                have = sum(1 for f in self.fields if f.is_(edit.name))
                have += sum(1 for e in edits[:position + 1]
                            if isinstance(e, AddHeader) and e.name.lower() == edit.name.lower())
                self.chgheader(edit.name, have + 1, "")
            elif isinstance(edit, ChangeHeader):
                self.chgheader(edit.name, edit.occurrence, edit.value)


def describe(edit: Edit) -> str:
    if isinstance(edit, AddHeader):
        return f"+{edit.name}"
    return f"-{edit.name}" if not edit.value else f"~{edit.name}"
