"""Dead letters and `sendgate resubmit`: a message the MTA did not take is
saved with its envelope, and resubmitting sends exactly that again, as the
same user, removing each message only once the MTA accepted it.

Uses its own test user sgtest4 (other suites use sgtest1's dead.letter).
"""

from __future__ import annotations

import os
import pathlib
import pwd

import pytest

from conftest import clear_dead_letter, DOMAIN, delivered, need, program, run_as, sendmail, unique_marker
from sendgate.sendmail_shim.deadletter import format_entry, parse_entry, split_entries
from sendgate.sendmail_shim.client import Envelope


@pytest.fixture(scope="session")
def stack(postfix_stack):
    """Postfix only for now: these cases expect Postfix's queue commands and
    its SMTPUTF8 and DSN support (the Sendmail build has no SMTPUTF8)."""
    return postfix_stack

USER = "sgtest4"
HOME = pathlib.Path("/home") / USER
DEAD = HOME / "dead.letter"
DOWN = {"SENDGATE_SOCKET": "/nonexistent/submit.sock"}
FOREIGN = b"To: someone\nSubject: saved by mail(1)\n\nunfinished\n\n"


@pytest.mark.parametrize("message", [
    pytest.param(b"Subject: s\n\nbody\n", id="plain"),
    pytest.param(b"Subject: s\n\nFrom here\n>From there\n>>From afar\n", id="from-lines-quoted"),
    pytest.param(b"Subject: s\r\n\r\ncrlf\r\n", id="crlf"),
    pytest.param(b"Subject: s\n\nno final newline", id="unterminated"),
    pytest.param(b"Subject: s\n\n\n\ntrailing blank lines\n\n\n", id="blank-lines"),
])
@pytest.mark.parametrize("envelope", [
    pytest.param(Envelope("u@x", ["a@y", "b@z"], False, [], []), id="argv"),
    pytest.param(Envelope("", [], True, ["RCPTHDR", "BODY=8BITMIME", "ENVID=e+2B1"], ["NOTIFY=DELAY"]),
                 id="extract-null-sender-params"),
])
def test_entry_round_trip(message, envelope):
    entry = format_entry(message, envelope, "Mon Nov 30 12:00:00 2026")
    data = FOREIGN + entry + entry
    chunks = split_entries(data)
    assert b"".join(chunks) == data and chunks[0] == FOREIGN and parse_entry(chunks[0]) is None
    for chunk in chunks[1:]:
        got, text = parse_entry(chunk)
        assert vars(got) == vars(envelope)
        # LF line ends, one added if the message had no final one; its own
        # trailing empty lines kept (docs/fuzzing.md, finding F2).
        lf = message.replace(b"\r\n", b"\n")
        assert text == (lf if lf.endswith(b"\n") else lf + b"\n")


@pytest.fixture
def dead():
    need(os.geteuid() == 0, "runs the sendmail command as a test user")
    clear_dead_letter(HOME)
    yield DEAD
    clear_dead_letter(HOME)


def resubmit(stack, *args):
    return run_as(USER, [program("sendgate"), "resubmit", *args], env=stack.env())


def test_resubmit_sends_and_removes(stack, dead, request):
    m = unique_marker(request)
    args = ["-t", "-i", "-B", "8BITMIME", "-N", "failure", "-F", "Night Job", "extra@example.net"]
    message = f"To: bob@example.net\nBcc: hidden@example.net\nSubject: {m}\n\nFrom the depths\n.\n".encode()
    failed = sendmail(stack, USER, args, message, DOWN)
    assert failed.returncode == 75
    assert failed.stderr.endswith(f"; message saved in {DEAD}\n".encode())
    assert dead.stat().st_mode & 0o777 == 0o600
    assert dead.stat().st_uid == pwd.getpwnam(USER).pw_uid

    result = resubmit(stack)
    assert (result.returncode, result.stderr) == (0, b"")
    # -t with -N: the command listed the header's recipients as well.
    assert result.stdout.startswith(f"resubmit: message from <{USER}> to <extra@example.net>, <bob@example.net>, "
                                    "<hidden@example.net>: sent: 250 2.0.0 Ok".encode())
    assert not dead.exists()
    copies = delivered(stack, m, count=3)
    assert sorted(c.one("X-Original-To") for c in copies) == ["bob@example.net", "extra@example.net",
                                                             "hidden@example.net"]
    for item in copies:
        assert item.one("From") == f"Night Job <{USER}@{DOMAIN}>"
        assert item.all("Bcc") == []
        assert item.raw.split(b"\n\n", 1)[1] == b"From the depths\n.\n"


def test_resubmit_keeps_what_fails_and_what_is_not_ours(stack, dead, request):
    m = unique_marker(request)
    dead.write_bytes(FOREIGN)
    os.chown(dead, pwd.getpwnam(USER).pw_uid, -1)
    good = f"To: bob@example.net\nSubject: {m} good\n\nok\n".encode()
    bad = f"To: bob@example.net\nSubject: {m} bad\n\nnot yours\n".encode()
    assert sendmail(stack, USER, ["-t", "-i"], good, DOWN).returncode == 75
    assert sendmail(stack, USER, ["-t", "-i", "-f", "root@example.org"], bad, DOWN).returncode == 75
    before = dead.read_bytes()
    bad_entry = split_entries(before)[2]

    result = resubmit(stack)
    assert result.returncode == 77
    assert result.stderr == (b"sendgate: resubmit: message from <root@example.org> to its header recipients: "
                             b"sender refused: 553 5.7.1 <root@example.org>: Sender address rejected: "
                             b"not owned by user sgtest4; kept in /home/sgtest4/dead.letter\n")
    assert dead.read_bytes() == FOREIGN + bad_entry
    assert dead.stat().st_mode & 0o777 == 0o600
    (item,) = delivered(stack, m)
    assert item.one("Subject") == f"{m} good"

    again = resubmit(stack)
    assert again.returncode == 77 and dead.read_bytes() == FOREIGN + bad_entry


def test_appending_after_foreign_text_starts_a_new_entry(dead):
    dead.write_bytes(b"no final newline")
    os.chown(dead, pwd.getpwnam(USER).pw_uid, -1)
    result = run_as(USER, [program("sendgate-sendmail"), "-i", "a@example.net"], b"Subject: x\n\ny\n", DOWN)
    assert result.returncode == 75
    chunks = split_entries(dead.read_bytes())
    assert chunks[0] == b"no final newline\n\n"
    assert parse_entry(chunks[1])[0].recipients == ["a@example.net"]


@pytest.mark.parametrize("setup,status,stdout,stderr", [
    pytest.param(None, 0, b"resubmit: /home/sgtest4/dead.letter: no dead letters\n", b"", id="nothing-saved"),
    pytest.param("symlink", 66, b"",
                 b"sendgate: resubmit: /home/sgtest4/dead.letter: a symbolic link, not followed\n", id="symlink"),
])
def test_resubmit_edge_cases(stack, dead, setup, status, stdout, stderr):
    if setup == "symlink":
        target = HOME / "elsewhere"
        target.write_bytes(FOREIGN)
        dead.symlink_to(target)
    result = resubmit(stack)
    assert (result.returncode, result.stdout, result.stderr) == (status, stdout, stderr)
    if setup == "symlink":
        assert (HOME / "elsewhere").read_bytes() == FOREIGN


def test_resubmit_with_the_listener_down_keeps_everything(stack, dead):
    assert sendmail(stack, USER, ["-i", "a@example.net"], b"Subject: x\n\ny\n", DOWN).returncode == 75
    before = dead.read_bytes()
    result = run_as(USER, [program("sendgate"), "resubmit"], env={**stack.env(), **DOWN})
    assert result.returncode == 75
    assert result.stderr == (b"sendgate: resubmit: message from <sgtest4> to <a@example.net>: cannot connect to "
                             b"/nonexistent/submit.sock: No such file or directory; kept in /home/sgtest4/dead.letter\n")
    assert dead.read_bytes() == before


def test_append_waiting_for_a_resubmit_follows_the_replaced_file(dead):
    # A resubmit holds the lock and then renames a new file over the name; a
    # sendmail that was waiting for the lock must append to the new file.
    import fcntl
    import subprocess
    import time
    dead.write_bytes(FOREIGN)
    os.chown(dead, pwd.getpwnam(USER).pw_uid, -1)
    old = os.open(dead, os.O_RDWR)
    fcntl.flock(old, fcntl.LOCK_EX)
    env = [f"{k}={v}" for k, v in {"HOME": str(HOME), "PATH": "/usr/bin:/bin", **DOWN}.items()]
    waiting = subprocess.Popen(["runuser", "-u", USER, "--", "env", "-i", *env, program("sendgate-sendmail"),
                                "-i", "late@example.net"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    waiting.stdin.write(b"Subject: late\n\nwaited\n")
    waiting.stdin.close()
    inode = f":{os.fstat(old).st_ino} "
    while not any("->" in line and inode in line for line in pathlib.Path("/proc/locks").read_text().splitlines()):
        assert waiting.poll() is None, waiting.stderr.read()
        time.sleep(0.01)
    replacement = dead.with_name("dead.letter.new")
    replacement.write_bytes(b"From replaced\n")
    os.chown(replacement, pwd.getpwnam(USER).pw_uid, -1)
    replacement.rename(dead)
    fcntl.flock(old, fcntl.LOCK_UN)
    assert waiting.wait(30) == 75
    assert os.pread(old, 4096, 0) == FOREIGN
    os.close(old)
    chunks = split_entries(dead.read_bytes())
    assert chunks[0] == b"From replaced\n\n"
    assert parse_entry(chunks[1])[0].recipients == ["late@example.net"]
