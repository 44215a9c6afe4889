"""Loopback TCP clients: the kernel's owner of the client socket is the
login (sendgate/milter/loopback.py finds it, sendgate/policy/loopback.py
decides), and the milter_loopback_clients setting."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time

import pytest

from conftest import delivered, milter_log_lines, queue_id, run_as, unique_marker
from miltermta import MTA
from test_milter_protocol import stable
from sendgate import replies
from sendgate.milter import loopback
from sendgate.milter.loopback import Socket
from sendgate.policy.loopback import LoopbackMode, LoopbackVerdict, decide

# Lines as Linux 6.x writes them (x86-64, little-endian), taken from a
# v4 client 127.0.0.1:48062 and a v6 client [::1]:37804 connected to a
# dual-stack listener on [::]:47337.
HEADING = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
V4_CLIENT = ("  73: 0100007F:BBBE 0100007F:B8E9 01 00000000:00000000 00:00000000 00000000  1001        0 "
             "1149734 2 00000000582c7be5 20 0 0 10 -1")
V6_LISTENER = ("   0: 00000000000000000000000000000000:B8E9 00000000000000000000000000000000:0000 0A "
               "00000000:00000002 00:00000000 00000000     0        0 1149732 3 00000000987097f4 100 0 0 10 0")
V6_CLIENT = ("   1: 00000000000000000000000001000000:93AC 00000000000000000000000001000000:B8E9 01 "
             "00000000:00000000 00:00000000 00000000  1002        0 1149733 2 00000000fcfd1bf7 20 0 0 10 -1")
V4_MAPPED_SERVER_END = ("   2: 0000000000000000FFFF00000100007F:B8E9 0000000000000000FFFF00000100007F:BBBE 01 "
                        "00000000:00000000 00:00000000 00000000   107        0 0 1 000000005a3a3dba 20 0 0 10 -1")
V6_SERVER_END = ("   3: 00000000000000000000000001000000:B8E9 00000000000000000000000001000000:93AC 01 "
                 "00000000:00000000 00:00000000 00000000   107        0 0 1 0000000018d7e9b6 20 0 0 10 -1")
TABLE = [HEADING, V4_CLIENT, V6_LISTENER, V6_CLIENT, V4_MAPPED_SERVER_END, V6_SERVER_END]


@pytest.mark.parametrize("line, expected", [
    pytest.param(HEADING, None, id="heading"),
    pytest.param(V4_CLIENT, Socket(("127.0.0.1", 48062), ("127.0.0.1", 47337), 0x01, 1001), id="ipv4"),
    pytest.param(V6_CLIENT, Socket(("::1", 37804), ("::1", 47337), 0x01, 1002), id="ipv6-loopback"),
    pytest.param(V6_LISTENER, Socket(("::", 47337), ("::", 0), 0x0A, 0), id="ipv6-listening"),
    pytest.param(V4_MAPPED_SERVER_END, Socket(("127.0.0.1", 47337), ("127.0.0.1", 48062), 0x01, 107),
                 id="v4-mapped-is-ipv4"),
])
def test_parse_line(line, expected):
    assert loopback.parse_line(line) == expected


@pytest.mark.parametrize("line", [
    pytest.param("  1: 0100007F 0100007F:B8E9 01 0:0 0:0 0 1 0 1", id="no-port"),
    pytest.param("  1: 0100007F:BBBE 0100007F:B8E9 01", id="short"),
    pytest.param("  1: 01007F:BBBE 0100007F:B8E9 01 0:0 0:0 0 1 0 1", id="bad-address-length"),
    pytest.param("local 0100007F:BBBE 0100007F:B8E9 01 0:0 0:0 0 1 0 1", id="no-slot"),
])
def test_parse_line_refuses_what_the_kernel_does_not_write(line):
    with pytest.raises(ValueError):
        loopback.parse_line(line)


@pytest.mark.parametrize("client, server, uid", [
    pytest.param(("127.0.0.1", 48062), ("127.0.0.1", 47337), 1001, id="ipv4-client"),
    pytest.param(("::ffff:127.0.0.1", 48062), ("::ffff:127.0.0.1", 47337), 1001, id="v4-mapped-macros"),
    pytest.param(("::1", 37804), ("::1", 47337), 1002, id="ipv6-client"),
    pytest.param(("127.0.0.1", 47337), ("127.0.0.1", 48062), 107, id="four-tuple-decides"),
    pytest.param(("127.0.0.1", 48062), ("127.0.0.1", 25), None, id="other-server-port"),
    pytest.param(("127.0.0.2", 48062), ("127.0.0.1", 47337), None, id="other-client-address"),
    pytest.param(("::", 47337), ("::", 0), None, id="listener-is-not-established"),
])
def test_find(client, server, uid):
    assert loopback.find(TABLE, client, server) == uid


@pytest.mark.parametrize("address, expected", [
    pytest.param("127.0.0.1", True, id="127.0.0.1"),
    pytest.param("127.8.9.10", True, id="127/8"),
    pytest.param("::1", True, id="::1"),
    pytest.param("::ffff:127.0.0.1", True, id="v4-mapped"),
    pytest.param("192.0.2.1", False, id="remote-v4"),
    pytest.param("2001:db8::1", False, id="remote-v6"),
    pytest.param("::ffff:192.0.2.1", False, id="remote-v4-mapped"),
    pytest.param("", False, id="none"),
    pytest.param("localhost", False, id="not-an-address"),
])
def test_is_loopback(address, expected):
    assert loopback.is_loopback(address) is expected


@pytest.mark.parametrize("mode, owner, expected", [
    pytest.param(LoopbackMode.IDENTIFY, "sgtest1", LoopbackVerdict("sgtest1", None, "kernel"), id="identify-user"),
    pytest.param(LoopbackMode.IDENTIFY, "root", LoopbackVerdict("root", None, "kernel"), id="identify-root"),
    pytest.param(LoopbackMode.IDENTIFY, None,
                 LoopbackVerdict(None, replies.R451_LOOPBACK_UNIDENTIFIED, "unidentified"), id="identify-not-found"),
    pytest.param(LoopbackMode.IDENTIFY, "",
                 LoopbackVerdict(None, replies.R451_LOOPBACK_UNIDENTIFIED, "unidentified"), id="identify-no-login"),
    pytest.param(LoopbackMode.REFUSE, "sgtest1",
                 LoopbackVerdict(None, replies.R550_LOOPBACK_REFUSED, "refused"), id="refuse"),
    pytest.param(LoopbackMode.RELAY, "sgtest1", LoopbackVerdict(None, None, "relay"), id="relay"),
    pytest.param(LoopbackMode.RELAY, None, LoopbackVerdict(None, None, "relay"), id="relay-unidentified"),
])
def test_policy_decision(mode, owner, expected):
    assert decide(mode, owner) == expected


def test_replies_are_exact():
    assert str(replies.R451_LOOPBACK_UNIDENTIFIED) == (
        "451 4.7.1 Error: loopback client not identified: its socket owner was not found, try again later")
    assert str(replies.R550_LOOPBACK_REFUSED) == (
        "550 5.7.1 Error: mail from loopback TCP clients is not accepted here; use the sendmail command")


# --- the kernel: a client run as a test user --------------------------------

HOLD = "import socket, sys; c = socket.create_connection(('{host}', {port})); print('up', flush=True); sys.stdin.read()"


@pytest.mark.parametrize("family, host", [pytest.param(socket.AF_INET, "127.0.0.1", id="ipv4"),
                                          pytest.param(socket.AF_INET6, "::1", id="ipv6")])
def test_owner_is_the_client_process_uid(family, host):
    """The uid found for a connection is the connecting user's, not the
    listener's (root): the kernel's answer, read from /proc/net/tcp{,6}."""
    import pwd
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen()
        port = listener.getsockname()[1]
        run_as("sgtest1", ["true"])  # root and the test user are there (need())
        entry = pwd.getpwnam("sgtest1")
        client = subprocess.Popen(["runuser", "-u", "sgtest1", "--", sys.executable, "-c",
                                   HOLD.format(host=host, port=port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            conn, peer = listener.accept()
            with conn:
                assert client.stdout.readline() == b"up\n"
                server = conn.getsockname()
                assert loopback.owner(peer[:2], server[:2]) == entry.pw_uid
                assert loopback.owner(server[:2], peer[:2]) == 0  # our own end is root's
        finally:
            client.communicate(b"", timeout=30)
    assert loopback.owner(peer[:2], server[:2]) is None  # closed: not found


# --- the stack: SMTP to the inbound service on loopback, as sgtest1 -----------

CLIENT = """
import smtplib, sys
host, port, sender, recipient, message = sys.argv[1:6]
with smtplib.SMTP(host, int(port), timeout=30) as client:
    client.ehlo("client.example")
    try:
        client.sendmail(sender, [recipient], message.replace("\\n", "\\r\\n"))
    except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as err:
        print(err.smtp_code, err.smtp_error.decode())
    except smtplib.SMTPRecipientsRefused as err:
        code, text = next(iter(err.recipients.values()))
        print(code, text.decode())
    else:
        print("250 queued")
"""


@contextlib.contextmanager
def loopback_setting(stack, value: str):
    path = stack.dir / "sendgate.yaml"
    original = path.read_text()
    line = "milter_loopback_clients: relay\n"  # the stack's (sendgate/stack/postfix.py)
    assert line in original
    path.write_text(original.replace(line, f"milter_loopback_clients: {value}\n"))
    time.sleep(1.1)  # the milter looks at the file at most once a second
    try:
        yield
    finally:
        path.write_text(original)
        time.sleep(1.1)


def smtp_as(stack, user: str, sender: str, message: str) -> str:
    host, port = stack.inbound
    result = run_as(user, ["/usr/bin/python3", "-c", CLIENT, host, str(port), sender, "bob@example.net", message])
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


def test_identified_loopback_client_gets_the_submission_policy(stack, request):
    m = unique_marker(request)
    with loopback_setting(stack, "identify"):
        reply = smtp_as(stack, "sgtest1", "sgtest1@example.org",
                        f"From: Carol <carol@example.net>\nTo: bob@example.net\nSubject: {m}\n\nhi\n")
        assert reply == "250 queued"
        (item,) = delivered(stack, m)
    qid = queue_id(item)
    assert item.one("Sender") == "sendgate test user sgtest1 <sgtest1@example.org>"
    assert item.one("From") == "Carol <carol@example.net>"
    assert item.all("Date") != [] and item.one("Message-ID").endswith("@mail.example.org>")
    lines = milter_log_lines(stack, qid, until=": accepted")
    assert any(f"{qid}: submission: login=sgtest1 from=<sgtest1@example.org> nrcpt=1 " in line for line in lines)


@pytest.mark.parametrize("setting, user, sender, expected", [
    pytest.param("identify", "sgtest1", "sgtest2@example.org",
                 "553 5.7.1 <sgtest2@example.org>: Sender address rejected: not owned by user sgtest1",
                 id="identify-another-users-sender"),
    pytest.param("identify", "sgtest1", "alice@example.org",
                 "553 5.7.1 <alice@example.org>: Sender address rejected: not owned by user sgtest1",
                 id="identify-foreign-sender"),
    pytest.param("identify", "root", "sgtest1@example.org",
                 "553 5.7.1 <sgtest1@example.org>: Sender address rejected: not owned by user root",
                 id="identify-root-as-root"),
    pytest.param("refuse", "sgtest1", "sgtest1@example.org",
                 "550 5.7.1 Error: mail from loopback TCP clients is not accepted here; use the sendmail command",
                 id="refuse-own-sender"),
])
def test_loopback_client_refused(stack, request, setting, user, sender, expected):
    m = unique_marker(request)
    with loopback_setting(stack, setting):
        reply = smtp_as(stack, user, sender, f"From: {sender}\nSubject: {m}\n\nhi\n")
    assert reply == expected
    assert delivered(stack, m, timeout=2) == []


def test_relay_setting_keeps_todays_behaviour(postfix_stack, request):
    """Postfix only: Sendmail adds a Date of its own to relayed mail."""
    m = unique_marker(request)
    with loopback_setting(postfix_stack, "relay"):
        reply = smtp_as(postfix_stack, "sgtest1", "alice@example.org", f"From: Alice <alice@example.org>\nSubject: {m}\n\nhi\n")
        assert reply == "250 queued"
        (item,) = delivered(postfix_stack, m)
    qid = queue_id(item)
    assert item.all("Sender") == [] and item.all("Date") == []
    lines = milter_log_lines(postfix_stack, qid, until=": no fix-ups")
    assert lines[-1].endswith(f"{qid}: relay: from=<alice@example.org> nrcpt=1: no fix-ups")


# --- the milter's connect step, from a milter client playing Postfix ---------

def held_by(user: str, listener: socket.socket) -> tuple:
    """A connection to listener from a process of user: (process, our end,
    the client's endpoint, the server's endpoint)."""
    host, port = listener.getsockname()[:2]
    client = subprocess.Popen(["runuser", "-u", user, "--", sys.executable, "-c", HOLD.format(host=host, port=port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    conn, peer = listener.accept()
    assert client.stdout.readline() == b"up\n"
    return client, conn, peer[:2], conn.getsockname()[:2]


@pytest.mark.parametrize("held, expected, logged", [
    pytest.param(True, [("ADDHEADER", "Date", "<date>"), ("ADDHEADER", "Message-ID", "<id>"), ("CONTINUE",)],
                 "{qid}: submission: login=sgtest1 from=<sgtest1@example.org> nrcpt=1 fixups=+Date,+Message-ID: accepted",
                 id="owner-found"),
    pytest.param(False, [("REPLYCODE", str(replies.R451_LOOPBACK_UNIDENTIFIED))],
                 "warning: {qid}: reject: loopback client unidentified: from=<sgtest1@example.org> nrcpt=1 "
                 + str(replies.R451_LOOPBACK_UNIDENTIFIED), id="closed-before-connect-is-unidentified"),
])
def test_connect_step_identifies_the_socket_owner(postfix_stack, request, held, expected, logged):
    qid = "L" + unique_marker(request)[1:11].upper()
    with socket.socket(socket.AF_INET) as listener, loopback_setting(postfix_stack, "identify"):
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client, conn, peer, server = held_by("sgtest1", listener)
        if not held:
            conn.close()
            client.communicate(b"", timeout=30)
        with MTA(str(postfix_stack.dir / "run/milter/milter.sock")) as mta:
            mta.connect(peer[0], peer[1], {"{daemon_addr}": server[0], "{daemon_port}": str(server[1])})
            got = mta.message("sgtest1@example.org", ["bob@example.net"],
                              [("From", "sgtest1@example.org"), ("Subject", "t")], queue_id=qid)
        if held:
            conn.close()
            client.communicate(b"", timeout=30)
    assert stable(got) == expected
    lines = milter_log_lines(postfix_stack, qid, until=logged[-20:])
    assert lines[-1].split("]: ", 1)[1] == logged.format(qid=qid)
