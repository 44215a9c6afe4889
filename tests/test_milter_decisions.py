"""The milter's decisions, from the MTA's facts to the exact packets and the
exact log line, without an MTA.

Each case runs one message through sendgate.milter.adapter.PolicyMilter on
pymilter's test context (tests/miltermta.py ContextMTA): the macros the MTA
would send, the envelope, the header.  It asserts every packet the MTA would
receive at end-of-message (ADDHEADER, INSHEADER, CHGHEADER, CHGFROM, then
CONTINUE or the REPLYCODE of a refusal) and every line the milter logs, as
sendgate.daemon's formatter writes it to syslog.  The user's full name and the
Date:/Message-ID: values are fixed here; everything else is the real code.
tests/test_milter_protocol.py checks the same mapping on a running milter.
"""

from __future__ import annotations

import logging
import os

import Milter
import pytest

from miltermta import ContextMTA
from sendgate.daemon import _PostfixFormatter
from sendgate.milter import adapter
from sendgate.milter.adapter import PolicyMilter
from sendgate.milter.ratestore import MemoryStore
from sendgate.milter.settings import MilterSettings, SettingsSource
from sendgate.policy.fixups import FixupSettings, Stamp
from sendgate.policy.limits import RateLimits
from sendgate.policy.sender import Mismatch, SenderRules

DATE = "Mon, 30 Nov 2026 10:00:00 +0000"
UNIQUE = "0123456789abcdef0123456789abcdef"
ME = "Alice Example <alice@example.org>"
LIMITS = RateLimits(window=3600, messages=5, recipients=3)

SASL = {"{auth_authen}": "alice", "{auth_type}": "PLAIN", "{daemon_name}": "sendgate-submission"}
XCLIENT = {"{auth_authen}": "alice", "{auth_type}": "XCLIENT", "{daemon_name}": "sendgate-local"}
XCLIENT_ELSEWHERE = {"{auth_authen}": "alice", "{auth_type}": "XCLIENT", "{daemon_name}": "sendgate-submission"}
SENDMAIL_LOCAL = {"{daemon_name}": "sendgate-local"}
INBOUND = {"{daemon_name}": "inbound"}
COMPLETE = [("Date", DATE), ("Message-ID", "<a@example.org>"), ("From", "alice@example.org")]
PID = f"[{os.getpid()}]"


class Run:
    """The milter class set up on a fresh rate store, with rules and
    fix-up switches as the case wants."""

    def __init__(self, monkeypatch, **rules) -> None:
        self.store = MemoryStore()
        settings = MilterSettings(
            fixups=FixupSettings(hostname="mail.example.org", domain="example.org"),
            rules=SenderRules(domain="example.org", **rules), rates=LIMITS, store=self.store,
            local_daemon_name="sendgate-local")
        monkeypatch.setattr(PolicyMilter, "source", SettingsSource("/nonexistent/sendgate.yaml", settings, load=None),
                            raising=False)
        monkeypatch.setattr(Milter, "factory", PolicyMilter)
        monkeypatch.setattr(adapter, "full_name", lambda login: "Alice Example")
        monkeypatch.setattr(adapter, "new_stamp", lambda: Stamp(date=DATE, unique=UNIQUE))
        self.mta = ContextMTA()


def log_lines(caplog) -> list[str]:
    """The milter's records as syslog lines, the pid shown as [PID]."""
    formatter = _PostfixFormatter("sendgate/milter", with_time=False)
    return [formatter.format(r).replace(PID, "[PID]", 1) for r in caplog.records if r.name == "sendgate/milter"]


def line(text: str) -> str:
    return f"sendgate/milter[PID]: {text}"


CASES = [
    pytest.param(
        SASL, {}, "alice@example.org", ["bob@example.net"], [("To", "bob@example.net"), ("Subject", "hi")],
        [("ADDHEADER", "Date", DATE), ("ADDHEADER", "Message-ID", f"<{UNIQUE}@mail.example.org>"),
         ("ADDHEADER", "From", ME), ("CONTINUE",)],
        [line("QUEUEID: submission: login=alice from=<alice@example.org> nrcpt=1 "
              "fixups=+Date,+Message-ID,+From: accepted")],
        id="accepted-with-fixups"),
    pytest.param(
        SASL, {}, "alice@example.org", ["bob@example.net"], COMPLETE, [("CONTINUE",)],
        [line("QUEUEID: submission: login=alice from=<alice@example.org> nrcpt=1 fixups=none: accepted")],
        id="accepted-complete-no-edits"),
    pytest.param(
        SASL, {}, "alice@example.org", ["bob@example.net"],
        [("Date", DATE), ("Message-ID", "<a@b>"), ("From", "Carol <carol@example.net>")],
        [("ADDHEADER", "Sender", ME), ("CONTINUE",)],
        [line("QUEUEID: submission: login=alice from=<alice@example.org> nrcpt=1 fixups=+Sender: accepted")],
        id="foreign-from-appends-sender"),
    pytest.param(
        SASL, {}, "alice@example.org", ["bob@example.net"], [*COMPLETE[:2], ("From", "carol@example.net"),
                                                             ("Sender", "root@example.org")],
        [("CHGHEADER", 1, "Sender", ME), ("CONTINUE",)],
        [line("QUEUEID: submission: login=alice from=<alice@example.org> nrcpt=1 fixups=~Sender: accepted")],
        id="forged-sender-changed"),
    pytest.param(
        SASL, {}, "alice@example.org", ["bob@example.net"],
        [*COMPLETE, ("Sender", "root@example.org"), ("Sender", "x@example.org")],
        [("CHGHEADER", 2, "Sender", ""), ("CHGHEADER", 1, "Sender", ""), ("CONTINUE",)],
        [line("QUEUEID: submission: login=alice from=<alice@example.org> nrcpt=1 "
              "fixups=-Sender,-Sender: accepted")],
        id="forged-senders-deleted-highest-first"),
    pytest.param(
        SASL, {}, "alice@example.org", ["bob@example.net"],
        [*COMPLETE, ("To", "bob, Carol <carol@example.net>"), ("Bcc", "hidden@example.net")],
        [("CHGHEADER", 1, "To", "bob@example.org, Carol <carol@example.net>"), ("CHGHEADER", 1, "Bcc", ""),
         ("CONTINUE",)],
        [line("QUEUEID: submission: login=alice from=<alice@example.org> nrcpt=1 fixups=~To,-Bcc: accepted")],
        id="unqualified-to-changed-bcc-deleted"),
    pytest.param(
        SASL, {}, "alice@example.org", ["dave@example.net"],
        [("Resent-To", "dave@example.net"), ("From", "carol@example.net"), ("Date", DATE), ("Message-ID", "<a@b>")],
        # Each insert is followed by the deletion of the occurrence after
        # it, which removes Sendmail's own header template copy.
        [("INSHEADER", 1, "Resent-Date", DATE), ("CHGHEADER", 2, "Resent-Date", ""),
         ("INSHEADER", 2, "Resent-Message-ID", f"<{UNIQUE}@mail.example.org>"),
         ("CHGHEADER", 2, "Resent-Message-ID", ""),
         ("INSHEADER", 3, "Resent-From", ME), ("CHGHEADER", 2, "Resent-From", ""), ("CONTINUE",)],
        [line("QUEUEID: submission: login=alice from=<alice@example.org> nrcpt=1 "
              "fixups=+Resent-Date,+Resent-Message-ID,+Resent-From: accepted")],
        id="resent-fields-inserted-at-the-top"),
    pytest.param(
        SASL, {"envelope_mismatch": Mismatch.REWRITE}, "carol@example.net", ["bob@example.net"], COMPLETE,
        [("CHGFROM", "<alice@example.org>"), ("CONTINUE",)],
        [line("QUEUEID: submission: login=alice from=<carol@example.net> nrcpt=1 "
              "fixups=sender=<alice@example.org>: accepted")],
        id="envelope-sender-rewritten"),
    pytest.param(
        SASL, {}, "bob@example.org", ["bob@example.net"], COMPLETE,
        [("REPLYCODE", "553 5.7.1 <bob@example.org>: Sender address rejected: not owned by user alice")],
        [line("QUEUEID: reject: login=alice from=<bob@example.org> nrcpt=1: "
              "553 5.7.1 <bob@example.org>: Sender address rejected: not owned by user alice")],
        id="refused-sender"),
    pytest.param(
        SASL, {}, "a%b@example.org", ["bob@example.net"], COMPLETE,
        # libmilter takes the reply text as a format: the % is doubled there.
        [("REPLYCODE", "553 5.7.1 <a%%b@example.org>: Sender address rejected: not owned by user alice")],
        [line("QUEUEID: reject: login=alice from=<a%b@example.org> nrcpt=1: "
              "553 5.7.1 <a%b@example.org>: Sender address rejected: not owned by user alice")],
        id="refused-sender-percent-doubled-for-libmilter"),
    pytest.param(
        SASL, {"from_mismatch": Mismatch.REJECT}, "alice@example.org", ["bob@example.net"],
        [*COMPLETE[:2], ("From", "carol@example.net")],
        [("REPLYCODE", "550 5.7.1 <carol@example.net>: From address rejected: not owned by user alice")],
        [line("QUEUEID: reject: login=alice from=<alice@example.org> nrcpt=1: "
              "550 5.7.1 <carol@example.net>: From address rejected: not owned by user alice")],
        id="refused-from"),
    pytest.param(
        SASL, {}, "alice@example.org", ["bob@example.net"], [*COMPLETE, ("From", "alice@example.org")],
        [("REPLYCODE", "554 5.6.0 From: header field appears more than once")],
        [line("QUEUEID: reject: login=alice from=<alice@example.org> nrcpt=1: "
              "554 5.6.0 From: header field appears more than once")],
        id="refused-header"),
    pytest.param(
        SASL, {}, "alice@example.org", ["a@example.net", "b@example.net", "c@example.net", "d@example.net"], COMPLETE,
        [("REPLYCODE", "451 4.7.1 Error: too many recipients from user alice: at most 3 per 3600 seconds, "
                       "try again later")],
        [line("QUEUEID: defer: login=alice from=<alice@example.org> nrcpt=4: 451 4.7.1 Error: too many recipients "
              "from user alice: at most 3 per 3600 seconds, try again later")],
        id="rate-refusal"),
    pytest.param(
        {}, {}, "carol@example.net", ["bob@example.org"], [("From", "carol@example.net"), ("Subject", "hi")],
        [("CONTINUE",)],
        [line("QUEUEID: relay: from=<carol@example.net> nrcpt=1: no fix-ups")],
        id="relay-no-fixups"),
    pytest.param(
        INBOUND, {}, "carol@example.net", ["bob@example.org"], [("X-Sendgate-Login", "alice"), ("Subject", "hi")],
        [("CHGHEADER", 1, "X-Sendgate-Login", ""), ("CONTINUE",)],
        [line("warning: QUEUEID: removed 1 X-Sendgate-Login field(s) from a client: "
              "from=<carol@example.net> nrcpt=1"),
         line("QUEUEID: relay: from=<carol@example.net> nrcpt=1: no fix-ups")],
        id="relay-identity-field-of-a-client-removed"),
    pytest.param(
        XCLIENT_ELSEWHERE, {}, "alice@example.org", ["bob@example.net"], [("Subject", "hi")],
        [("CONTINUE",)],
        [line("warning: ignoring login=alice: auth_type=XCLIENT on daemon_name=sendgate-submission, "
              "which is not sendgate-local"),
         line("QUEUEID: relay: from=<alice@example.org> nrcpt=1: no fix-ups")],
        id="xclient-login-on-another-service-relayed"),
    pytest.param(
        XCLIENT, {}, "alice@example.org", ["bob@example.net"], [*COMPLETE[:2], ("From", "carol@example.net")],
        [("ADDHEADER", "Sender", ME), ("CONTINUE",)],
        [line("QUEUEID: submission: login=alice from=<alice@example.org> nrcpt=1 fixups=+Sender: accepted")],
        id="xclient-login-on-the-local-service"),
    pytest.param(
        SENDMAIL_LOCAL, {}, "alice@example.org", ["bob@example.net"],
        [("X-Sendgate-Login", "alice"), ("Subject", "hi")],
        # The identity field goes first: the policy's positions are counted
        # without it, as the MTA counts them after the deletion.
        [("CHGHEADER", 1, "X-Sendgate-Login", ""), ("ADDHEADER", "Date", DATE),
         ("ADDHEADER", "Message-ID", f"<{UNIQUE}@mail.example.org>"), ("ADDHEADER", "From", ME), ("CONTINUE",)],
        [line("QUEUEID: submission: login=alice from=<alice@example.org> nrcpt=1 "
              "fixups=+Date,+Message-ID,+From: accepted")],
        id="identity-field-on-the-local-daemon-accepted-and-removed"),
    pytest.param(
        SASL, {}, "alice@example.org", ["bob@example.net"], [("X-Sendgate-Login", "root"), *COMPLETE],
        [("CHGHEADER", 1, "X-Sendgate-Login", ""), ("CONTINUE",)],
        [line("warning: QUEUEID: removed 1 X-Sendgate-Login field(s) from a client: "
              "from=<alice@example.org> nrcpt=1"),
         line("QUEUEID: submission: login=alice from=<alice@example.org> nrcpt=1 fixups=none: accepted")],
        id="identity-field-beside-a-sasl-login-removed"),
    pytest.param(
        SENDMAIL_LOCAL, {}, "alice@example.org", ["bob@example.net"],
        [("X-Sendgate-Login", "alice"), ("X-Sendgate-Login", "root"), ("Subject", "hi")],
        [("REPLYCODE", "554 5.7.1 Error: message carries an X-Sendgate-Login field of its own")],
        [line("warning: QUEUEID: reject: X-Sendgate-Login field on daemon sendgate-local: "
              "from=<alice@example.org> nrcpt=1 554 5.7.1 Error: message carries an X-Sendgate-Login field of its own")],
        id="identity-field-refusal-two-fields"),
    pytest.param(
        SENDMAIL_LOCAL, {}, "alice@example.org", ["bob@example.net"], [("Subject", "hi")],
        [("REPLYCODE", "451 4.3.5 Error: no sendgate login on the local submission service; "
                       "check submit_upstream_protocol")],
        [line("warning: QUEUEID: reject: X-Sendgate-Login field on daemon sendgate-local: "
              "from=<alice@example.org> nrcpt=1 451 4.3.5 Error: no sendgate login on the local submission service; "
              "check submit_upstream_protocol")],
        id="identity-field-refusal-none-on-the-local-daemon"),
]


@pytest.mark.parametrize("macros,rules,sender,recipients,fields,packets,lines", CASES)
def test_decision(monkeypatch, caplog, macros, rules, sender, recipients, fields, packets, lines):
    run = Run(monkeypatch, **rules)
    with caplog.at_level(logging.INFO, logger="sendgate/milter"):
        got = run.mta.message(sender, recipients, fields, macros)
    assert (got, log_lines(caplog)) == (packets, lines)


def test_rate_refusal_is_not_counted(monkeypatch, caplog):
    """A message over the limit is taken off the counters again: the next
    one within the limits passes (sendgate/policy/limits.py rate_verdict)."""
    run = Run(monkeypatch)
    four = ["a@example.net", "b@example.net", "c@example.net", "d@example.net"]
    with caplog.at_level(logging.INFO, logger="sendgate/milter"):
        refused = run.mta.message("alice@example.org", four, COMPLETE, SASL, queue_id="Q1")
        passed = run.mta.message("alice@example.org", four[:3], COMPLETE, SASL, queue_id="Q2")
    assert refused[0][0] == "REPLYCODE" and passed == [("CONTINUE",)]
    assert log_lines(caplog)[-1] == line("Q2: submission: login=alice from=<alice@example.org> nrcpt=3 "
                                         "fixups=none: accepted")
    assert list(run.store._counts.values()) == [(1, 3)]
