"""The running milter, spoken to as the MTA speaks to it (miltertest).

Each case sends one message over a real milter connection to the session
stack's sendgate-milter and asserts every packet the MTA receives at
end-of-message, in order: header edits (ADDHEADER, INSHEADER, CHGHEADER),
envelope edits (CHGFROM, ADDRCPT, DELRCPT: the policy makes none of these
today, and a case that would get one asserts that none comes) and the
disposition, and the one line the milter logs for the message.  Several
messages share a connection, and aborted messages (RSET, a client gone
mid-DATA) leave nothing behind.  tests/test_milter_decisions.py checks the
same mapping, and more decisions, on pymilter's test context.
"""

from __future__ import annotations

import re

import pytest
from miltertest import constants as C

from conftest import DOMAIN, milter_log_lines, unique_marker
from miltermta import MTA


@pytest.fixture(scope="session")
def stack(postfix_stack):
    """Postfix only: this file tests Postfix's own mechanisms or wording."""
    return postfix_stack


ME = f"sendgate test user sgtest1 <sgtest1@{DOMAIN}>"
SUBMISSION = {"{auth_authen}": "sgtest1", "{auth_type}": "PLAIN", "{daemon_name}": "sendgate-submission"}
LOCAL = {"{auth_authen}": "sgtest1", "{auth_type}": "XCLIENT", "{daemon_name}": "sendgate-local"}
DATE = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}")
MESSAGE_ID = re.compile(rf"<[0-9a-f]{{32}}@mail\.{re.escape(DOMAIN)}>")


def stable(packets: list[tuple]) -> list[tuple]:
    """Dates and Message-IDs made by the milter, as <date> and <id>."""
    out = []
    for packet in packets:
        value = packet[-1] if isinstance(packet[-1], str) else ""
        if DATE.fullmatch(value):
            packet = (*packet[:-1], "<date>")
        elif MESSAGE_ID.fullmatch(value):
            packet = (*packet[:-1], "<id>")
        out.append(packet)
    return out


@pytest.fixture
def mta(stack):
    with MTA(str(stack.dir / "run/milter/milter.sock")) as connection:
        yield connection


def test_negotiation_asks_only_for_what_the_policy_reads(mta):
    assert mta.actions == C.SMFIF_ADDHDRS | C.SMFIF_CHGHDRS | C.SMFIF_CHGFROM | C.SMFIF_SETSYMLIST
    skipped = (C.SMFIP_NOHELO | C.SMFIP_NODATA | C.SMFIP_NOEOH | C.SMFIP_NOBODY
               | C.SMFIP_NOUNKNOWN)
    # connect: a loopback client's owner is looked up there (sendgate/milter/loopback.py)
    no_reply = C.SMFIP_NR_CONN | C.SMFIP_NR_MAIL | C.SMFIP_NR_RCPT | C.SMFIP_NR_HDR
    assert mta.protocol == skipped | no_reply | C.SMFIP_SKIP
    assert mta.macros == {"connect": ("{daemon_addr}", "{daemon_port}"),
                          "mail": ("{auth_authen}", "{auth_type}", "{daemon_name}", "i"), "eom": ("i",)}


ACCEPTED = "submission: login=sgtest1 from=<{sender}> nrcpt=1 fixups={fixups}: accepted"
RELAYED = "relay: from=<{sender}> nrcpt=1: no fix-ups"
COMPLETE = [("Date", "Mon, 30 Nov 2026 10:00:00 +0000"), ("Message-ID", "<a@b>")]

# Each case: the macros, the envelope sender, the header, the packets the
# MTA receives, and the milter's log line for the message (after "QUEUEID: ").
CASES = [
    pytest.param(SUBMISSION, "sgtest1@example.org", [("To", "bob@example.net"), ("Subject", "t")],
                 [("ADDHEADER", "Date", "<date>"), ("ADDHEADER", "Message-ID", "<id>"),
                  ("ADDHEADER", "From", ME), ("CONTINUE",)],
                 ACCEPTED.format(sender="sgtest1@example.org", fixups="+Date,+Message-ID,+From"),
                 id="bare-message-gets-date-id-from"),
    pytest.param(SUBMISSION, "sgtest1@example.org",
                 [*COMPLETE, ("From", "sgtest1@example.org"), ("To", "bob@example.net")],
                 [("CONTINUE",)], ACCEPTED.format(sender="sgtest1@example.org", fixups="none"),
                 id="complete-message-no-edits"),
    pytest.param(SUBMISSION, "sgtest1@example.org", [*COMPLETE, ("From", "Carol <carol@example.net>")],
                 [("ADDHEADER", "Sender", ME), ("CONTINUE",)],
                 ACCEPTED.format(sender="sgtest1@example.org", fixups="+Sender"), id="foreign-from-adds-sender"),
    pytest.param(SUBMISSION, "sgtest1@example.org",
                 [*COMPLETE, ("From", "sgtest1@example.org"), ("Sender", "root@example.org"), ("Sender", "x@example.org")],
                 [("CHGHEADER", 2, "Sender", ""), ("CHGHEADER", 1, "Sender", ""), ("CONTINUE",)],
                 ACCEPTED.format(sender="sgtest1@example.org", fixups="-Sender,-Sender"),
                 id="forged-senders-deleted-highest-first"),
    pytest.param(SUBMISSION, "sgtest1@example.org",
                 [*COMPLETE, ("From", "carol@example.net"), ("Sender", "root@example.org")],
                 [("CHGHEADER", 1, "Sender", ME), ("CONTINUE",)],
                 ACCEPTED.format(sender="sgtest1@example.org", fixups="~Sender"), id="forged-sender-replaced"),
    pytest.param(SUBMISSION, "sgtest1@example.org",
                 [("Resent-To", "dave@example.net"), ("From", "carol@example.net"), *COMPLETE],
                 # Each insert is followed by the deletion of the occurrence
                 # after it, which removes Sendmail's own header template
                 # copy; there is none on Postfix, so nothing happens there.
                 [("INSHEADER", 1, "Resent-Date", "<date>"), ("CHGHEADER", 2, "Resent-Date", ""),
                  ("INSHEADER", 2, "Resent-Message-ID", "<id>"), ("CHGHEADER", 2, "Resent-Message-ID", ""),
                  ("INSHEADER", 3, "Resent-From", ME), ("CHGHEADER", 2, "Resent-From", ""), ("CONTINUE",)],
                 ACCEPTED.format(sender="sgtest1@example.org", fixups="+Resent-Date,+Resent-Message-ID,+Resent-From"),
                 id="resent-fields-inserted-at-top"),
    pytest.param(LOCAL, "sgtest1@example.org", [("From", "carol@example.net"), ("Date", "x"), ("Message-ID", "<a@b>")],
                 [("ADDHEADER", "Sender", ME), ("CONTINUE",)],
                 ACCEPTED.format(sender="sgtest1@example.org", fixups="+Sender"), id="xclient-login-on-local-service"),
    pytest.param(SUBMISSION, "sgtest2@example.org", [("From", "sgtest2@example.org")],
                 [("REPLYCODE", "553 5.7.1 <sgtest2@example.org>: Sender address rejected: not owned by user sgtest1")],
                 "reject: login=sgtest1 from=<sgtest2@example.org> nrcpt=1: "
                 "553 5.7.1 <sgtest2@example.org>: Sender address rejected: not owned by user sgtest1",
                 id="envelope-sender-of-another-user-rejected-no-chgfrom"),
    pytest.param({}, "sgtest1@example.org", [("From", "sgtest1@example.org")], [("CONTINUE",)],
                 RELAYED.format(sender="sgtest1@example.org"), id="unauthenticated-is-relayed-untouched"),
    pytest.param({"{auth_authen}": "sgtest1", "{auth_type}": "XCLIENT", "{daemon_name}": "sendgate-submission"},
                 "sgtest1@example.org", [("From", "sgtest1@example.org")], [("CONTINUE",)],
                 RELAYED.format(sender="sgtest1@example.org"), id="xclient-login-on-another-service-is-ignored"),
    pytest.param({"{auth_author}": "sgtest1@example.org"}, "sgtest1@example.org",
                 [("From", "sgtest1@example.org")], [("CONTINUE",)], RELAYED.format(sender="sgtest1@example.org"),
                 id="auth-parameter-alone-is-no-login"),
]


@pytest.mark.parametrize("macros,sender,fields,want,logged", CASES)
def test_end_of_message_edits(stack, mta, request, macros, sender, fields, want, logged):
    qid = "T" + unique_marker(request)[1:11].upper()
    assert stable(mta.message(sender, ["bob@example.net"], fields, macros, queue_id=qid)) == want
    lines = milter_log_lines(stack, qid, until=logged)
    assert [line.split("]: ", 1)[1] for line in lines] == [f"{qid}: {logged}"]


def test_several_messages_on_one_connection_do_not_share_state(mta):
    first = mta.message("sgtest1@example.org", ["a@example.net", "b@example.net"],
                        [("From", "carol@example.net"), ("Sender", "root@example.org")], SUBMISSION)
    second = mta.message("sgtest1@example.org", ["c@example.net"], [("Subject", "second")], SUBMISSION)
    third = mta.message("sgtest1@example.org", ["c@example.net"],
                        [("Date", "Mon, 30 Nov 2026 10:00:00 +0000"), ("Message-ID", "<a@b>"),
                         ("From", "sgtest1@example.org")], SUBMISSION)
    assert stable(first) == [("ADDHEADER", "Date", "<date>"), ("ADDHEADER", "Message-ID", "<id>"),
                             ("CHGHEADER", 1, "Sender", ME), ("CONTINUE",)]
    assert stable(second) == [("ADDHEADER", "Date", "<date>"), ("ADDHEADER", "Message-ID", "<id>"),
                              ("ADDHEADER", "From", ME), ("CONTINUE",)]
    assert third == [("CONTINUE",)]


@pytest.mark.parametrize("where", [
    pytest.param("after-rcpt", id="rset-before-data"),
    pytest.param("mid-header", id="client-gone-during-data"),
])
def test_aborted_message_leaves_nothing_behind(mta, where):
    # The aborted message had a foreign envelope sender, a From and a
    # Sender; the next one has none of them and must be judged on its own
    # (the session's macros, like the login, stay for the connection).
    mta.begin("carol@example.net", ["bob@example.net"], SUBMISSION)
    if where == "mid-header":
        mta.headers([("From", "carol@example.net"), ("Sender", "root@example.org")])
    mta.abort()
    after = mta.message("sgtest1@example.org", ["bob@example.net"], [("Subject", "then")], SUBMISSION)
    assert stable(after) == [("ADDHEADER", "Date", "<date>"), ("ADDHEADER", "Message-ID", "<id>"),
                             ("ADDHEADER", "From", ME), ("CONTINUE",)]
