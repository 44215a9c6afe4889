"""Nobody can claim an identity that the kernel did not give them.

Each case is one way a local user or a network client might try to forge
who they are, run against the real stack, with the exact reply expected.
Cases that use the `stack` fixture run on Postfix and on Sendmail.  The
hand-offs differ (XCLIENT LOGIN= on Postfix; an X-Sendgate-Login: field on
Sendmail's local daemon, see sendgate.policy.handoff), and so do the MTAs'
own "queued" replies and what Sendmail adds to relayed mail at delivery:
each such difference is spelled out per MTA below.
"""

from __future__ import annotations

import re
import smtplib

import pytest

from conftest import (DOMAIN, assert_submitted_by, delivered, milter_log_lines, program, queue_id, run_as,
                      sendmail, sendmail_log_lines, unique_marker)

# An SMTP dialogue run as a test user: each command sent alone, each reply
# printed on one line as "CODE TEXT".  Passed with -c because the checkout
# may be unreadable to the test users.
DIALOGUE = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        line = f.readline().decode().rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return " | ".join(lines)
print(reply())
for command in sys.argv[2:]:
    s.sendall(command.encode() + b"\r\n")
    print(reply())
"""


def dialogue(stack, user, *commands, socket=None, groups=()):
    result = run_as(user, [program("python"), "-c", DIALOGUE, socket or stack.socket, *commands], groups=groups)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


REFUSALS = [
    pytest.param(["AUTH PLAIN AHJvb3QAeA=="], "502 5.5.1 Error: command not implemented", id="auth-command"),
    pytest.param(["XCLIENT LOGIN=root"], "500 5.5.2 Error: command not recognized", id="xclient-command"),
    pytest.param(["MAIL FROM:<root@example.org>"],
                 "553 5.7.1 <root@example.org>: Sender address rejected: not owned by user sgtest1",
                 id="envelope-sender-of-another-user"),
    pytest.param(["MAIL FROM:<sgtest2>"],
                 "553 5.7.1 <sgtest2@example.org>: Sender address rejected: not owned by user sgtest1",
                 id="unqualified-sender-of-another-user"),
    pytest.param(["MAIL FROM:<sgtest1@example.org> AUTH=<root@example.org>"],
                 "555 5.5.4 Unsupported option: AUTH=<root@example.org>", id="auth-parameter"),
    pytest.param(["MAIL FROM:<sgtest1@EXAMPLE.ORG> XFORWARD=x"],
                 "555 5.5.4 Unsupported option: XFORWARD=x", id="unknown-parameter"),
]


@pytest.mark.parametrize("commands,want", REFUSALS)
def test_submit_socket_refuses(stack, commands, want):
    replies = dialogue(stack, "sgtest1", "EHLO sgtest2", *commands, "QUIT")
    assert replies[0].startswith("220 ")
    assert "XCLIENT" not in replies[1] and "AUTH" not in replies[1]
    assert replies[-2] == want
    assert replies[-1] == "221 2.0.0 Bye"


# The MTA's own reply to a message, relayed as it wrote it.
QUEUED = {"postfix": r"250 2\.0\.0 Ok: \d+ bytes queued as (\w+)",
          "sendmail": r"250 2\.0\.0 (\w+) Message accepted for delivery"}


def test_helo_naming_another_user_changes_nothing(stack, request):
    m = unique_marker(request)
    replies = dialogue(stack, "sgtest1", "HELO sgtest2", "MAIL FROM:<sgtest1@example.org>",
                       "RCPT TO:<bob@example.net>", "DATA",
                       f"From: sgtest2@example.org\r\nSubject: {m}\r\n\r\nhi\r\n.", "QUIT")
    queued = re.fullmatch(QUEUED[stack.mta], replies[-2])
    assert queued is not None, replies[-2]
    (item,) = delivered(stack, m)
    assert queue_id(item) == queued.group(1)
    assert item.one("Sender") == f"sendgate test user sgtest1 <sgtest1@{DOMAIN}>"
    assert_submitted_by(stack, item, "sgtest1")


@pytest.mark.parametrize("where", [
    pytest.param(lambda stack: stack.facts["upstream"], id="mta-service"),
    pytest.param(lambda stack: str(stack.dir / "run/milter/milter.sock"), id="milter"),
])
def test_users_cannot_reach_the_trusted_sockets(stack, where):
    """The MTA service that trusts the hand-off (Postfix's public/sendgate,
    Sendmail's Family=local daemon socket) is for the sendgate user only; the
    milter's socket for the MTA only."""
    probe = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
    result = run_as("sgtest1", [program("python"), "-c", probe, where(stack)])
    assert result.returncode == 1
    assert b"PermissionError: [Errno 13] Permission denied" in result.stderr


def test_mta_service_refuses_mail_without_a_login(stack):
    """Even the sendgate user, with the group the submit daemon takes to
    reach the service (submit_groups), gets no submission there without the
    hand-off."""
    replies = dialogue(stack, "sendgate", "EHLO mail.example.org", "MAIL FROM:<sgtest1@example.org>",
                       "RCPT TO:<bob@example.net>", "DATA", "Subject: no login\r\n\r\nhi\r\n.", "QUIT",
                       socket=stack.facts["upstream"], groups=("postdrop",) if stack.mta == "postfix" else ())
    assert replies[-2] == ("451 4.3.5 Error: no sendgate login on the local submission service; "
                           "check submit_upstream_protocol")


FORGED_FIELDS = [
    pytest.param("X-Sendgate-Login: sgtest2\n", {"postfix": 0, "sendmail": 0}, id="identity-field"),
    pytest.param("x-sendgate-login: sgtest2\n", {"postfix": 0, "sendmail": 0}, id="identity-field-lower-case"),
    pytest.param("X-Sendgate-Login:\n sgtest2\n", {"postfix": 0, "sendmail": 0}, id="identity-field-folded"),
    # sendgate's parser ends the header at a field name followed by a space,
    # so the submit daemon cannot remove this one; Sendmail reads it as a
    # field, and the milter, seeing two, refuses the message.  On Postfix
    # the XCLIENT login wins and the milter removes the field.
    pytest.param("X-Sendgate-Login : sgtest2\n", {"postfix": 0, "sendmail": 77}, id="space-before-colon"),
]


@pytest.mark.parametrize("field,status", FORGED_FIELDS)
def test_local_user_cannot_forge_the_identity_field(stack, request, field, status):
    m = unique_marker(request)
    message = f"To: bob@example.net\nSubject: {m}\n{field}\nhi\n".encode()
    result = sendmail(stack, "sgtest1", ["-t", "-i"], message)
    assert result.returncode == status[stack.mta], result.stderr
    if status[stack.mta]:
        assert result.stderr.startswith(b"sendmail: message refused: 554 5.7.1 Error: message carries an "
                                        b"X-Sendgate-Login field of its own; message saved in ")
        assert delivered(stack, m, timeout=1) == []
        return
    (item,) = delivered(stack, m)
    assert item.one("From") == f"sendgate test user sgtest1 <sgtest1@{DOMAIN}>"
    assert_submitted_by(stack, item, "sgtest1")


def test_network_clients_cannot_use_xclient(postfix_stack):
    host, port = postfix_stack.inbound
    with smtplib.SMTP(host, port, timeout=10) as client:
        code, features = client.ehlo("attacker.example")
        assert code == 250 and b"XCLIENT" not in features and b"AUTH" not in features
        assert client.docmd("XCLIENT", "LOGIN=sgtest1") == (550, b"5.7.0 Error: insufficient authorization")


def test_network_clients_cannot_use_xclient_or_auth_on_sendmail(sendmail_stack):
    """Sendmail knows no XCLIENT and offers no AUTH on the stack's services."""
    host, port = sendmail_stack.inbound
    with smtplib.SMTP(host, port, timeout=10) as client:
        code, features = client.ehlo("attacker.example")
        assert code == 250 and b"XCLIENT" not in features and b"AUTH" not in features
        assert client.docmd("XCLIENT", "LOGIN=sgtest1") == (500, b'5.5.1 Command unrecognized: "XCLIENT LOGIN=sgtest1"')
        assert client.docmd("AUTH", "PLAIN AHNndGVzdDEAeA==") == (503, b"5.3.3 AUTH not available")


# What each MTA adds at delivery to relayed mail that lacks them: Postfix
# nothing (local_header_rewrite_clients is empty), Sendmail the Date: and
# Message-Id: of its header templates (the delivering mailer's D and M flags).
RELAY_ADDS = {"postfix": {"Date": False, "Message-ID": False},
              "sendmail": {"Date": True, "Message-ID": True}}
# Sendmail takes an AUTH= parameter from an unauthenticated client and
# ignores it (it sets only {auth_author}); Postfix has no AUTH on this service.
AUTH_PARAMETER = {"postfix": [], "sendmail": ["AUTH=<sgtest1@example.org>"]}


def test_network_mail_is_relayed_without_submission_fixups(stack, request):
    """Mail from the port-25-style service is not a submission: no login, no
    fix-ups, whatever identity it claims; its X-Sendgate-Login: is removed."""
    m = unique_marker(request)
    host, port = stack.inbound
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo("attacker.example")
        client.sendmail("carol@example.net", ["bob@example.org"],
                        f"X-Sendgate-Login: sgtest1\r\nFrom: sgtest1@example.org\r\nSubject: {m}\r\n\r\nhi\r\n",
                        mail_options=AUTH_PARAMETER[stack.mta])
    (item,) = delivered(stack, m)
    qid = queue_id(item)
    assert item.all("Sender") == [] and item.all("X-Sendgate-Login") == []
    assert {name: bool(item.all(name)) for name in ("Date", "Message-ID")} == RELAY_ADDS[stack.mta]
    if stack.mta == "sendmail":
        assert re.fullmatch(rf"<\d{{12}}\.{qid}@mail\.{DOMAIN}>", item.one("Message-ID"))
        lines = sendmail_log_lines(stack, qid, until="stat=Sent")
        assert any(": from=<carol@example.net>" in line and ", daemon=inbound, " in line for line in lines)
    log = milter_log_lines(stack, qid, until=": no fix-ups")
    assert log[-1].endswith(f"{qid}: relay: from=<carol@example.net> nrcpt=1: no fix-ups")
    assert any(f"{qid}: removed 1 X-Sendgate-Login field(s) from a client" in line for line in log)
