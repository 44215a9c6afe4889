"""RFC 6409 fix-ups: header in, edits out, exactly."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from sendgate.policy.fixups import FixupSettings, Stamp, format_mailbox, submission_fixups
from sendgate.policy.identity import Principal
from sendgate.policy.message import AddHeader, ChangeHeader, Field, apply_edits, split_message

ALICE = Principal("alice", "alice@example.org", "Alice Example")
SETTINGS = FixupSettings(hostname="mail.example.org", domain="example.org")
STAMP = Stamp(date="Mon, 30 Nov 2026 12:00:00 +0000", unique="u1")
DATE = AddHeader("Date", STAMP.date)
MSGID = AddHeader("Message-ID", "<u1@mail.example.org>")
FROM_ALICE = AddHeader("From", "Alice Example <alice@example.org>")
SENDER_ALICE = AddHeader("Sender", "Alice Example <alice@example.org>")
COMPLETE = "Date: x\nMessage-ID: <a@b>\n"


def header(text: str) -> list[Field]:
    return split_message(text.encode() + b"\n")[0]


@pytest.mark.parametrize("text,want", [
    pytest.param("To: bob@example.net\n", [DATE, MSGID, FROM_ALICE], id="bare"),
    pytest.param(COMPLETE + "From: alice@example.org\n", [], id="complete"),
    pytest.param(COMPLETE + "From: Alice <alice@EXAMPLE.ORG>\n", [], id="from-domain-case"),
    pytest.param(COMPLETE + "From: carol@example.net\n", [SENDER_ALICE], id="foreign-from"),
    pytest.param(COMPLETE + "From: alice@example.org, carol@example.net\n", [SENDER_ALICE], id="two-from-mailboxes"),
    pytest.param(COMPLETE + "From: Team: alice@example.org, carol@example.net;\n", [SENDER_ALICE], id="from-group"),
    pytest.param(COMPLETE + "From: alice@example.org\nSender: root@example.org\n",
                 [ChangeHeader("Sender", 1, "")], id="forged-sender-removed"),
    pytest.param(COMPLETE + "From: carol@example.net\nSender: root@example.org\n",
                 [ChangeHeader("Sender", 1, "Alice Example <alice@example.org>")], id="forged-sender-replaced"),
    pytest.param(COMPLETE + "From: carol@example.net\nSender: alice@example.org\n", [], id="own-sender-kept"),
    pytest.param(COMPLETE + "From: carol@example.net\nSender: x@y\nSender: alice@example.org\n",
                 [ChangeHeader("Sender", 1, "")], id="duplicate-sender-keeps-own"),
    pytest.param(COMPLETE + "From: carol@example.net\nSender: x@y\nSender: z@y\n",
                 [ChangeHeader("Sender", 2, ""), ChangeHeader("Sender", 1, "Alice Example <alice@example.org>")],
                 id="two-forged-senders"),
    pytest.param(COMPLETE + "From: <broken\n", [SENDER_ALICE], id="unparsable-from-gets-sender"),
    pytest.param("Resent-To: bob@example.net\n" + COMPLETE + "From: carol@example.net\n",
                 [AddHeader("Resent-Date", STAMP.date, 0), AddHeader("Resent-Message-ID", "<u1@mail.example.org>", 0),
                  AddHeader("Resent-From", "Alice Example <alice@example.org>", 0)], id="resent"),
    pytest.param("Resent-From: carol@example.net\nResent-Date: x\nResent-Message-ID: <r@b>\n" + COMPLETE,
                 [AddHeader("Resent-Sender", "Alice Example <alice@example.org>", 0)], id="resent-by-someone-else"),
    pytest.param("Resent-From: alice@example.org\nResent-Date: x\nResent-Message-ID: <r@b>\nReceived: x\n"
                 "Resent-From: carol@example.net\nResent-Date: y\n" + COMPLETE, [], id="resent-newest-block-only"),
    pytest.param("Resent-From: alice@example.org\nResent-Date: y\nResent-Message-ID: <q@b>\n"
                 "Resent-To: bob@example.net\nResent-Bcc: hidden@example.net\nReceived: x\nResent-Bcc: old@x\n"
                 "Resent-Date: z\n" + COMPLETE,
                 [ChangeHeader("Resent-Bcc", 1, "")], id="resent-bcc-of-newest-block"),
    pytest.param("Resent-Foo: x\n" + COMPLETE + "From: Alice <carol@example.net>\n", [SENDER_ALICE],
                 id="made-up-resent-prefix-gets-sender"),
    pytest.param("Resent-From: alice@example.org\nResent-Date: y\nResent-Message-ID: <q@b>\n"
                 "Resent-From: carol@example.net\nResent-Date: x\nResent-Message-ID: <r@b>\n" + COMPLETE,
                 [], id="adjacent-blocks-newest-is-mine-no-sender"),
    pytest.param("Resent-From: carol@example.net\nResent-Date: y\nResent-Message-ID: <q@b>\n"
                 "Resent-From: alice@example.org\nResent-Date: x\nResent-Message-ID: <r@b>\n" + COMPLETE,
                 [AddHeader("Resent-Sender", "Alice Example <alice@example.org>", 0)],
                 id="adjacent-blocks-newest-foreign-sender"),
    pytest.param(COMPLETE + "From: alice\nTo: bob, Carol <carol>, d@x.net\n",
                 [ChangeHeader("From", 1, "alice@example.org"),
                  ChangeHeader("To", 1, "bob@example.org, Carol <carol@example.org>, d@x.net")], id="qualify"),
    pytest.param(COMPLETE + "From: alice@example.org\nTo: Team: bob, c@x.net;, (comment) e@y\n",
                 [ChangeHeader("To", 1, "Team: bob@example.org, c@x.net;, e@y")], id="qualify-group-drops-comments"),
    pytest.param(COMPLETE + "From: \"Ex, Al\" <alice>\n",
                 [ChangeHeader("From", 1, '"Ex, Al" <alice@example.org>')], id="qualify-then-from-is-mine"),
    pytest.param(COMPLETE + "From: alice@example.org\nTo: <broken\n", [], id="unparsable-to-untouched"),
    pytest.param(COMPLETE + "From: alice@example.org\nBcc: x@y\nTo: b@c\nBcc: z@y\n",
                 [ChangeHeader("Bcc", 2, ""), ChangeHeader("Bcc", 1, "")], id="bcc-removed"),
])
def test_submission_fixups(text, want):
    assert submission_fixups(header(text), ALICE, SETTINGS, STAMP) == want


@pytest.mark.parametrize("switch,removed", [
    pytest.param("add_date", DATE, id="no-date"),
    pytest.param("add_message_id", MSGID, id="no-message-id"),
    pytest.param("add_from", FROM_ALICE, id="no-from"),
    pytest.param("qualify", ChangeHeader("To", 1, "bob@example.org"), id="no-qualify"),
    pytest.param("remove_bcc", ChangeHeader("Bcc", 1, ""), id="no-bcc-removal"),
])
def test_each_fixup_can_be_switched_off(switch, removed):
    text = "To: bob\nBcc: x@y\n"
    assert removed in submission_fixups(header(text), ALICE, SETTINGS, STAMP)
    off = FixupSettings(hostname="mail.example.org", domain="example.org", **{switch: False})
    assert removed not in submission_fixups(header(text), ALICE, off, STAMP)


def test_no_from_and_no_add_from_means_sender():
    off = FixupSettings(hostname="mail.example.org", domain="example.org", add_from=False)
    assert SENDER_ALICE in submission_fixups(header("To: b@x\n"), ALICE, off, STAMP)


@pytest.mark.parametrize("name,address,want", [
    pytest.param("Alice Example", "a@x", "Alice Example <a@x>", id="atoms"),
    pytest.param("Example, Alice", "a@x", '"Example, Alice" <a@x>', id="comma-quoted"),
    pytest.param('Al "Ace" Ex', "a@x", '"Al \\"Ace\\" Ex" <a@x>', id="quotes-escaped"),
    pytest.param("Zoë", "a@x", "=?utf-8?b?Wm/Dqw==?= <a@x>", id="utf8-encoded-word"),
    pytest.param("", "a@x", "a@x", id="no-name"),
])
def test_format_mailbox(name, address, want):
    assert format_mailbox(name, address) == want


FIELD_NAMES = st.sampled_from(["From", "Sender", "Date", "Message-ID", "To", "Subject", "Resent-From", "Resent-To",
                               "Resent-Sender", "Bcc", "Cc"])
VALUES = st.sampled_from(["alice@example.org", "carol@example.net", "Alice <alice@example.org>", "a@b, c@d",
                          "<broken", "", "x", "Team: alice@example.org;"]) | st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(FIELD_NAMES, VALUES), max_size=8))
def test_fixups_are_idempotent_and_keep_other_fields(fields):
    original = [Field(n, v.replace("\r", "").replace("\n", " ")) for n, v in fields]
    once = apply_edits(original, submission_fixups(original, ALICE, SETTINGS, STAMP))
    assert submission_fixups(once, ALICE, SETTINGS, STAMP) == []
    before, after = Counter(f.name.lower() for f in original), Counter(f.name.lower() for f in once)
    assert {n for n in before if after[n] < before[n]} <= {"sender", "resent-sender", "bcc", "resent-bcc"}
    assert all(len(f.name) + 2 + len(f.value.encode("utf-8", "surrogatepass")) <= 998
               for f in once if f not in original)
