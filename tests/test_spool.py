"""The spool (sendgate/spool.py, docs/spool.md): a message the sendmail
command could not hand over is saved as a file of its caller's in
spool_directory and sent again by sendgate-submitd as the file's owner,
with the Date: of its first submission; entries that fail a check are set
aside, never sent as anyone."""

from __future__ import annotations

import os
import pathlib
import pwd
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import assert_submitted_by, delivered, need, program, run_as, start_stack, stop_stack, unique_marker
from sendgate import spool
from sendgate.sendmail_shim.client import Envelope


@pytest.fixture(scope="module")
def spooled():
    """A Postfix stack whose submitd passes over its own spool every second."""
    need(os.geteuid() == 0, "builds a stack and runs commands as the test users")
    directory = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-spool-", dir="/tmp"))
    directory.chmod(0o755)
    spool_dir = directory / "deferred"
    spool_dir.mkdir()
    sendgate = pwd.getpwnam("sendgate")
    os.chown(spool_dir, sendgate.pw_uid, sendgate.pw_gid)
    spool_dir.chmod(spool.DIRECTORY_MODE)
    stack = start_stack("sendgate-spoolstack-", f"spool_directory={spool_dir}", "spool_retry_interval=1",
                        "spool_user_size_limit=200000")
    yield stack, spool_dir
    stop_stack(stack.dir)
    subprocess.run(["rm", "-rf", str(directory)])


@pytest.fixture(scope="module")
def nohome():
    """An account without a home, as www-data."""
    need(os.geteuid() == 0, "creates a user")
    subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "sgnohome"], check=True)
    yield "sgnohome"
    subprocess.run(["userdel", "sgnohome"], check=True)


STARTED: dict[int, subprocess.Popen] = {}   # submitd processes this module started, by pid


def stop_submitd(stack) -> None:
    pid = int((stack.dir / "run/submitd.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    if pid in STARTED:
        STARTED.pop(pid).wait(20)   # our child: reaped here, or it would linger as a zombie
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail("submitd did not stop")


def start_submitd(stack) -> None:
    """Start the stack's submitd again, as `stack up` does (sendgate/stack.py)."""
    with open(stack.dir / "log/submitd.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sendgate.submit_socket.main", "--config", stack.config],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                                env=dict(os.environ, SENDGATE_CONFIG=stack.config), start_new_session=True)
    STARTED[proc.pid] = proc
    (stack.dir / "run/submitd.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 20
    while not pathlib.Path(stack.socket).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_for_log(stack, text: str, timeout: float = 20) -> str:
    log = stack.dir / "log/submitd.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        time.sleep(0.1)
    pytest.fail(f"submitd never logged {text!r}")


def message(marker: str) -> bytes:
    return f"To: bob@example.net\nSubject: {marker}\n\nsaved\n".encode()


@pytest.mark.parametrize("user", ["sgtest2", "nohome"])
def test_listener_down_saves_in_the_spool_and_submitd_sends_it_with_its_date(spooled, nohome, request, user):
    stack, spool_dir = spooled
    user = nohome if user == "nohome" else user
    m = unique_marker(request)
    stop_submitd(stack)
    try:
        result = run_as(user, [program("sendgate-sendmail"), "-t", "-i"], message(m), stack.env())
        assert result.returncode == 75
        stderr = result.stderr.decode()
        assert stderr.startswith(f"sendmail: cannot connect to {stack.socket}: ")
        saved = pathlib.Path(stderr.rsplit("; message saved in ", 1)[1].rstrip("\n"))
        assert saved.parent == spool_dir and spool.owner_of(saved.name) == pwd.getpwnam(user).pw_uid
        st = saved.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (
            pwd.getpwnam(user).pw_uid, pwd.getpwnam("sendgate").pw_gid, 0o640)
        fd, _, envelope, text = spool.read_entry(os.open(spool_dir, os.O_RDONLY), saved.name, 1 << 20)
        os.close(fd)
        assert text.startswith(b"Date: ") and text.endswith(message(m))
        date = text.split(b"\n", 1)[0][6:].decode()
        # mail(1) truncating ~/dead.letter cannot touch the spool.
        if user != nohome:
            run_as(user, ["sh", "-c", ": > ~/dead.letter"])
        assert saved.exists()
    finally:
        start_submitd(stack)
    copies = delivered(stack, m)
    assert len(copies) == 1
    assert copies[0].one("Date") == date
    assert_submitted_by(stack, copies[0], user)
    wait_for_log(stack, f"spool: {saved.name}: uid={pwd.getpwnam(user).pw_uid} from=<{user}>: sent: 250 ")
    assert not saved.exists()


def entry(marker: str, sender: str) -> bytes:
    return spool.format_entry(message(marker), Envelope(sender, [], True, ["RCPTHDR"], []), "Mon Nov 30 12:00:00 2026")


def plant(user: str, spool_dir: pathlib.Path, name: str, script: str, data: bytes) -> None:
    result = run_as(user, ["sh", "-c", script, "sh", str(spool_dir), name], data)
    assert result.returncode == 0, result.stderr


def name_for(user: str) -> str:
    return f"{pwd.getpwnam(user).pw_uid}.{time.time_ns()}.{os.urandom(8).hex()}"


# (case, planting user, uid the name claims, shell script run as that user, why it is refused)
HOSTILE = [
    pytest.param("sgtest1", "sgtest1", 'ln -s /home/sgtest2/x "$1/$2"', "a symbolic link", id="symlink"),
    pytest.param("sgtest1", "sgtest2", None, "2 hard links", id="hard-link"),   # planted below
    pytest.param("sgtest2", "sgtest1", 'cat > "$1/$2"; chmod 640 "$1/$2"', "named for uid", id="owner-not-name"),
    pytest.param("sgtest1", "sgtest1", 'head -c 300000 /dev/zero | tr "\\0" x >> "$1/$2"; chmod 640 "$1/$2"',
                 "over spool_user_size_limit", id="oversized"),
    pytest.param("sgtest1", "sgtest1", 'cat > "$1/$2"; chmod 666 "$1/$2"', "mode 0666", id="writable-by-others"),
]


@pytest.mark.parametrize("planter,claimed,script,why", HOSTILE)
def test_hostile_entries_are_set_aside_never_sent(spooled, request, planter, claimed, script, why):
    stack, spool_dir = spooled
    m = unique_marker(request)
    name = name_for(claimed)
    if script is None:
        # sgtest2's own world-writable file, linked into the spool by sgtest1.
        target = pathlib.Path(f"/tmp/sg-hardlink-{m}")
        run_as("sgtest2", ["sh", "-c", f'cat > {target}; chmod 666 {target}'], entry(m, "sgtest2"))
        result = run_as("sgtest1", ["ln", str(target), str(spool_dir / name)])
        assert result.returncode == 0, result.stderr
    else:
        plant(planter, spool_dir, name, script, entry(m, claimed))
    log = wait_for_log(stack, f"spool: {name}: refused, set aside as .bad.{name}: ")
    assert why in log.split(f"spool: {name}: refused", 1)[1].split("\n", 1)[0]
    assert (spool_dir / f".bad.{name}").is_symlink() or (spool_dir / f".bad.{name}").exists()
    assert delivered(stack, m, timeout=2) == []
    if script is None:
        target.unlink()


def test_half_written_entry_is_never_picked_up(spooled, request):
    stack, spool_dir = spooled
    m = unique_marker(request) + "half"
    name = name_for("sgtest1")
    plant("sgtest1", spool_dir, spool.TEMP + name, 'cat > "$1/$2"; chmod 640 "$1/$2"', entry(m, "sgtest1")[:-30])
    # A complete entry written after it is sent: the pass saw the temporary one.
    after = unique_marker(request) + "after"
    later = name_for("sgtest1")
    plant("sgtest1", spool_dir, later, 'cat > "$1/$2"; chmod 640 "$1/$2"', entry(after, "sgtest1"))
    assert len(delivered(stack, after)) == 1
    assert delivered(stack, m, timeout=2) == []
    assert (spool_dir / (spool.TEMP + name)).exists()


def test_resubmit_list_shows_own_entries_only(spooled):
    stack, spool_dir = spooled
    stop_submitd(stack)
    try:
        run_as("sgtest3", [program("sendgate-sendmail"), "-t", "-i"], message("list-me"), stack.env())
        mine = run_as("sgtest3", [program("sendgate"), "resubmit", "--list"], env=stack.env())
        theirs = run_as("sgtest4", [program("sendgate"), "resubmit", "--list"], env=stack.env())
        status = subprocess.run([program("sendgate"), "status", "--config", stack.config],
                                capture_output=True, text=True, timeout=60).stdout.splitlines()
        sent = run_as("sgtest3", [program("sendgate"), "resubmit"], env={**stack.env(),
                                                                        "SENDGATE_SOCKET": "/nonexistent"})
    finally:
        start_submitd(stack)
    lines = mine.stdout.decode().splitlines()
    assert len(lines) >= 1 and all(line.startswith("waiting ") for line in lines)
    assert all(f"/{pwd.getpwnam('sgtest3').pw_uid}." in line for line in lines)
    assert b"sgtest3" not in theirs.stdout and str(pwd.getpwnam("sgtest3").pw_uid).encode() + b"." not in theirs.stdout
    assert sent.returncode == 75
    assert f"spool: {spool_dir} mode 3777 sendgate:sendgate" in status
    assert any(line.startswith("spool: 1 message(s) waiting, oldest saved ") for line in status), status
    assert len(delivered(stack, "list-me")) >= 1
