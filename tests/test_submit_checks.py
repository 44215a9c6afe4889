"""The submit daemon's checks of a transaction (sendgate.policy.transaction)
and what the MTA's refusals become (sendgate.policy.refusals): pure
verdicts, exact replies and log texts."""

from __future__ import annotations

import pytest

from sendgate.policy.admission import AdmissionRules, Peer
from sendgate.policy.refusals import outcome, replayed_recipient_refusal
from sendgate.policy.sender import Mismatch, SenderRules
from sendgate.policy.transaction import (Mail, Message, Recipient, Refusal, check_mail, check_message, check_rcpt,
                                        replay_mail)
from sendgate.replies import Reply

ALICE = Peer(1000, "alice", frozenset())
RULES = SenderRules(domain="example.org")
NOT_OWNED = "553 5.7.1 <bob@example.org>: Sender address rejected: not owned by user alice"


def shown(verdict):
    """A Refusal as (reply, log text); any other verdict as it is."""
    return (str(verdict.reply), verdict.log) if isinstance(verdict, Refusal) else verdict


@pytest.mark.parametrize("path,params,rules,want", [
    pytest.param("alice", [], RULES, Mail("alice@example.org", (), False), id="qualified"),
    pytest.param("alice@example.org", ["SIZE=10", "body=8bitmime", "RET=HDRS", "ENVID=x", "SMTPUTF8"], RULES,
                 Mail("alice@example.org", ("SIZE=10", "body=8bitmime", "RET=HDRS", "ENVID=x", "SMTPUTF8"), False),
                 id="parameters-forwarded-as-written"),
    pytest.param("alice", ["rcpthdr", "SIZE=5"], RULES, Mail("alice@example.org", ("SIZE=5",), True),
                 id="rcpthdr-taken-out"),
    pytest.param("alice", ["AUTH=<root@example.org>"], RULES,
                 ("555 5.5.4 Unsupported option: AUTH=<root@example.org>", None), id="auth-refused"),
    pytest.param("alice", ["XFOO=" + "a" * 100], RULES,
                 ("555 5.5.4 Unsupported option: XFOO=" + "a" * 59 + "...", None), id="long-parameter-cut"),
    pytest.param("alice", ["XFOO=\u00e9\udcff"], RULES,
                 ("555 5.5.4 Unsupported option: XFOO=\\xe9\\udcff", None), id="parameter-shown-in-ascii"),
    pytest.param("alice", ["SIZE=ten"], RULES, ("501 5.5.4 Bad SIZE parameter syntax", None), id="size-not-a-number"),
    pytest.param("alice", ["SIZE"], RULES, ("501 5.5.4 Bad SIZE parameter syntax", None), id="size-without-value"),
    pytest.param("alice", ["SIZE=1001"], RULES, ("552 5.3.4 Error: message file too big", None),
                 id="size-over-limit"),
    pytest.param("alice", ["SIZE=1000"], RULES, Mail("alice@example.org", ("SIZE=1000",), False),
                 id="size-at-limit"),
    pytest.param("alice", ["SMTPUTF8=yes"], RULES, ("501 5.5.4 Bad SMTPUTF8 parameter syntax", None),
                 id="smtputf8-takes-no-value"),
    pytest.param("alice", ["RCPTHDR=1"], RULES, ("501 5.5.4 Bad RCPTHDR parameter syntax", None),
                 id="rcpthdr-takes-no-value"),
    pytest.param("alice", ["BODY=BINARYMIME"], RULES, ("501 5.5.4 Bad BODY parameter syntax", None),
                 id="body-binarymime"),
    pytest.param("bob@example.org", [], RULES, (NOT_OWNED, NOT_OWNED + "; from=<bob@example.org>"),
                 id="sender-not-owned-rejected"),
    pytest.param("bob@example.org", ["XFOO"], RULES, ("555 5.5.4 Unsupported option: XFOO", None),
                 id="parameters-before-sender"),
    pytest.param("bob@example.org", [], SenderRules("example.org", envelope_mismatch=Mismatch.SENDER),
                 Mail("bob@example.org", (), False), id="mismatch-action-sender-passes"),
    pytest.param("bob@example.org", [], SenderRules("example.org", envelope_mismatch=Mismatch.REWRITE),
                 Mail("bob@example.org", (), False), id="mismatch-action-rewrite-left-to-the-milter"),
    pytest.param("", [], RULES, Mail("", (), False), id="null-sender-allowed"),
    pytest.param("", [], SenderRules("example.org", allow_null_sender=False),
                 ("553 5.7.1 <>: Sender address rejected: null sender not allowed for user alice",
                  "553 5.7.1 <>: Sender address rejected: null sender not allowed for user alice; from=<>"),
                 id="null-sender-refused"),
    pytest.param("b\u00f6b@example.org", [], RULES,
                 ("553 5.7.1 <b\u00f6b@example.org>: Sender address rejected: not owned by user alice",
                  "553 5.7.1 <b\u00f6b@example.org>: Sender address rejected: not owned by user alice; "
                  "from=<b\\xf6b@example.org>"), id="log-shows-the-sender-in-ascii"),
])
def test_check_mail(path, params, rules, want):
    assert shown(check_mail(path, params, ALICE, rules, AdmissionRules(), 1000, [], 0.0)) == want


RATE = AdmissionRules(message_rate_limit=1, rate_window=60)
RATE_REFUSAL = "450 4.7.1 Error: too many messages from uid 1000 in 60 seconds, try again later"


@pytest.mark.parametrize("path,recent,want", [
    pytest.param("alice", [], Mail("alice@example.org", (), False), id="first-message"),
    pytest.param("alice", [50.0], (RATE_REFUSAL, RATE_REFUSAL + " (submit_message_rate_limit)"), id="over-rate"),
    pytest.param("alice", [0.0], Mail("alice@example.org", (), False), id="earlier-message-out-of-window"),
    pytest.param("bob@example.org", [50.0], (NOT_OWNED, NOT_OWNED + "; from=<bob@example.org>"),
                 id="sender-before-rate"),
])
def test_check_mail_rate(path, recent, want):
    assert shown(check_mail(path, [], ALICE, RULES, RATE, 1000, recent, 60.0)) == want


@pytest.mark.parametrize("path,params,count,want", [
    pytest.param("bob", [], 0, Recipient("bob@example.org", ()), id="qualified"),
    pytest.param("bob@example.net", ["NOTIFY=SUCCESS,FAILURE", "orcpt=rfc822;bob@example.net"], 0,
                 Recipient("bob@example.net", ("NOTIFY=SUCCESS,FAILURE", "orcpt=rfc822;bob@example.net")),
                 id="dsn-parameters-forwarded"),
    pytest.param("bob@example.net", ["SIZE=10"], 0, ("555 5.5.4 Unsupported option: SIZE=10", None),
                 id="mail-parameter-refused"),
    pytest.param("bob@example.net", [], 2, Recipient("bob@example.net", ()), id="last-within-limit"),
    pytest.param("bob@example.net", [], 3, ("452 4.5.3 Error: too many recipients", None), id="over-limit"),
    pytest.param("bob@example.net", ["XFOO"], 3, ("555 5.5.4 Unsupported option: XFOO", None),
                 id="parameters-before-limit"),
])
def test_check_rcpt(path, params, count, want):
    assert shown(check_rcpt(path, params, count, 3, "example.org")) == want


PLAIN = b"From: a@example.org\r\nTo: b@example.net\r\n\r\nhi\r\n"


@pytest.mark.parametrize("content,rcpthdr,given,want", [
    pytest.param(PLAIN, False, ["b@example.net"], Message(None, 1, ("b@example.net",)), id="plain"),
    pytest.param(PLAIN + b"\x00\r\n", False, ["b@example.net"],
                 Message(Reply.own(554, "5.6.0", "Error: message contains a NUL character, not accepted"), 1),
                 id="nul-in-body"),
    pytest.param(b"From: a@x\r\nFrom: b@x\r\n\r\n\x00", False, ["b@example.net"],
                 Message(Reply.own(554, "5.6.0", "From: header field appears more than once"), 1),
                 id="header-problem-first"),
    pytest.param(b"To: b@example.net, c\r\nBcc: d@example.net\r\n\r\nhi\r\n", True, [],
                 Message(None, 3, ("b@example.net", "c@example.org", "d@example.net"), (1,)), id="rcpthdr"),
    pytest.param(b"To: b@example.net\r\n\r\nhi\r\n", True, ["a@example.net"],
                 Message(None, 2, ("a@example.net", "b@example.net")), id="rcpthdr-rcpt-first"),
    pytest.param(b"Subject: none\r\n\r\nhi\r\n", True, [],
                 Message(Reply.own(554, "5.6.0", "To: no recipients found in the message header"), 0),
                 id="rcpthdr-no-recipients"),
    pytest.param(b"To: a@x, b@x, c@x, d@x\r\n\r\nhi\r\n", True, [],
                 Message(Reply.own(452, "4.5.3", "Error: too many recipients"), 4, ("a@x", "b@x", "c@x", "d@x")),
                 id="rcpthdr-over-limit"),
    pytest.param(b"To: b@x\r\n\r\n\x00\r\n", True, [],
                 Message(Reply.own(554, "5.6.0", "Error: message contains a NUL character, not accepted"), 0),
                 id="rcpthdr-nul"),
])
def test_check_message(content, rcpthdr, given, want):
    assert check_message(content, rcpthdr, given, "example.org", 3) == want


@pytest.mark.parametrize("reply,want", [
    pytest.param(Reply(250, ("2.0.0 Ok: queued as X",)), "accepted", id="250"),
    pytest.param(Reply.own(452, "4.5.3", "Error: too many recipients"), "tempfail", id="ours-4xx"),
    pytest.param(Reply(421, ("4.4.2 mx Error: timeout exceeded",)), "tempfail", id="421"),
    pytest.param(Reply(554, ("5.7.1 no",)), "rejected", id="554"),
    pytest.param(Reply(199, ("odd",)), "tempfail", id="not-positive-below-400"),
])
def test_outcome(reply, want):
    assert outcome(reply) == want


@pytest.mark.parametrize("address,reply,want", [
    pytest.param("carol@example.net", Reply(450, ("4.2.0 <carol@example.net>: mailbox busy",)),
                 "451 4.3.0 <carol@example.net>: Recipient address temporarily refused, message not accepted: "
                 "4.2.0 <carol@example.net>: mailbox busy", id="4xx-is-451"),
    pytest.param("bob@example.net", Reply(550, ("5.1.1 first line", "5.1.1 second line")),
                 "554 5.1.0 <bob@example.net>: Recipient address rejected, message not accepted: "
                 "5.1.1 first line 5.1.1 second line", id="5xx-is-554-lines-joined"),
    pytest.param("b" * 120 + "@x", Reply(550, ("5.1.1 " + "n" * 300,)),
                 f"554 5.1.0 <{'b' * 100}...>: Recipient address rejected, message not accepted: "
                 f"5.1.1 {'n' * 194}...", id="cut"),
])
def test_replayed_recipient_refusal(address, reply, want):
    assert str(replayed_recipient_refusal(address, reply)) == want


@pytest.mark.parametrize("sender,params,recipients,mta,want", [
    pytest.param("a@example.org", (), ["j\u00f6rg@b\u00fccher.example"], True, ("SMTPUTF8",), id="header-recipient-utf8"),
    pytest.param("j\u00f6rg@example.org", ("BODY=8BITMIME",), ["bob@example.net"], True, ("BODY=8BITMIME", "SMTPUTF8"),
                 id="sender-utf8"),
    pytest.param("a@example.org", ("smtputf8",), ["\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a"], True, ("smtputf8",),
                 id="declared-already"),
    pytest.param("a@example.org", (), ["bob@example.net"], True, (), id="all-ascii"),
    pytest.param("a@example.org", (), ["j\u00f6rg@b\u00fccher.example"], False, (), id="mta-without-smtputf8"),
])
def test_replay_mail_declares_smtputf8(sender, params, recipients, mta, want):
    assert replay_mail(Mail(sender, params, True), recipients, mta) == Mail(sender, want, True)
