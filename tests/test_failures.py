"""When sending fails, the sendmail command says why, exits with the right
sysexits status, and keeps the message in ~/dead.letter."""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import clear_dead_letter, DOMAIN, hup_submitd, need, program, run_as, sendmail

USER = "sgtest1"
HOME = pathlib.Path("/home") / USER
DEAD = HOME / "dead.letter"
MESSAGE = b"To: bob@example.net\nSubject: failure test\n\nkeep me\n"


@pytest.fixture
def no_dead_letter():
    need(os.geteuid() == 0, "runs the sendmail command as a test user")
    clear_dead_letter(HOME)
    yield DEAD
    clear_dead_letter(HOME)


def start_submitd(directory: pathlib.Path, upstream: str, log) -> subprocess.Popen:
    """A real sendgate-submitd on directory/submit.sock, forwarding to upstream."""
    config = directory / "sendgate.yaml"
    config.write_text(f"myhostname: mail.{DOMAIN}\nmyorigin: {DOMAIN}\nsubmit_socket: {directory}/submit.sock\n"
                      f"submit_upstream: unix:{upstream}\nlog_destination: stderr\n")
    daemon = subprocess.Popen([program("python"), "-m", "sendgate.submit_socket.main", "--config", str(config)],
                              stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while not (directory / "submit.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return daemon


@pytest.fixture(scope="module")
def mta_down():
    """A real sendgate-submitd whose MTA service does not exist."""
    need(os.geteuid() == 0, "starts a daemon that drops to the sendgate user")
    directory = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-mtadown-", dir="/tmp"))
    directory.chmod(0o755)
    log = open(directory / "submitd.log", "wb")
    daemon = start_submitd(directory, f"{directory}/no-such-mta", log)
    yield directory
    daemon.terminate()
    daemon.wait(10)
    log.close()
    shutil.rmtree(directory, ignore_errors=True)


def run_shim(args, env, message=MESSAGE):
    return run_as(USER, [program("sendgate-sendmail"), *args], message, env)


def saved_entries() -> list[bytes]:
    return [e for e in DEAD.read_bytes().split(b"\nFrom ") if e]


def test_no_listener_exits_75_and_saves(no_dead_letter):
    result = run_shim(["-t", "-i"], {"SENDGATE_SOCKET": "/nonexistent/submit.sock"})
    assert result.returncode == 75
    assert result.stderr == (b"sendmail: cannot connect to /nonexistent/submit.sock: No such file or directory;"
                             b" message saved in /home/sgtest1/dead.letter\n")
    entry = DEAD.read_bytes()
    assert entry.startswith(b"From sgtest1 ")
    assert b"\nX-Sendgate-Envelope-From: <sgtest1>\nX-Sendgate-Envelope-To: (none)\nX-Sendgate-Extract: yes\n" in entry
    assert entry.endswith(MESSAGE + b"\n")
    assert DEAD.stat().st_mode & 0o777 == 0o600
    assert DEAD.stat().st_uid == pwd.getpwnam(USER).pw_uid


def test_dead_letter_is_appended_never_overwritten(no_dead_letter):
    for _ in range(2):
        assert run_shim(["-i", "bob@example.net"], {"SENDGATE_SOCKET": "/nonexistent"}).returncode == 75
    assert DEAD.read_bytes().count(b"keep me") == 2
    assert DEAD.read_bytes().count(b"X-Sendgate-Envelope-To: <bob@example.net>") == 2


def test_dead_letter_symlink_is_not_followed(no_dead_letter):
    target = HOME / "elsewhere"
    DEAD.symlink_to(target)
    result = run_shim(["-t", "-i"], {"SENDGATE_SOCKET": "/nonexistent"})
    assert result.returncode == 75
    assert result.stderr.endswith(b"; the message could not be saved\n")
    assert not target.exists()


def test_mta_down_is_421_and_exit_75(mta_down, no_dead_letter):
    result = run_shim(["-t", "-i"], {"SENDGATE_SOCKET": str(mta_down / "submit.sock")})
    assert result.returncode == 75
    assert result.stderr == (b"sendmail: submit server refused the session: 421 4.3.0 mail.example.org"
                             b" Service not available: the mail system is not reachable, try again later;"
                             b" message saved in /home/sgtest1/dead.letter\n")
    assert b"keep me" in DEAD.read_bytes()
    log = (mta_down / "submitd.log").read_text()
    assert "mail system unavailable: connect to" in log and "No such file or directory" in log


@pytest.mark.parametrize("args,message,status,stderr", [
    pytest.param(["-t", "-i", "-f", "root@example.org"], MESSAGE, 77,
                 b"sendmail: sender refused: 553 5.7.1 <root@example.org>: Sender address rejected: "
                 b"not owned by user sgtest1; message saved in /home/sgtest1/dead.letter\n", id="foreign-sender-77"),
    pytest.param(["-t", "-i"], b"Subject: nobody\n\nhi\n", 65,
                 b"sendmail: message refused: 554 5.6.0 To: no recipients found in the message header;"
                 b" message saved in /home/sgtest1/dead.letter\n", id="no-recipients-in-header-65"),
    pytest.param(["-t", "-i"], b"To: a@example.net, <broken\n\nhi\n", 65,
                 b"sendmail: message refused: 554 5.6.0 To: unbalanced angle bracket;"
                 b" message saved in /home/sgtest1/dead.letter\n", id="bad-to-syntax-65"),
])
def test_refusals_through_the_stack(stack, no_dead_letter, args, message, status, stderr):
    result = sendmail(stack, USER, args, message)
    assert (result.returncode, result.stderr) == (status, stderr)
    assert message.replace(b"\r\n", b"\n").rstrip(b"\n") in DEAD.read_bytes()


@pytest.mark.parametrize("args,env,status,stderr", [
    pytest.param(["-Z"], {}, 64, b"sendmail: usage: unknown option -Z\n", id="unknown-option"),
    pytest.param(["-i"], {}, 64, b"sendmail: usage: no recipients given (use -t to take them from the header)\n",
                 id="no-recipients"),
    pytest.param(["-f"], {}, 64, b"sendmail: usage: option -f needs an argument\n", id="missing-argument"),
    pytest.param(["-N", "sometimes", "a@b"], {}, 64,
                 b"sendmail: usage: bad -N value 'sometimes': use never, or success,delay,failure\n", id="bad-dsn"),
    pytest.param(["-t"], {"SENDGATE_CONFIG": "/nonexistent.yaml"}, 78,
                 b"sendmail: /nonexistent.yaml: no such file\n", id="missing-config"),
])
def test_usage_and_configuration_errors(no_dead_letter, args, env, status, stderr):
    result = run_shim(args, env)
    assert (result.returncode, result.stderr) == (status, stderr)
    assert not DEAD.exists()


@pytest.fixture
def mta_dies_at_end_of_data():
    """A real sendgate-submitd in front of an MTA that hangs up on the final dot."""
    need(os.geteuid() == 0, "starts a daemon that drops to the sendgate user")
    import asyncio
    import socket as socketlib
    import threading

    directory = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-mtadies-", dir="/tmp"))
    directory.chmod(0o755)
    listener = socketlib.socket(socketlib.AF_UNIX)
    listener.bind(str(directory / "mta"))
    os.chmod(directory / "mta", 0o666)
    listener.listen(8)

    def mta():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                conn.sendall(b"220 dying ESMTP\r\n")
                for line in lines:
                    verb = line.split(b" ", 1)[0].strip().upper()
                    if line == b".\r\n":
                        break  # hang up instead of answering the message
                    answer = {b"EHLO": b"250-dying\r\n250 XCLIENT LOGIN\r\n", b"XCLIENT": b"220 dying\r\n",
                              b"DATA": b"354 go\r\n"}.get(verb, b"250 2.0.0 Ok\r\n")
                    if verb in (b"EHLO", b"XCLIENT", b"MAIL", b"RCPT", b"DATA", b"RSET", b"QUIT"):
                        conn.sendall(answer)

    thread = threading.Thread(target=mta, daemon=True)
    thread.start()
    daemon = start_submitd(directory, f"{directory}/mta", subprocess.DEVNULL)
    yield directory
    daemon.terminate()
    daemon.wait(10)
    listener.close()
    shutil.rmtree(directory, ignore_errors=True)


def test_mta_dying_mid_message_is_exit_75_and_saved(mta_dies_at_end_of_data, no_dead_letter):
    result = run_shim(["-i", "bob@example.net"], {"SENDGATE_SOCKET": str(mta_dies_at_end_of_data / "submit.sock")})
    assert (result.returncode, result.stderr) == (
        75, b"sendmail: message refused: 451 4.4.2 Error: lost connection with the mail system; message not accepted,"
            b" try again later; message saved in /home/sgtest1/dead.letter\n")
    assert b"keep me" in DEAD.read_bytes()


@pytest.fixture
def milter_away(stack):
    """The stack's milter unreachable for one test: its socket renamed, and
    the MTA sessions the submit daemon kept (each already connected to the
    milter) ended with a SIGHUP, so the test's message meets a new one."""
    sock = stack.dir / "run/milter/milter.sock"
    away = sock.with_name("milter.sock.away")
    sock.rename(away)
    hup_submitd(stack)
    yield stack
    away.rename(sock)


# Both MTAs fail closed (Postfix milter_default_action = tempfail, Sendmail
# F=T); each words its temporary failure in its own way.
MILTER_AWAY = {
    "postfix": b"sendmail: message refused: 451 4.7.1 Service unavailable - try again later;"
               b" message saved in /home/sgtest1/dead.letter\n",
    "sendmail": b"sendmail: message refused: 451 4.3.2 Please try again later;"
                b" message saved in /home/sgtest1/dead.letter\n",
}


def test_milter_away_is_a_temporary_failure(milter_away, no_dead_letter):
    stack = milter_away
    result = sendmail(stack, USER, ["-t", "-i"], MESSAGE)
    assert (result.returncode, result.stderr) == (75, MILTER_AWAY[stack.mta])
    assert b"keep me" in DEAD.read_bytes()
