"""The Sendmail stack's delivery agent: one message on stdin into a Maildir.

Sendmail runs it as the "maildir" mailer of a stack's sendmail.cf, once per
recipient, as the stack's RunAsUser:

    python -m sendgate.stack.deliver MAILDIR RECIPIENT

It writes the message as Sendmail hands it over (Return-Path: from the
mailer's P flag, LF line ends) with X-Original-To: and Delivered-To: naming
the envelope recipient below the Return-Path: (where Postfix's virtual(8)
puts them in the Postfix stack) into MAILDIR/tmp, and renames it into
MAILDIR/new.  Exit status 0, or
75 (EX_TEMPFAIL) so that Sendmail keeps the message queued.
"""

from __future__ import annotations

import os
import socket
import sys
import time

EX_USAGE = 64
EX_TEMPFAIL = 75


def deliver(maildir: str, recipient: str, message: bytes) -> str:
    """Write one message into maildir; return its path in new/."""
    name = f"{time.time_ns()}.P{os.getpid()}.{socket.gethostname()}"
    temporary = os.path.join(maildir, "tmp", name)
    trace = f"X-Original-To: {recipient}\nDelivered-To: {recipient}\n".encode("utf-8", "surrogateescape")
    if message.startswith(b"Return-Path:"):
        # Below Sendmail's Return-Path:, where virtual(8) puts them.
        first, _, rest = message.partition(b"\n")
        trace, message = first + b"\n" + trace, rest
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(trace + message)
            fp.flush()
            os.fsync(fp.fileno())
        final = os.path.join(maildir, "new", name)
        os.rename(temporary, final)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return final


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m sendgate.stack.deliver MAILDIR RECIPIENT", file=sys.stderr)
        return EX_USAGE
    try:
        deliver(args[0], args[1], sys.stdin.buffer.read())
    except OSError as err:
        print(f"stack.deliver: {args[0]}: {err.strerror}", file=sys.stderr)
        return EX_TEMPFAIL
    return 0


if __name__ == "__main__":
    sys.exit(main())
