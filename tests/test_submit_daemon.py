"""sendgate-submitd as a process: privileges, its socket, signals, systemd."""

from __future__ import annotations

import os
import pathlib
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import DOMAIN, need, program


@pytest.fixture(scope="session")
def stack(postfix_stack):
    """Postfix only: this file tests Postfix's own mechanisms or wording."""
    return postfix_stack


SERVICE = "sendgate"


def proc_status(pid: int) -> dict[str, str]:
    lines = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def stack_pid(stack, name: str) -> int:
    return int((stack.dir / "run" / f"{name}.pid").read_text())


@pytest.mark.parametrize("name", ["submitd", "milter"])
def test_daemons_run_as_the_service_user(stack, name):
    status = proc_status(stack_pid(stack, name))
    uid, gid = pwd.getpwnam(SERVICE).pw_uid, pwd.getpwnam(SERVICE).pw_gid
    assert status["Uid"].split() == [str(uid)] * 4
    assert status["Gid"].split() == [str(gid)] * 4
    assert status["CapEff"] == "0000000000000000"
    if name == "submitd":
        assert str(grp.getgrnam("postdrop").gr_gid) in status["Groups"].split()


def test_submit_daemon_runs_on_uvloop(stack):
    """uvloop is a dependency: the daemon says which event loop it runs."""
    log = (stack.dir / "log/submitd.log").read_text()
    assert "listening on " in log
    assert all(line.endswith("(event loop: uvloop)") for line in log.splitlines() if "listening on " in line)


def test_submit_socket_is_open_to_every_user(stack):
    st = os.stat(stack.socket)
    assert oct(st.st_mode & 0o777) == "0o666"


@pytest.fixture
def scratch():
    need(os.geteuid() == 0, "starts daemons that drop privileges")
    directory = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-daemon-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def write_config(directory: pathlib.Path, upstream: str, **extra) -> pathlib.Path:
    lines = [f"myhostname: mail.{DOMAIN}", f"myorigin: {DOMAIN}", f"submit_socket: {directory}/submit.sock",
             f"submit_upstream: unix:{upstream}", "log_destination: stderr"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path = directory / "sendgate.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start(config: pathlib.Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([program("python"), "-m", "sendgate.submit_socket.main", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def greeting(path: str) -> bytes:
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(path)
                return s.recv(512)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out.decode()


def test_live_socket_is_not_stolen(stack, scratch):
    config = write_config(scratch, "/nonexistent")
    config.write_text(config.read_text().replace(f"{scratch}/submit.sock", stack.socket))
    proc = start(config)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 71
    assert f"fatal: {stack.socket} is in use by another running daemon" in out.decode()
    assert greeting(stack.socket).startswith(b"220 ")


def test_stale_socket_is_replaced_and_sigterm_stops(scratch):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(scratch / "submit.sock"))
    stale.close()
    proc = start(write_config(scratch, "/nonexistent"))
    assert greeting(str(scratch / "submit.sock")).startswith(b"421 4.3.0 ")
    status, log = stop(proc)
    assert status == 0
    assert f"removed stale socket {scratch}/submit.sock" in log
    assert "stopped" in log


def test_a_file_in_the_way_is_left_alone(scratch):
    (scratch / "submit.sock").write_text("not a socket")
    proc = start(write_config(scratch, "/nonexistent"))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 71
    assert f"{scratch}/submit.sock exists and is not a socket: not touching it" in out.decode()
    assert (scratch / "submit.sock").read_text() == "not a socket"


@pytest.mark.parametrize("user,status,message", [
    pytest.param("root", 78, "service user 'root' is root: refusing to run as root", id="root"),
    pytest.param("no-such-user", 78, "service user 'no-such-user' does not exist", id="unknown"),
])
def test_refuses_to_serve_as_root_or_nobody_known(scratch, user, status, message):
    proc = start(write_config(scratch, "/nonexistent", submit_user=user))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == status
    assert message in out.decode()


def test_bad_configuration_stops_the_daemon(scratch):
    config = scratch / "bad.yaml"
    config.write_text("submit_socket: /x\nsubmit_sesion_limit: 3\n")
    proc = start(config)
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out.decode()) == (78, f"sendgate-submitd: fatal: {config}:2: submit_sesion_limit: unknown key\n")


def test_socket_activation(stack, scratch):
    """Under systemd the socket arrives as fd 3 with LISTEN_FDS=1; the daemon
    must serve it without binding anything itself."""
    path = str(scratch / "activated.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    os.chmod(path, 0o666)
    listener.listen(16)
    config = write_config(scratch, stack.dir / "postfix/spool/public/sendgate")
    fd = listener.fileno()
    # As systemd does: the socket as fd 3, LISTEN_PID naming the daemon.
    activate = ("import os, sys; fd = int(sys.argv[1]); fd == 3 or (os.dup2(fd, 3), os.close(fd));"
                "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); os.execv(sys.argv[2], sys.argv[2:])")
    proc = subprocess.Popen(
        [program("python"), "-c", activate, str(fd), program("python"), "-m", "sendgate.submit_socket.main",
         "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(fd,))
    listener.close()
    try:
        first = greeting(path)
    finally:
        status, log = stop(proc)
    assert first.startswith(b"220 mail.example.org ESMTP sendgate"), log
    assert not (scratch / "submit.sock").exists()
    assert status == 0, log
    assert "listening on the socket passed by systemd" in log


def test_systemd_units_verify(tmp_path):
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")
    units = pathlib.Path(__file__).resolve().parent.parent / "config/systemd"
    for unit in units.iterdir():
        shutil.copy(unit, tmp_path / unit.name)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
                            capture_output=True, text=True, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20",
                               str(tmp_path / "sendgate-submitd.service")], capture_output=True, text=True)
    assert security.returncode == 0, security.stdout[-500:]


def test_socket_mode_and_group_from_configuration(scratch):
    proc = start(write_config(scratch, "/nonexistent", submit_socket_mode="0660", submit_socket_group="postdrop"))
    try:
        greeting(str(scratch / "submit.sock"))
        st = os.stat(scratch / "submit.sock")
    finally:
        stop(proc)
    assert (oct(st.st_mode & 0o777), st.st_gid) == ("0o660", grp.getgrnam("postdrop").gr_gid)
