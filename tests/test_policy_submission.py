"""One decision per submitted message: principal, envelope and header in;
rejection or edits out, exactly."""

from __future__ import annotations

import pytest

from sendgate.policy.fixups import FixupSettings, Stamp
from sendgate.policy.identity import Mode, Principal, mode_for
from sendgate.policy.message import AddHeader, ChangeHeader, split_message
from sendgate.policy.sender import Mismatch, SenderRules
from sendgate.policy.submission import decide

ALICE = Principal("alice", "alice@example.org", "")
SETTINGS = FixupSettings(hostname="mail.example.org", domain="example.org")
STAMP = Stamp(date="D", unique="u")
BASE = "Date: D\nMessage-ID: <m@x>\n"


def rules(envelope="reject", from_="sender", null=True):
    return SenderRules(domain="example.org", envelope_mismatch=Mismatch(envelope), from_mismatch=Mismatch(from_),
                       allow_null_sender=null)


def run(text, mail_from="alice@example.org", **kw):
    header = split_message(text.encode() + b"\n")[0]
    d = decide(header, mail_from, ALICE, rules(**kw), SETTINGS, STAMP)
    return (str(d.reply) if d.reply else None, list(d.edits), d.new_sender)


@pytest.mark.parametrize("text,mail_from,kw,want", [
    pytest.param(BASE + "From: alice@example.org\n", "alice@example.org", {}, (None, [], None), id="clean"),
    pytest.param(BASE + "From: alice@example.org\n", "bob@example.org", {},
                 ("553 5.7.1 <bob@example.org>: Sender address rejected: not owned by user alice", [], None),
                 id="envelope-reject"),
    pytest.param(BASE + "From: alice@example.org\n", "bob@example.org", {"envelope": "rewrite"},
                 (None, [], "alice@example.org"), id="envelope-rewrite"),
    pytest.param(BASE + "From: alice@example.org\n", "bob@example.org", {"envelope": "sender"},
                 (None, [], None), id="envelope-accepted-with-sender-action"),
    pytest.param(BASE + "From: alice@example.org\n", "", {"null": False},
                 ("553 5.7.1 <>: Sender address rejected: null sender not allowed for user alice", [], None),
                 id="null-sender-refused"),
    pytest.param(BASE + "From: carol@example.net\n", "alice@example.org", {},
                 (None, [AddHeader("Sender", "alice@example.org")], None), id="from-mismatch-adds-sender"),
    pytest.param(BASE + "From: carol@example.net\n", "alice@example.org", {"from_": "reject"},
                 ("550 5.7.1 <carol@example.net>: From address rejected: not owned by user alice", [], None),
                 id="from-mismatch-reject"),
    pytest.param(BASE + "From: alice\n", "alice@example.org", {"from_": "reject"},
                 (None, [ChangeHeader("From", 1, "alice@example.org")], None), id="unqualified-from-is-mine"),
    pytest.param(BASE + "From: <bro\n", "alice@example.org", {"from_": "reject"},
                 ("554 5.6.0 From: unbalanced angle bracket", [], None), id="unparsable-from-rejected"),
    pytest.param(BASE + "From: <bro\n", "alice@example.org", {},
                 (None, [AddHeader("Sender", "alice@example.org")], None), id="unparsable-from-gets-sender"),
    pytest.param(BASE + "From: alice@example.org\nSubject: a\x00b\n", "alice@example.org", {},
                 ("554 5.6.0 Subject: NUL character in header field", [], None), id="nul-byte"),
    pytest.param(BASE + "From: alice@example.org\nfrom: bob@example.org\n", "alice@example.org", {},
                 ("554 5.6.0 from: header field appears more than once", [], None), id="two-from-fields"),
    pytest.param(BASE + "Date: E\nFrom: alice@example.org\n", "alice@example.org", {},
                 ("554 5.6.0 Date: header field appears more than once", [], None), id="two-date-fields"),
    pytest.param(BASE + "From: alice@example.org\nTo: a@x\nTo: b@x\n", "alice@example.org", {}, (None, [], None),
                 id="two-to-fields-tolerated"),
])
def test_decide(text, mail_from, kw, want):
    assert run(text, mail_from, **kw) == want


@pytest.mark.parametrize("login,want", [("alice", Mode.SUBMISSION), ("", Mode.RELAY), (None, Mode.RELAY)])
def test_mode(login, want):
    assert mode_for(login) is want
