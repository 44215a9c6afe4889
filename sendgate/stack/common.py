"""What the Postfix and the Sendmail stack share: the directory layout of
sendgate's own part, the configuration file, starting, watching and
stopping the daemons.

Layout (each MTA module adds its own entries to Paths.WHERE):
    DIR/sendgate.yaml           the sendgate configuration (config=)
    DIR/run/submit.sock         the submit socket, mode 0666 (socket=)
    DIR/run/milter/milter.sock  the milter socket, in a set-gid directory of the MTA's group
    DIR/run/NAME.pid            daemons started by `stack up`
    DIR/run/inbound             HOST:PORT of the port-25-style service (inbound=)
    DIR/mail/Maildir/           delivered mail (maildir=)
    DIR/log/submitd.log, milter.log   the daemons' logs
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from typing import Callable

from sendgate import config
from sendgate.postfix import greeting

SERVICE_USER = "sendgate"
READY_TIMEOUT = 30.0


class StackError(Exception):
    """stack up/down cannot go on; str() says why and what to do."""


class Paths:
    """Where everything of a stack lives, as attributes: p.socket, p.maildir..."""

    WHERE = {
        "config": "sendgate.yaml", "run": "run", "socket": "run/submit.sock",
        "milter_dir": "run/milter", "milter_socket": "run/milter/milter.sock",
        "mail": "mail", "maildir": "mail/Maildir", "logs": "log",
        "submitd_log": "log/submitd.log", "milter_log": "log/milter.log", "inbound_file": "run/inbound",
    }

    def __init__(self, root: str):
        self.root = root

    def __getattr__(self, name: str) -> str:
        if name not in self.WHERE:
            raise AttributeError(name)
        return os.path.join(self.root, self.WHERE[name])

    def pidfile(self, name: str) -> str:
        return os.path.join(self.root, "run", f"{name}.pid")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise StackError(message)


def require_not_running(p: Paths, *daemons: str) -> None:
    require(not any(os.path.exists(p.pidfile(n)) for n in daemons),
            f"a stack seems to be running in {p.root}: run `sendgate stack down --dir {p.root}` first")


def require_users(*users: str) -> None:
    for user in users:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise StackError(f"user {user!r} does not exist (scripts/bootstrap creates it)") from None


def write(path: str, text: str, mode: int = 0o644) -> None:
    with open(path, "w", encoding="utf-8") as fp:
        fp.write(text)
    os.chmod(path, mode)


def mkdir(path: str, mode: int, owner: str | None = None, group: str | None = None) -> None:
    os.makedirs(path, exist_ok=True)
    uid = pwd.getpwnam(owner).pw_uid if owner else -1
    gid = grp.getgrnam(group).gr_gid if group else -1
    os.chown(path, uid, gid)
    os.chmod(path, mode)  # after chown, which may clear the set-gid bit


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inbound_port(p: Paths) -> int:
    """A free loopback port for the inbound service, recorded in run/inbound."""
    port = free_loopback_port()
    write(p.inbound_file, f"127.0.0.1:{port}\n")
    return port


def write_config(p: Paths, values: dict, settings: dict | None) -> config.Config:
    """DIR/sendgate.yaml: the stack's values, then the --set settings over
    them; returns it as every daemon will load it."""
    unknown = sorted(set(settings or {}) - set(config.KEYS))
    if unknown:
        raise config.ConfigError("--set", None, unknown[0], "unknown key")
    write(p.config, config.render({**values, **(settings or {})}))
    return config.load(p.config)  # what we wrote must pass our own check


def spawn(p: Paths, name: str, module: str, log_path: str) -> int:
    """Start `python -m module --config DIR/sendgate.yaml` in a session of
    its own, logging to log_path; record its pid in run/NAME.pid."""
    # cwd "/": `python -m` puts the working directory first on sys.path, and
    # a checkout there would shadow the installed package.
    return spawn_program(p, name, [sys.executable, "-m", module, "--config", p.config], log_path)


def spawn_program(p: Paths, name: str, argv: list[str], log_path: str) -> int:
    """Start argv (staying in the foreground) in a session of its own, in
    "/", logging to log_path; record its pid in run/NAME.pid."""
    env = dict(os.environ, SENDGATE_CONFIG=p.config)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd="/",
                                start_new_session=True, close_fds=True)
    write(p.pidfile(name), f"{proc.pid}\n")
    return proc.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as dead: reap it when it is our child; when it is not
    # (the `stack up` that started it has exited), it waits for an init that
    # may never reap it, as in a container.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fp:
            return fp.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_for(what: str, ready: Callable[[], bool], pids: dict[str, int], logs: dict[str, str],
             timeout: float = READY_TIMEOUT) -> None:
    """Until ready() is true; StackError when a daemon of pids exits first
    (with the end of its log) or after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        for name, pid in pids.items():
            if not alive(pid):
                raise StackError(f"{name} exited during start-up; see {logs[name]}:\n{_tail(logs[name])}")
        time.sleep(0.05)
    raise StackError(f"timed out waiting for {what}")


def _tail(path: str, lines: int = 10) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fp:
            return "".join(fp.readlines()[-lines:])
    except OSError:
        return ""


def start_milter(p: Paths, pids: dict[str, int], logs: dict[str, str]) -> None:
    logs["milter"] = p.milter_log
    pids["milter"] = spawn(p, "milter", "sendgate.milter.main", p.milter_log)
    wait_for("the milter socket", lambda: os.path.exists(p.milter_socket), pids, logs)


def start_submitd(p: Paths, pids: dict[str, int], logs: dict[str, str]) -> None:
    """Start the submit daemon; wait until a session on its socket gets the
    MTA's greeting."""
    logs["submitd"] = p.submitd_log
    pids["submitd"] = spawn(p, "submitd", "sendgate.submit_socket.main", p.submitd_log)
    wait_for("the submit socket",
             lambda: os.path.exists(p.socket) and (greeting(p.socket) or "").startswith("220 "), pids, logs)


def stop(p: Paths, name: str) -> str | None:
    """SIGTERM the daemon of that pid file, SIGKILL after 10 s; its name[pid]."""
    path = p.pidfile(name)
    try:
        with open(path, encoding="ascii") as fp:
            pid = int(fp.read().strip())
    except (OSError, ValueError):
        return None
    stopped = None
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped = f"{name}[{pid}]"
    except ProcessLookupError:
        pass
    os.unlink(path)
    return stopped


def down(directory: str, *stop_mtas: Callable[[str], list[str]]) -> list[str]:
    """Stop what `stack up` started in directory: the submit daemon, then
    the MTA (each of stop_mtas, given the stack's root, stops what it
    finds there of its own MTA), then
    the milter, whose libmilter waits for the MTA's open connections.
    Returns what was stopped."""
    p = Paths(os.path.abspath(directory))
    stopped = [stop(p, "submitd")]
    for stop_mta in stop_mtas:
        stopped += stop_mta(p.root)
    stopped.append(stop(p, "milter"))
    for sock in (p.socket, p.milter_socket):
        if os.path.exists(sock):
            os.unlink(sock)
    return [name for name in stopped if name]
