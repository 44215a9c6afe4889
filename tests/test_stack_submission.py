"""End to end: an unprivileged user runs sendgate-sendmail, the MTA delivers.

Each case submits one message through the real stack, once on Postfix
(sendmail command -> submit socket -> smtpd with XCLIENT LOGIN -> sendgate
milter -> virtual(8) -> Maildir) and once on Sendmail (-> the Family=local
daemon with an X-Sendgate-Login: field -> sendgate milter -> the stack's
maildir mailer), and asserts on the delivered copy and the logs.  The
expected results are the same on both MTAs: the milter does every fix-up,
and Sendmail's own Date/From/Message-Id templates find nothing missing.
"""

from __future__ import annotations

import pytest

from conftest import DOMAIN, assert_submitted_by, delivered, sendmail, unique_marker

FULL_NAME = "sendgate test user {user}"
ME = f"{FULL_NAME} <{{user}}@{DOMAIN}>"


def case(id, message, want, args=("-t", "-i"), user="sgtest1", copies=1):
    return pytest.param(dict(message=message, args=list(args), user=user, copies=copies), want, id=id)


CASES = [
    case("bare-message-gets-date-message-id-and-from",
         "To: bob@example.net\nSubject: {m}\n\nhello\n",
         {"From": ME, "Sender": None, "To": "bob@example.net", "X-Original-To": ["bob@example.net"],
          "added": {"Date", "Message-ID", "From"}}),
    case("complete-message-is-left-alone",
         "Date: Mon, 30 Nov 2026 10:00:00 +0000\nMessage-ID: <fixed.{m}@client.example>\n"
         "From: sgtest1@example.org\nTo: bob@example.net\nSubject: {m}\n\nhello\n",
         {"From": "sgtest1@example.org", "Sender": None, "Date": "Mon, 30 Nov 2026 10:00:00 +0000",
          "Message-ID": "<fixed.{m}@client.example>", "added": set()}),
    case("foreign-from-gets-sender",
         "From: Carol <carol@example.net>\nTo: bob@example.net\nSubject: {m}\n\nhello\n",
         {"From": "Carol <carol@example.net>", "Sender": ME, "added": {"Date", "Message-ID", "Sender"}}),
    case("several-from-mailboxes-get-sender",
         "From: sgtest1@example.org, carol@example.net\nTo: bob@example.net\nSubject: {m}\n\nhello\n",
         {"From": "sgtest1@example.org, carol@example.net", "Sender": ME}),
    case("forged-sender-is-removed",
         "From: sgtest1@example.org\nSender: root@example.org\nTo: bob@example.net\nSubject: {m}\n\nhi\n",
         {"From": "sgtest1@example.org", "Sender": None}),
    case("forged-sender-is-replaced",
         "From: carol@example.net\nSender: root@example.org\nTo: bob@example.net\nSubject: {m}\n\nhi\n",
         {"From": "carol@example.net", "Sender": ME}),
    case("argv-recipients-without-t",
         "Subject: {m}\n\nhello\n",
         {"X-Original-To": ["a@example.net", "b@example.net"], "To": None},
         args=["-i", "a@example.net,b@example.net"], copies=2),
    case("bcc-recipients-get-a-copy-without-bcc",
         "To: bob@example.net\nBcc: hidden@example.net\nSubject: {m}\n\nhello\n",
         {"X-Original-To": ["bob@example.net", "hidden@example.net"], "Bcc": None}, copies=2),
    case("crlf-input-like-php",
         "To: bob@example.net\r\nSubject: {m}\r\n\r\nline one\r\nline two\r\n",
         {"body": b"line one\nline two\n"}),
    case("message-without-header-starting-with-white-space",
         "  indented {m}\nsecond line\n",
         {"From": ME, "X-Original-To": ["bob@example.net"], "added": {"Date", "Message-ID", "From"},
          "body": b"  indented {m}\nsecond line\n"},
         args=["-i", "bob@example.net"]),
    case("second-user-is-itself",
         "To: bob@example.net\nSubject: {m}\n\nhello\n",
         {"From": ME, "login": "sgtest2"}, user="sgtest2"),
    case("resent-message-gets-one-resent-block",
         "Resent-To: carol@example.net\nFrom: dave@example.net\nTo: bob@example.net\n"
         "Date: Mon, 30 Nov 2026 10:00:00 +0000\nMessage-ID: <orig.{m}@client.example>\nSubject: {m}\n\nhi\n",
         {"X-Original-To": ["carol@example.net"], "From": "dave@example.net", "Sender": None,
          "Message-ID": "<orig.{m}@client.example>", "added": set(),
          "resent": ["Resent-Date", "Resent-Message-ID", "Resent-From", "Resent-To"],
          "Resent-From": ME}),
    case("adjacent-resent-blocks-argv-no-resent-sender",
         "Resent-From: sgtest1@example.org\nResent-Date: Wed, 02 Dec 2026 10:00:00 +0000\n"
         "Resent-From: carol@example.net\nResent-Date: Tue, 01 Dec 2026 10:00:00 +0000\n"
         "From: carol@example.net\nTo: bob@example.net\nDate: Mon, 30 Nov 2026 10:00:00 +0000\n"
         "Message-ID: <orig.{m}@client.example>\nSubject: {m}\n\nhi\n",
         {"X-Original-To": ["frank@example.net"], "Resent-Sender": None, "Sender": None},
         args=["-i", "frank@example.net"]),
    case("made-up-resent-prefix-gets-sender",
         "Resent-Foo: x\nFrom: Alice <alice@example.org>\nTo: bob@example.net\nSubject: {m}\n\nhi\n",
         {"From": "Alice <alice@example.org>", "Sender": ME, "Resent-Sender": None},
         args=["-i", "bob@example.net"]),
    case("unqualified-f-is-qualified",
         "To: bob@example.net\nSubject: {m}\n\nhello\n",
         {"From": ME}, args=["-t", "-i", "-f", "sgtest1"]),
]


@pytest.mark.parametrize("given,want", CASES)
def test_submission_through_the_mta(stack, request, given, want):
    m = unique_marker(request)
    user = given["user"]
    message = given["message"].replace("{m}", m).encode()
    result = sendmail(stack, user, given["args"], message)
    assert (result.returncode, result.stderr) == (0, b"")

    copies = delivered(stack, m, count=given["copies"])
    assert len(copies) == given["copies"]
    fill = lambda v: v.replace("{user}", user).replace("{m}", m) if isinstance(v, str) else v  # noqa: E731
    assert sorted(c.one("X-Original-To") for c in copies) == want.get("X-Original-To", [c.one("X-Original-To") for c in copies])
    for item in copies:
        assert item.one("Return-Path") == f"<{user}@{DOMAIN}>"
        for name in ("From", "Sender", "To", "Date", "Message-ID", "Bcc", "Resent-From", "Resent-Sender"):
            if name in want:
                expected = fill(want[name])
                assert item.all(name) == ([] if expected is None else [expected]), name
        if "added" in want:
            original = {line.split(":", 1)[0] for line in given["message"].splitlines() if ":" in line}
            present = {n for n in ("Date", "Message-ID", "From", "Sender") if item.all(n)}
            assert present - original == want["added"]
        if "resent" in want:
            # One resent block, newest on top, right below the MTA's Received:.
            names = [n.lower() for n in item.header_names]
            first = names.index("received") + 1
            assert names[first:first + len(want["resent"])] == [n.lower() for n in want["resent"]]
            assert sorted(n for n in names if n.startswith("resent-")) == sorted(n.lower() for n in want["resent"])
        if "body" in want:
            assert item.raw.split(b"\n\n", 1)[1] == want["body"].replace(b"{m}", m.encode())
        assert item.one("Message-ID").startswith("<") and item.one("Date")
        assert_submitted_by(stack, item, want.get("login", user))


def test_message_id_is_unique(stack, request):
    m = unique_marker(request)
    for _ in range(3):
        result = sendmail(stack, "sgtest1", ["-t", "-i"], f"To: bob@example.net\nSubject: {m}\n\nx\n".encode())
        assert result.returncode == 0
    ids = {c.one("Message-ID") for c in delivered(stack, m, count=3)}
    assert len(ids) == 3
    assert all(i.endswith(f"@mail.{DOMAIN}>") for i in ids)


# Where the fix-ups land: Postfix appends added fields at the end of the
# header; Sendmail puts a field that replaces one of its header templates
# (Date:, From:, Message-Id:) where the template stood, at the top.
ORDER = {
    "postfix": ["return-path", "x-original-to", "delivered-to", "received", "to", "subject", "date",
                "message-id", "from"],
    "sendmail": ["return-path", "x-original-to", "delivered-to", "received", "date", "from", "message-id",
                 "to", "subject"],
}


def test_where_added_fields_go(stack, request):
    m = unique_marker(request)
    result = sendmail(stack, "sgtest1", ["-t", "-i"], f"To: bob@example.net\nSubject: {m}\n\nhello\n".encode())
    assert result.returncode == 0
    (item,) = delivered(stack, m)
    assert [n.lower() for n in item.header_names] == ORDER[stack.mta]
