"""Nobody can claim an identity that the kernel did not give them.

Each case is one way a local user or a network client might try to forge
who they are, run against the real stack, with the exact reply expected.
"""

from __future__ import annotations

import smtplib

import pytest

from conftest import DOMAIN, delivered, postfix_log_lines, program, queue_id, run_as, unique_marker

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


def dialogue(stack, user, *commands):
    result = run_as(user, [program("python"), "-c", DIALOGUE, stack.socket, *commands])
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


def test_helo_naming_another_user_changes_nothing(stack, request):
    m = unique_marker(request)
    replies = dialogue(stack, "sgtest1", "HELO sgtest2", "MAIL FROM:<sgtest1@example.org>",
                       "RCPT TO:<bob@example.net>", "DATA",
                       f"From: sgtest2@example.org\r\nSubject: {m}\r\n\r\nhi\r\n.", "QUIT")
    assert replies[-2].startswith("250 2.0.0 Ok: queued as ")
    (item,) = delivered(stack, m)
    assert item.one("Sender") == f"sendgate test user sgtest1 <sgtest1@{DOMAIN}>"
    assert any("sasl_username=sgtest1" in line for line in postfix_log_lines(stack, queue_id(item)))


def test_users_cannot_reach_the_xclient_service(stack):
    """Postfix's sendgate service trusts XCLIENT; only the sendgate user may connect."""
    upstream = stack.dir / "postfix/spool/public/sendgate"
    probe = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
    result = run_as("sgtest1", [program("python"), "-c", probe, str(upstream)])
    assert result.returncode == 1
    assert b"PermissionError: [Errno 13] Permission denied" in result.stderr


def test_network_clients_cannot_use_xclient(stack):
    host, port = stack.inbound
    with smtplib.SMTP(host, port, timeout=10) as client:
        code, features = client.ehlo("attacker.example")
        assert code == 250 and b"XCLIENT" not in features and b"AUTH" not in features
        assert client.docmd("XCLIENT", "LOGIN=sgtest1") == (550, b"5.7.0 Error: insufficient authorization")


def test_network_mail_is_relayed_without_submission_fixups(stack, request):
    """Mail from the port-25-style service is not a submission: no login, no fix-ups."""
    m = unique_marker(request)
    host, port = stack.inbound
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.sendmail("carol@example.net", ["bob@example.org"],
                        f"From: sgtest1@example.org\r\nSubject: {m}\r\n\r\nhi\r\n")
    (item,) = delivered(stack, m)
    assert item.all("Date") == [] and item.all("Message-ID") == [] and item.all("Sender") == []
    log = postfix_log_lines(stack, queue_id(item))
    assert not any("sasl_username" in line for line in log)
    milter_log = (stack.dir / "log/milter.log").read_text()
    assert f"{queue_id(item)}: relay: from=<carol@example.net> nrcpt=1: no fix-ups" in milter_log
