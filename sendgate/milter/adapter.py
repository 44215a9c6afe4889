"""The pymilter adapter: collect, decide, apply, log.

One PolicyMilter instance serves one MTA connection; per-message state is
reset at MAIL FROM and on abort.  The callbacks before end-of-message only
collect (a loopback client's owner at connect, the envelope sender, the
macros, the recipient count, the header) and never reject, so they are
negotiated as no-reply steps and cost the MTA no round trip; the steps the
policy does not read (HELO, DATA, end of header, body, unknown commands)
are not asked for at all, and the MTA
sends only the macros named in MACROS (an MTA that cannot take a macro list
is refused at negotiation, and applies its default action: tempfail).

At end-of-message, decide() judges what was collected with the pure policy
(sendgate/policy/handoff.py, submission.py, limits.py) and returns a Verdict:
the plan (sendgate/milter/plan.py), its log line and its fix-up counts.
apply() makes the plan's libmilter calls, then the line is logged.

Fail closed: an exception in a no-reply callback cannot refuse anything
there, so it is remembered and end-of-message tempfails the message; an
exception at end-of-message tempfails it at once.  Either way one log line
names the callback and the error.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from dataclasses import dataclass
from email.utils import formatdate

import Milter

from sendgate import replies
from sendgate.daemon import quote
from sendgate.metrics import Metrics
from sendgate.milter import loopback, plan
from sendgate.milter.settings import SettingsSource
from sendgate.policy import fixups, handoff, limits, submission
from sendgate.policy import loopback as loopback_policy
from sendgate.policy.identity import Mode, Principal, mode_for
from sendgate.policy.message import Field
from sendgate.policy.sender import default_address
from sendgate.replies import Reply
from sendgate.userdb import full_name, login_of

log = logging.getLogger("sendgate/milter")


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


# The macros the policy reads, asked for at negotiation so that the MTA
# sends these and no others.  {daemon_name} is a connect macro by default,
# and the connect step is not negotiated, so it is asked for at MAIL.
# The queue id ("i") is asked for at MAIL as well: Sendmail assigns it
# there and does not send it again at end of message when asked.
# At connect, the server's endpoint: with the client's (hostaddr) it names
# a loopback client's socket in /proc/net/tcp (sendgate/milter/loopback.py).
MACROS = {Milter.M_CONNECT: ("{daemon_addr}", "{daemon_port}"), Milter.M_ENVFROM: ("{auth_authen}", "{auth_type}", "{daemon_name}", "i"), Milter.M_EOM: ("i",)}
# The only edits a plan makes: header fields added, inserted, changed,
# deleted, and the envelope sender; the MTA is told not to expect any other.
ACTIONS = Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGFROM | Milter.SETSYMLIST
DISPOSITIONS = {"continue": Milter.CONTINUE, "reject": Milter.REJECT, "tempfail": Milter.TEMPFAIL}


@dataclass(frozen=True)
class Verdict:
    plan: plan.Plan
    level: int                                 # of the log line
    line: str                                  # the message's log line
    fixups: tuple[tuple[str, str], ...] = ()   # for the fix-up counter


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
        self.loopback = False            # the client is on a loopback address
        self.owner: str | None = None    # the login owning its socket, when found
        self.reset()

    def reset(self) -> None:
        self.mail_from = ""
        self.auth_login: str | None = None
        self.auth_type: str | None = None
        self.daemon_name: str | None = None
        self.fields: list[Field] = []
        self.nrcpt = 0
        self.failure: str | None = None
        self.mode = Mode.RELAY

    # --- collect --------------------------------------------------------

    @Milter.noreply
    @collecting
    def connect(self, hostname: str, family: int, hostaddr) -> int:
        """A loopback TCP client's owner, looked up at once, while its socket
        is surely open; the policy judges it at end of message."""
        if family not in (socket.AF_INET, socket.AF_INET6) or not hostaddr:
            return Milter.CONTINUE
        self.loopback = loopback.is_loopback(hostaddr[0])
        if not self.loopback:
            return Milter.CONTINUE
        server, port = self.getsymval("{daemon_addr}"), self.getsymval("{daemon_port}")
        if not server or not (port or "").isdigit():
            log.warning("loopback client [%s]:%s: no {daemon_addr}/{daemon_port} macros, not identified",
                        quote(str(hostaddr[0])), hostaddr[1])
            return Milter.CONTINUE
        uid = loopback.owner((hostaddr[0], int(hostaddr[1])), (server, int(port)))
        self.owner = login_of(uid) if uid is not None else None
        if self.owner is None:
            log.warning("loopback client [%s]:%s to [%s]:%s: socket owner not found", quote(str(hostaddr[0])),
                        hostaddr[1], quote(server), port)
        return Milter.CONTINUE

    @Milter.noreply
    @collecting
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.reset()
        self.settings = self.source.current()
        self.mail_from = mailfrom[1:-1] if mailfrom.startswith("<") and mailfrom.endswith(">") else mailfrom
        self.auth_login = self.getsymval("{auth_authen}")
        self.auth_type = self.getsymval("{auth_type}")
        self.daemon_name = self.getsymval("{daemon_name}")
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

    def abort(self) -> int:
        self.reset()
        return Milter.CONTINUE

    # --- end of message: decide, apply, log -------------------------------

    def eom(self) -> int:
        qid = self.getsymval("i") or "NOQUEUE"
        started = time.perf_counter()
        try:
            if self.failure is not None:
                raise RuntimeError(f"earlier callback failed: {self.failure}")
            verdict = self.decide(qid)
            action = self.apply(verdict.plan)
            self.report(verdict)
        except Exception as err:  # noqa: BLE001 - any failure must fail closed
            log.error("%s: error in end-of-message: %s: %s: tempfail", qid, type(err).__name__, quote(str(err)))
            action = self.apply(plan.refuse(replies.R451_POLICY_ERROR))
        outcome = {Milter.CONTINUE: "accepted", Milter.REJECT: "rejected"}.get(action, "tempfail")
        self.metrics.message("milter", self.mode.value, outcome)
        self.metrics.milter_time(time.perf_counter() - started)
        return action

    def decide(self, qid: str) -> Verdict:
        """Who submitted the message, the policy's decision on it, and the
        rate limit; warnings about the hand-off are logged here."""
        facts = f"from=<{quote(self.mail_from)}> nrcpt={self.nrcpt}"
        local = self.settings.local_daemon_name
        who = handoff.resolve(self.auth_login, self.auth_type, self.daemon_name, local, self.fields,
                              self.settings.sasl_realms)
        if who.source == "ignored":
            log.warning("ignoring login=%s: auth_type=%s on daemon_name=%s, which is not %s",
                        quote(self.auth_login or ""), quote(self.auth_type or ""), quote(self.daemon_name or ""),
                        local)
        if who.refusal is not None:
            return Verdict(plan.refuse(who.refusal), logging.WARNING,
                           f"{qid}: reject: {handoff.IDENTITY_FIELD} field on daemon "
                           f"{quote(self.daemon_name or '?')}: {facts} {who.refusal}")
        if who.remove and who.source != "header":
            log.warning("%s: removed %d %s field(s) from a client: %s", qid, len(who.remove),
                        handoff.IDENTITY_FIELD, facts)
        login = who.login
        if login is None and self.loopback:
            seen = loopback_policy.decide(self.settings.loopback, self.owner)
            if seen.refusal is not None:
                return Verdict(plan.refuse(seen.refusal), logging.WARNING,
                               f"{qid}: reject: loopback client {seen.source}: {facts} {seen.refusal}")
            login = seen.login
        self.mode = mode_for(login)
        if self.mode is Mode.RELAY:
            return Verdict(plan.relay(who.remove), logging.INFO, f"{qid}: relay: {facts}: no fix-ups")
        login = login or ""
        rules = self.settings.rules
        principal = Principal(login, default_address(login, rules), full_name(login))
        # The policy judges the message as it will leave: without the
        # identity field, which the plan removes first so that the
        # positions the policy counts are the MTA's.
        header = [f for f in self.fields if not f.is_(handoff.IDENTITY_FIELD)]
        decision = submission.decide(header, self.mail_from, principal, rules, self.settings.fixups, new_stamp())
        who_facts = f"login={quote(login)} {facts}"
        if decision.reply is not None:
            return Verdict(plan.refuse(decision.reply), logging.INFO, f"{qid}: reject: {who_facts}: {decision.reply}")
        refusal = self.charge_rate(login)
        if refusal is not None:
            return Verdict(plan.refuse(refusal), logging.INFO, f"{qid}: defer: {who_facts}: {refusal}")
        return Verdict(plan.accept(who.remove, decision, self.fields), logging.INFO,
                       f"{qid}: submission: {who_facts} fixups={plan.changes(decision)}: accepted",
                       plan.fixup_counts(decision))

    def charge_rate(self, login: str) -> Reply | None:
        """Count this message for login in the rate store; the refusal when it
        is over a limit (limits.rate_verdict decides, and on the refund)."""
        rates = self.settings.rates
        if not rates.active:
            return None
        start = limits.window_start(time.time(), rates.window)
        charged = limits.charge(self.nrcpt)
        totals = self.settings.store.add(login, start, rates.window, charged.messages, charged.recipients)
        verdict = limits.rate_verdict(login, charged, totals, rates)
        if verdict.refund is not None:
            self.settings.store.add(login, start, rates.window, verdict.refund.messages, verdict.refund.recipients)
        return verdict.refusal

    def apply(self, todo: plan.Plan) -> int:
        """The plan's libmilter calls, in order; its disposition."""
        for action in todo.actions:
            match action:
                case ("addheader", name, value):
                    self.addheader(name, value)
                case ("insheader", index, name, value):
                    self.addheader(name, value, index)
                case ("chgheader", name, index, value):
                    self.chgheader(name, index, value)
                case ("chgfrom", sender, parameters):
                    self.chgfrom(sender, parameters)
                case ("setreply", code, enhanced, text):
                    self.setreply(code, enhanced, text)
                case _:
                    raise ValueError(f"not a milter action: {action!r}")
        return DISPOSITIONS[todo.disposition]

    def report(self, verdict: Verdict) -> None:
        log.log(verdict.level, "%s", verdict.line)
        for action, what in verdict.fixups:
            self.metrics.fixup(action, what)
