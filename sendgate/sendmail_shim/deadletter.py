"""Dead letters: messages the sendmail command could not hand to the MTA,
kept in ~/dead.letter, and `sendgate resubmit`, which sends them again.

The file is an mbox ("mboxrd": a body line starting with "From ", after any
number of ">", gets one more ">"), so mail readers open it.  Each entry is

    From <sender> <asctime>
    X-Sendgate-Envelope-From: <sender>
    X-Sendgate-Envelope-To: <rcpt>, <rcpt>        or (none)
    X-Sendgate-Extract: yes | no                  (sendmail -t: RCPTHDR)
    X-Sendgate-Mail-Parameters: BODY=8BITMIME ... (only when there are any)
    X-Sendgate-Rcpt-Parameters: NOTIFY=...        (only when there are any)
    <the message, LF line ends>
    <empty line>

Writers and the resubmitter take an exclusive flock() on the file.  The
resubmitter replaces the file (write a new one, rename it over) once it is
done; an appender that waited for the lock notices that the name now points
to another file and appends to that one instead, so nothing is lost.

Only the user runs any of this, with the user's own rights: the file is
opened with O_NOFOLLOW and created 0600, and a resubmitted message goes
through the submit socket like any other, so the server checks it again.

Entries not in this format (mail(1) writes a plain ~/dead.letter too) are
kept byte for byte.  A message is removed only after the MTA said 250; if
resubmit is killed between that and rewriting the file, that message is
sent again next time: at least once, never lost.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import sys
import time

from sendgate.sendmail_shim.client import (EX_NOINPUT, EX_OK, Envelope, Failure, read_settings, send,
                                           socket_path)

FIELDS = ("X-Sendgate-Envelope-From", "X-Sendgate-Envelope-To", "X-Sendgate-Extract",
          "X-Sendgate-Mail-Parameters", "X-Sendgate-Rcpt-Parameters")


def default_path() -> str | None:
    try:
        return os.path.join(pwd.getpwuid(os.getuid()).pw_dir, "dead.letter")
    except KeyError:
        return None


def format_entry(message: bytes, envelope: Envelope, when: str) -> bytes:
    params = [p for p in envelope.mail_params if p != "RCPTHDR"]
    lines = [f"From {envelope.sender or 'MAILER-DAEMON'} {when}",
             f"{FIELDS[0]}: <{envelope.sender}>",
             f"{FIELDS[1]}: " + (", ".join(f"<{r}>" for r in envelope.recipients) or "(none)"),
             f"{FIELDS[2]}: " + ("yes" if envelope.extract else "no")]
    lines += [f"{FIELDS[3]}: {' '.join(params)}"] if params else []
    lines += [f"{FIELDS[4]}: {' '.join(envelope.rcpt_params)}"] if envelope.rcpt_params else []
    body = message.replace(b"\r\n", b"\n")
    quoted = b"\n".join(b">" + line if line.lstrip(b">").startswith(b"From ") else line
                        for line in body.split(b"\n"))
    return "\n".join(lines + [""]).encode("utf-8", "surrogateescape") + quoted.rstrip(b"\n") + b"\n\n"


def split_entries(data: bytes) -> list[bytes]:
    """The file cut before every "From " line that starts it or follows an
    empty line; joining the pieces gives the file back byte for byte."""
    starts = [0] if data.startswith(b"From ") else []
    pos = data.find(b"\n\nFrom ")
    while pos >= 0:
        starts.append(pos + 2)
        pos = data.find(b"\n\nFrom ", pos + 2)
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)]) if data[a:b]]


def parse_entry(chunk: bytes) -> tuple[Envelope, bytes] | None:
    """The envelope and message of one of our entries, or None for any
    other text (kept as it is)."""
    lines = chunk.split(b"\n")
    if not lines[0].startswith(b"From ") or len(lines) < 4:
        return None
    values: dict[str, str] = {}
    n = 1
    for name in FIELDS:
        prefix = name.encode() + b": "
        if n < len(lines) and lines[n].startswith(prefix):
            values[name] = lines[n][len(prefix):].decode("utf-8", "surrogateescape")
            n += 1
    if not all(name in values for name in FIELDS[:3]) or not chunk.endswith(b"\n\n"):
        return None
    sender = values[FIELDS[0]]
    to = values[FIELDS[1]]
    if not (sender.startswith("<") and sender.endswith(">")):
        return None
    recipients = [] if to == "(none)" else to[1:-1].split(">, <")
    extract = values[FIELDS[2]] == "yes"
    mail = (["RCPTHDR"] if extract else []) + values.get(FIELDS[3], "").split()
    rcpt = values.get(FIELDS[4], "").split()
    body = lines[n:-2]  # the entry ends with the message's LF and an empty line
    message = b"".join((line[1:] if line.startswith(b">") and line.lstrip(b">").startswith(b"From ")
                        else line) + b"\n" for line in body)
    return Envelope(sender[1:-1], recipients, extract, mail, rcpt), message


def _open_locked(path: str, flags: int):
    """An fd on path holding an exclusive flock, for the file the name
    points to now (a resubmit may have replaced it while we waited)."""
    while True:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.lstat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def save(message: bytes, envelope: Envelope) -> str | None:
    """Append the message and its envelope to ~/dead.letter; the path, or
    None when it cannot be saved (no home, a symlink in the way, ...)."""
    path = default_path()
    if path is None:
        return None
    entry = format_entry(message, envelope, time.asctime())
    try:
        fd = _open_locked(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size:
            # Another program's text before us: start our entry after an
            # empty line, or it would not be an mbox entry of its own.
            tail = os.pread(fd, 2, max(0, size - 2))
            entry = (b"" if tail.endswith(b"\n\n") else b"\n" if tail.endswith(b"\n") else b"\n\n") + entry
        view = memoryview(entry)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        return None
    finally:
        os.close(fd)
    return path


def _replace(path: str, chunks: list[bytes]) -> None:
    """Put chunks in place of the file at path (we hold its lock)."""
    if not chunks:
        os.unlink(path)
        return
    temp = f"{path}.sendgate-{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, path)


def resubmit(path: str | None = None, verbose: bool = False) -> int:
    """Send every saved message again; print one line per message; return
    0 when all went, else the sysexits status of the first failure."""
    path = path or default_path()
    if path is None:
        raise Failure(EX_NOINPUT, "resubmit", f"uid {os.getuid()} has no home directory")
    sock = socket_path(read_settings())
    try:
        fd = _open_locked(path, os.O_RDWR)
    except FileNotFoundError:
        print(f"resubmit: {path}: no dead letters")
        return EX_OK
    except OSError as err:
        why = "a symbolic link, not followed" if err.errno == errno.ELOOP else err.strerror
        raise Failure(EX_NOINPUT, path, why) from None
    status = EX_OK
    try:
        with os.fdopen(os.dup(fd), "rb") as fp:
            chunks = split_entries(fp.read())
        kept, sent = [], 0
        for chunk in chunks:
            parsed = parse_entry(chunk)
            if parsed is None:
                kept.append(chunk)
                continue
            envelope, message = parsed
            what = f"message from <{envelope.sender}> to " + (
                ", ".join(f"<{r}>" for r in envelope.recipients) or "its header recipients")
            try:
                reply = send(envelope, sock, message, verbose)
            except Failure as failure:
                kept.append(chunk)
                status = status or failure.status
                sys.stderr.write(f"sendgate: resubmit: {what}: {failure}; kept in {path}\n")
                continue
            sent += 1
            print(f"resubmit: {what}: sent: 250 {reply}")
        if sent:
            _replace(path, kept)
    finally:
        os.close(fd)
    return status


def command(path: str | None, verbose: bool) -> int:
    """`sendgate resubmit [-v] [FILE]`: the exit status."""
    try:
        return resubmit(path, verbose)
    except Failure as failure:
        sys.stderr.write(f"sendgate: resubmit: {failure}\n")
        return failure.status
