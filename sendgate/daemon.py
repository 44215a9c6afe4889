"""What every sendgate daemon does the same way: options, configuration,
logging, and the privilege steps.

The privilege sequence is fixed and runs at the top of each daemon's main():
bind the listening socket while still root, drop to the service user with
drop_privileges(), which verifies the result with os.getresuid(), and only
then read anything a client sends.
"""

from __future__ import annotations

import argparse
import atexit
import grp
import logging
import logging.handlers
import os
import pwd
import queue as queue_module
import stat
import sys

from sendgate import config
from sendgate.replies import shown

EX_USAGE = 64
EX_SOFTWARE = 70
EX_OSERR = 71
EX_NOPERM = 77
EX_CONFIG = 78


def argument_parser(program: str, manual: str) -> argparse.ArgumentParser:
    """An option parser whose --help prints the program's manual page."""
    parser = argparse.ArgumentParser(
        prog=program, description=manual, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"{program} [--config FILE] [--foreground]")
    parser.add_argument("--config", "-c", default=os.environ.get("SENDGATE_CONFIG", config.DEFAULT_PATH),
                        help="configuration file (default: $SENDGATE_CONFIG or %(default)s)")
    return parser


def load_config_or_exit(program: str, path: str) -> config.Config:
    try:
        return config.load(path)
    except config.ConfigError as err:
        print(f"{program}: fatal: {err}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None


class _PostfixFormatter(logging.Formatter):
    """program[pid]: [severity: ]message, as Postfix writes its log lines."""

    def __init__(self, program: str, with_time: bool):
        super().__init__()
        self.program = program
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        severity = {logging.WARNING: "warning: ", logging.ERROR: "error: ",
                    logging.CRITICAL: "fatal: "}.get(record.levelno, "")
        line = f"{self.program}[{os.getpid()}]: {severity}{record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            line += " (" + self.formatException(record.exc_info).splitlines()[-1] + ")"
        if self.with_time:
            line = self.formatTime(record, "%b %d %H:%M:%S") + " " + line
        return line


class _Handoff(logging.handlers.QueueHandler):
    """Hands records to the writing thread as they are: the default
    prepare() formats and copies each one in the caller's thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def setup_logging(program: str, destination: str, syslog_socket: str = "/dev/log",
                  threads: bool = False) -> logging.Logger:
    """Log to syslog (facility mail) or to stderr; syslog falls back to
    stderr when there is no syslog socket, with a warning saying so.

    threads: the caller logs from many threads (the milter: libmilter runs
    one per MTA connection); records then go through a queue to one thread
    that formats and writes them, instead of every thread waiting its turn
    for the handler's lock (bench/).  The queue is drained at exit."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    fallback = False
    if destination == "syslog":
        try:
            handler: logging.Handler = logging.handlers.SysLogHandler(
                address=syslog_socket, facility=logging.handlers.SysLogHandler.LOG_MAIL)
            handler.setFormatter(_PostfixFormatter(program, with_time=False))
        except OSError:
            fallback = True
    if destination != "syslog" or fallback:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PostfixFormatter(program, with_time=True))
    if threads:
        queue: queue_module.SimpleQueue = queue_module.SimpleQueue()
        listener = logging.handlers.QueueListener(queue, handler)
        handoff = _Handoff(queue)

        def write_directly_from_now_on() -> None:
            """At exit: write what is queued, then what comes after directly."""
            if handoff in root.handlers:  # one assignment: no line twice, none lost
                root.handlers[root.handlers.index(handoff)] = listener.handlers[0]
            listener.stop()

        listener.start()
        atexit.register(write_directly_from_now_on)
        handler = handoff
    root.addHandler(handler)
    log = logging.getLogger(program)
    if fallback:
        log.warning("no syslog socket %s: logging to stderr", syslog_socket)
    return log


def drop_privileges(user: str, log: logging.Logger, groups: tuple[str, ...] = ()) -> None:
    """Become user (with its groups from /etc/group, and groups) and verify
    it stuck.

    Refuses to go on as root: a daemon that cannot drop privileges exits.
    When not started as root, the process must already be that user (the
    systemd unit gives it groups with SupplementaryGroups=).
    """
    entry = pwd.getpwuid(user_id(user, log))
    if entry.pw_uid == 0:
        log.critical("service user %r is root: refusing to run as root", user)
        raise SystemExit(EX_CONFIG)
    if os.geteuid() == 0:
        os.initgroups(user, entry.pw_gid)
        os.setgroups(sorted(set(os.getgroups()) | {group_id(name, log) for name in groups}))
        os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
        os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    if os.getresuid() != (entry.pw_uid,) * 3 or os.getresgid() != (entry.pw_gid,) * 3:
        log.critical("running as uid %s, not as service user %s (uid %d): start as root or as that user",
                     os.getresuid(), user, entry.pw_uid)
        raise SystemExit(EX_NOPERM)
    groups = ",".join(grp.getgrgid(g).gr_name for g in os.getgroups())
    log.info("running as %s (uid=%d gid=%d groups=%s)", user, entry.pw_uid, entry.pw_gid, groups)


def user_id(name: str, log: logging.Logger) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        log.critical("service user %r does not exist", name)
        raise SystemExit(EX_CONFIG) from None


def group_id(name: str, log: logging.Logger) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        log.critical("group %r does not exist", name)
        raise SystemExit(EX_CONFIG) from None


def socket_directory_problem(path: str, owner: str, group: str) -> str | None:
    """Why the directory of the unix socket at path does not keep the socket
    to its owner and group, None when it does.  The milter's socket is
    reached through a directory only the MTA's group may enter, set-gid so
    that the socket the unprivileged milter makes gets that group: no chown,
    no supplementary group (docs/threat-model.md)."""
    directory = os.path.dirname(path)
    try:
        st = os.stat(directory)
        gid = grp.getgrnam(group).gr_gid
    except OSError as err:
        return f"{directory}: {err.strerror}"
    except KeyError:
        return f"group {group!r} does not exist"
    mode = stat.S_IMODE(st.st_mode)
    if st.st_gid != gid:
        why = f"{directory} belongs to group {_group_name(st.st_gid)}, not {group}"
    elif mode & 0o007:
        why = f"{directory} is open to every user (mode {mode:04o})"
    elif not mode & stat.S_ISGID:
        why = f"{directory} is not set-gid (mode {mode:04o}): the socket would not get group {group}"
    else:
        return None
    return f"{why}; make it with `install -d -o {owner} -g {group} -m 2750 {directory}` (setup-postfix does)"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def quote(value: str, limit: int = 200) -> str:
    """An untrusted value for a log line: printable, cut at limit (the
    rule replies use too: sendgate.replies.shown)."""
    return shown(value, limit)
