"""sendgate.milter.plan: edits and refusals to milter actions, as data.

Pure: each case is the policy's output (Edits, a new envelope sender, a
Reply, the identity fields to remove) and the exact libmilter calls wanted,
in order.  tests/test_milter_decisions.py runs the same mapping through the
adapter on pymilter's test context, tests/test_milter_protocol.py on a
running milter.
"""

from __future__ import annotations

import pytest

from sendgate import replies
from sendgate.milter import plan
from sendgate.policy.message import AddHeader, ChangeHeader, Field
from sendgate.policy.submission import Decision


def header(*names):
    return [Field(name, "x") for name in names]


HEADER_CASES = [
    pytest.param([AddHeader("Date", "d")], header("To"), [("addheader", "Date", "d")], id="append"),
    pytest.param([ChangeHeader("Sender", 2, "")], header("Sender", "Sender"), [("chgheader", "Sender", 2, "")],
                 id="delete-second-occurrence"),
    pytest.param([ChangeHeader("To", 1, "a@b")], header("To"), [("chgheader", "To", 1, "a@b")], id="change"),
    pytest.param([AddHeader("Resent-Date", "d", 0)], header("Resent-To", "From"),
                 # Position 0 is index 1 (below the MTA's Received:); then the
                 # occurrence after the new one goes (Sendmail's template).
                 [("insheader", 1, "Resent-Date", "d"), ("chgheader", "Resent-Date", 2, "")],
                 id="insert-at-top"),
    pytest.param([AddHeader("Resent-Date", "d", 0), AddHeader("Resent-From", "f", 0)], header("Resent-To"),
                 [("insheader", 1, "Resent-Date", "d"), ("chgheader", "Resent-Date", 2, ""),
                  ("insheader", 2, "Resent-From", "f"), ("chgheader", "Resent-From", 2, "")],
                 id="inserts-keep-the-policys-order"),
    pytest.param([AddHeader("Resent-Date", "d", 2)], header("Received", "Resent-Date", "Resent-To"),
                 [("insheader", 3, "Resent-Date", "d"), ("chgheader", "Resent-Date", 3, "")],
                 id="insert-beside-an-existing-field-of-that-name"),
    pytest.param([ChangeHeader("Bcc", 1, ""), AddHeader("Message-ID", "<i>")], header("Bcc"),
                 [("chgheader", "Bcc", 1, ""), ("addheader", "Message-ID", "<i>")], id="in-the-policys-order"),
    pytest.param([], header("To"), [], id="no-edits"),
]


@pytest.mark.parametrize("edits,fields,want", HEADER_CASES)
def test_header_actions(edits, fields, want):
    assert plan.header_actions(edits, fields) == want


ACCEPT_CASES = [
    pytest.param((), Decision(None), plan.Plan(()), id="nothing-to-do"),
    pytest.param((2, 1), Decision(None, (AddHeader("Date", "d"),)),
                 plan.Plan((("chgheader", "X-Sendgate-Login", 2, ""), ("chgheader", "X-Sendgate-Login", 1, ""),
                            ("addheader", "Date", "d"))),
                 id="identity-fields-first-highest-first"),
    pytest.param((1,), Decision(None, (ChangeHeader("Sender", 1, "me"),), "me@x.org"),
                 plan.Plan((("chgheader", "X-Sendgate-Login", 1, ""), ("chgfrom", "<me@x.org>", ""),
                            ("chgheader", "Sender", 1, "me"))),
                 id="then-envelope-sender-then-header"),
]


@pytest.mark.parametrize("remove,decision,want", ACCEPT_CASES)
def test_accept(remove, decision, want):
    assert plan.accept(remove, decision, header("X-Sendgate-Login", "To")) == want


def test_relay_removes_only_the_identity_fields():
    assert plan.relay((2, 1)) == plan.Plan((("chgheader", "X-Sendgate-Login", 2, ""),
                                            ("chgheader", "X-Sendgate-Login", 1, "")))


REFUSE_CASES = [
    pytest.param(replies.R553_SENDER_NOT_OWNED.format(address="a@b", login="al"),
                 plan.Plan((("setreply", "553", "5.7.1", "<a@b>: Sender address rejected: not owned by user al"),),
                           "reject"), id="5xx-rejects"),
    pytest.param(replies.R451_POLICY_ERROR,
                 plan.Plan((("setreply", "451", "4.3.0", "Error: the mail policy could not be applied, try again later"),),
                           "tempfail"), id="4xx-tempfails"),
    pytest.param(replies.R553_SENDER_NOT_OWNED.format(address="100%@b", login="al"),
                 plan.Plan((("setreply", "553", "5.7.1", "<100%%@b>: Sender address rejected: not owned by user al"),),
                           "reject"), id="percent-doubled"),
]


@pytest.mark.parametrize("reply,want", REFUSE_CASES)
def test_refuse(reply, want):
    assert plan.refuse(reply) == want


SUMMARY_CASES = [
    pytest.param(Decision(None), "none", (), id="none"),
    pytest.param(Decision(None, (AddHeader("Date", "d"), ChangeHeader("To", 1, "a@b"), ChangeHeader("Bcc", 1, ""))),
                 "+Date,~To,-Bcc", (("add", "Date"), ("change", "To"), ("delete", "Bcc")), id="add-change-delete"),
    pytest.param(Decision(None, (), "me@x.org"), "sender=<me@x.org>", (("rewrite", "envelope-sender"),),
                 id="envelope-sender"),
]


@pytest.mark.parametrize("decision,line,counts", SUMMARY_CASES)
def test_changes_and_fixup_counts(decision, line, counts):
    assert (plan.changes(decision), plan.fixup_counts(decision)) == (line, counts)
