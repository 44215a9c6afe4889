"""The Sendmail stack's log: a syslog socket that writes one file.

Sendmail logs only through syslog(3), to /dev/log.  The stack runs Sendmail
in a mount namespace whose /dev is DIR/sendmail/dev, where this program
listens on the socket "log" and appends every message to DIR/log/sendmail.log
as Postfix writes its own log file: "Nov 30 12:00:00 sendmail[123]: text".

    python -m sendgate.stack.syslog SOCKET LOGFILE USER

It binds SOCKET (mode 0660, group of USER, the account Sendmail runs as),
opens LOGFILE, then drops to USER and serves until SIGTERM.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import sys

_PRIORITY = re.compile(rb"<\d{1,3}>")


def line_for(datagram: bytes) -> bytes:
    """A syslog datagram as one log line: priority removed, one newline."""
    text = _PRIORITY.sub(b"", datagram, count=1) if _PRIORITY.match(datagram) else datagram
    return text.rstrip(b"\0\r\n").replace(b"\n", b" ") + b"\n"


def main(argv: list[str] | None = None) -> int:
    path, logfile, user = sys.argv[1:] if argv is None else argv
    entry = pwd.getpwnam(user)
    if os.path.lexists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chown(path, 0, entry.pw_gid)
    os.chmod(path, 0o660)
    log = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.setgroups([])
    os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    while True:
        os.write(log, line_for(sock.recv(65536)))


if __name__ == "__main__":
    sys.exit(main())
