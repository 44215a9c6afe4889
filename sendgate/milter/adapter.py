"""The pymilter adapter: callbacks collect, end-of-message decides, edits apply.

One PolicyMilter instance serves one MTA connection; per-message state is
reset at MAIL FROM and on abort.  The callbacks before end-of-message never
reject, so they are negotiated as no-reply steps and cost the MTA no round
trip.  At end-of-message one pure policy call decides and apply_edits turns its
Edits into libmilter actions.
"""

from __future__ import annotations

import logging
import pwd
import uuid
from dataclasses import dataclass
from email.utils import formatdate

import Milter

from sendgate.daemon import quote
from sendgate.policy import fixups, handoff
from sendgate.policy.identity import Mode, Principal, mode_for
from sendgate.policy.message import AddHeader, ChangeHeader, Edit, Field
from sendgate.policy.sender import SenderRules, check_envelope_sender, default_address

log = logging.getLogger("sendgate/milter")


@dataclass(frozen=True)
class MilterSettings:
    fixups: fixups.FixupSettings
    rules: SenderRules
    local_daemon_name: str = "sendgate-local"   # where an X-Sendgate-Login: field is trusted


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


class PolicyMilter(Milter.Base):
    settings: MilterSettings  # set once by main() before the milter starts

    def __init__(self) -> None:
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
        who = handoff.resolve(self.login, self.getsymval("{daemon_name}"),
                              self.settings.local_daemon_name, self.fields)
        if who.refusal is not None:
            log.warning("%s: reject: %s field on daemon %s: %s %s", qid, handoff.IDENTITY_FIELD,
                        quote(self.getsymval("{daemon_name}") or "?"), facts, who.refusal)
            return self.refuse(who.refusal)
        if who.remove and who.source != "header":
            log.warning("%s: removed %d %s field(s) from a client: %s", qid, len(who.remove),
                        handoff.IDENTITY_FIELD, facts)
        mode = mode_for(who.login)
        if mode is Mode.RELAY:
            self.remove_identity(who)
            log.info("%s: relay: %s: no fix-ups", qid, facts)
            return Milter.CONTINUE
        login = who.login or ""
        rules = self.settings.rules
        refusal = check_envelope_sender(login, self.mail_from, rules)
        if refusal is not None:
            log.info("%s: reject: login=%s %s: %s", qid, quote(login), facts, refusal)
            return self.refuse(refusal)
        principal = Principal(login, default_address(login, rules), full_name(login))
        edits = fixups.submission_fixups(self.fields, principal, self.settings.fixups, new_stamp())
        self.apply(edits)
        # Last, so that the positions the fix-ups counted still hold.
        self.remove_identity(who)
        changed = ",".join(describe(e) for e in edits) or "none"
        log.info("%s: submission: login=%s %s fixups=%s: accepted", qid, quote(login), facts, changed)
        return Milter.CONTINUE

    def refuse(self, reply) -> int:
        self.setreply(str(reply.code), reply.enhanced, reply.text.replace("%", "%%"))
        return Milter.TEMPFAIL if reply.temporary else Milter.REJECT

    def remove_identity(self, who: handoff.HandOff) -> None:
        for occurrence in who.remove:
            self.chgheader(handoff.IDENTITY_FIELD, occurrence, "")

    def abort(self) -> int:
        self.reset()
        return Milter.CONTINUE

    def apply(self, edits: list[Edit]) -> None:
        inserted = 0
        for position, edit in enumerate(edits):
            if isinstance(edit, AddHeader) and edit.index is None:
                self.addheader(edit.name, edit.value)
            elif isinstance(edit, AddHeader):
                # Postfix and Sendmail count insert positions after their own
                # Received: (index 0 would go above it, 1 below it); keep our
                # fields in the order the policy gave them.
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
