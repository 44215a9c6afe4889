"""Saved messages: the sendmail command keeps a message it could not hand
to the MTA in the spool (sendgate/spool.py, docs/spool.md), and in
~/dead.letter only when the spool cannot be written; `sendgate resubmit`
sends the user's own spool entries and ~/dead.letter again.

~/dead.letter is an mbox ("mboxrd": a body line starting with "From ",
after any number of ">", gets one more ">"), so mail readers open it; each
entry is in the spool's entry format (sendgate/spool.py).

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

from sendgate import spool
from sendgate.sendmail_shim.client import (EX_NOINPUT, EX_OK, Envelope, Failure, read_settings, send,
                                           socket_path)
from sendgate.spool import format_entry, parse_entry


def spool_directory(settings: dict[str, str]) -> str:
    return settings.get("spool_directory") or spool.DEFAULT_DIRECTORY


def keep(message: bytes, envelope: Envelope, settings: dict[str, str]) -> str | None:
    """Save a message that was not sent: in the spool, else appended to
    ~/dead.letter; where it went, or None when neither could take it."""
    try:
        return spool.save(spool_directory(settings), message, envelope)
    except OSError:
        return save(message, envelope)


def default_path() -> str | None:
    try:
        return os.path.join(pwd.getpwuid(os.getuid()).pw_dir, "dead.letter")
    except KeyError:
        return None


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
            what = describe(envelope)
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


def describe(envelope: Envelope) -> str:
    return f"message from <{envelope.sender}> to " + (
        ", ".join(f"<{r}>" for r in envelope.recipients) or "its header recipients")


def resubmit_spool(directory: str, verbose: bool) -> int:
    """Send this user's waiting spool entries again through the submit
    socket; each is removed once the MTA accepted it."""
    try:
        mine = [name for state, name in spool.own_entries(directory, os.getuid()) if state == "waiting"]
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return EX_OK   # no spool here: nothing of ours can be in it
    sock = socket_path(read_settings())
    status = EX_OK
    try:
        for name in mine:
            path = os.path.join(directory, name)
            try:
                found = spool.read_entry(dfd, name, spool.DEFAULT_USER_SIZE_LIMIT)
            except spool.Refused as err:
                sys.stderr.write(f"sendgate: resubmit: {path}: not sent: {err}\n")
                status = status or EX_NOINPUT
                continue
            if found is None:
                continue   # gone, or being sent by sendgate-submitd now
            fd, _, envelope, message = found
            try:
                reply = send(envelope, sock, message, verbose)
                os.unlink(name, dir_fd=dfd)
                print(f"resubmit: {describe(envelope)}: sent: 250 {reply}")
            except Failure as failure:
                status = status or failure.status
                sys.stderr.write(f"sendgate: resubmit: {describe(envelope)}: {failure}; kept in {path}\n")
            finally:
                os.close(fd)
    finally:
        os.close(dfd)
    return status


def list_saved(directory: str, path: str | None) -> int:
    """`sendgate resubmit --list`: one line per saved message of this user."""
    try:
        mine = spool.own_entries(directory, os.getuid())
    except OSError:
        mine = []
    for state, name in mine:
        stored = {"bad": spool.BAD, "refused": spool.REFUSED}.get(state, "") + name
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(spool.written_at(name)))
        print(f"{state} {when} {os.path.join(directory, stored)}")
    path = path or default_path()
    try:
        with open(path, "rb") as fp:
            count = sum(parse_entry(chunk) is not None for chunk in split_entries(fp.read()))
    except (OSError, TypeError):
        count = 0
    if count:
        print(f"dead.letter {count} message{'s' if count > 1 else ''} {path}")
    return EX_OK


def command(path: str | None, verbose: bool, listing: bool = False) -> int:
    """`sendgate resubmit [-v] [--list] [FILE]`: the exit status.  Without
    FILE, the user's spool entries first, then ~/dead.letter."""
    try:
        directory = spool_directory(read_settings())
        if listing:
            return list_saved(directory, path)
        status = EX_OK if path else resubmit_spool(directory, verbose)
        if not path and default_path() is None:
            return status   # no home: the spool is all there is
        return resubmit(path, verbose) or status
    except Failure as failure:
        sys.stderr.write(f"sendgate: resubmit: {failure}\n")
        return failure.status
