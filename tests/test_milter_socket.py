"""The milter's socket: reached through a directory that only the service
user and the MTA's group may enter (mode 2750, set-gid), so that the milter
runs without privilege and without a supplementary group, as its systemd
unit starts it (docs/threat-model.md)."""

from __future__ import annotations

import grp
import os
import pathlib
import pwd
import shutil
import stat
import subprocess
import tempfile

import pytest

from conftest import need, program

SERVICE_USER = "sendgate"


@pytest.fixture
def place():
    """A directory the service user can reach (pytest's own tmp_path is in
    root's private /tmp/pytest-of-root)."""
    need(os.geteuid() == 0, "the directory is given to another user and group")
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is not installed")
    for name, lookup in ((SERVICE_USER, pwd.getpwnam), ("postfix", grp.getgrnam)):
        try:
            lookup(name)
        except KeyError:
            need(False, f"no account {name} (scripts/bootstrap and Postfix make them)")
    path = tempfile.mkdtemp(prefix="sendgate-milter-socket-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path)


def make_directory(path, mode, group="postfix"):
    path.mkdir()
    os.chown(path, pwd.getpwnam(SERVICE_USER).pw_uid, grp.getgrnam(group).gr_gid)
    os.chmod(path, mode)
    return path


def start_milter(place, directory):
    """sendgate-milter started the way its unit starts it: as the service
    user, its own group only (setpriv --clear-groups)."""
    config = place / "sendgate.yaml"
    config.write_text(f"milter_socket: unix:{directory}/milter.sock\nmilter_user: {SERVICE_USER}\n"
                      "milter_socket_group: postfix\nlog_destination: stderr\n")
    os.chmod(config, 0o644)
    return subprocess.Popen(["setpriv", f"--reuid={SERVICE_USER}", f"--regid={SERVICE_USER}", "--clear-groups",
                             program("sendgate-milter"), "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("mode,group,why", [
    pytest.param(0o2755, "postfix", "{d} is open to every user (mode 2755)", id="open-to-others"),
    pytest.param(0o0750, "postfix", "{d} is not set-gid (mode 0750): the socket would not get group postfix",
                 id="not-set-gid"),
    pytest.param(0o2750, "sendgate", "{d} belongs to group sendgate, not postfix", id="other-group"),
])
def test_the_milter_refuses_a_directory_that_does_not_keep_the_socket_private(place, mode, group, why):
    directory = make_directory(place / "milter", mode, group)
    proc = start_milter(place, directory)
    out, _ = proc.communicate(timeout=60)
    problem = why.format(d=directory)
    assert proc.returncode == 78, out
    assert (f"milter_socket unix:{directory}/milter.sock: {problem}; make it with "
            f"`install -d -o sendgate -g postfix -m 2750 {directory}` (setup-postfix does)") in out
    assert os.listdir(directory) == []


def test_unprivileged_milter_gives_its_socket_to_the_mta_group_alone(place):
    """No chown and no group of its own: the set-gid directory makes the
    socket group postfix; postfix connects, another user cannot."""
    directory = make_directory(place / "milter", 0o2750)
    proc = start_milter(place, directory)
    path = directory / "milter.sock"
    try:
        for _ in range(600):
            if path.exists() or proc.poll() is not None:
                break
            subprocess.run(["sleep", "0.05"])
        assert path.exists(), proc.communicate(timeout=10)[0] if proc.poll() is not None else "no socket"
        st = os.stat(path)
        assert (stat.S_ISSOCK(st.st_mode), stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name,
                grp.getgrgid(st.st_gid).gr_name) == (True, 0o660, SERVICE_USER, "postfix")
        probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX)\n"
                 "try: s.connect(sys.argv[1]); print('connected')\n"
                 "except OSError as e: print(e.strerror)")

        def connect_as(*ids):
            return subprocess.run(["setpriv", *ids, "/usr/bin/python3", "-c", probe, str(path)],
                                  capture_output=True, text=True, timeout=30).stdout.strip()

        assert connect_as("--reuid=postfix", "--regid=postfix", "--clear-groups") == "connected"
        assert connect_as("--reuid=nobody", "--regid=nogroup", "--clear-groups") == "Permission denied"
        with open(f"/proc/{proc.pid}/status", encoding="ascii") as fp:
            fields = dict(line.split(":", 1) for line in fp)
        assert (fields["Gid"].split()[:2], fields["Groups"].split()) == ([str(grp.getgrnam(SERVICE_USER).gr_gid)] * 2, [])
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
