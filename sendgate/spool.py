"""The spool: messages the sendmail command could not hand to the MTA, one
file per message in spool_directory, read back by sendgate-submitd
(sendgate/submit_socket/retry.py) and by `sendgate resubmit`.  The modes,
the checks and the threats are in docs/spool.md.

An entry is named UID.NANOSECONDS.RANDOM (16 hex digits), written by the
caller as .tmp.NAME (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0640) and renamed when
complete, so a reader never sees half an entry: names starting with "." are
never sent.  The kernel's owner of the file, not its name, is the identity
it is sent as; a name whose UID is not the owner's is refused.  A refused
entry is renamed .bad.NAME, one the MTA refused for good .refused.NAME;
both stay for their owner to read (`sendgate resubmit --list`) and remove.

The entry format (also that of ~/dead.letter, sendgate/sendmail_shim/deadletter.py):

    From <sender> <asctime>
    X-Sendgate-Envelope-From: <sender>
    X-Sendgate-Envelope-To: <rcpt>, <rcpt>        or (none)
    X-Sendgate-Extract: yes | no                  (sendmail -t: RCPTHDR)
    X-Sendgate-Mail-Parameters: BODY=8BITMIME ... (only when there are any)
    X-Sendgate-Rcpt-Parameters: NOTIFY=...        (only when there are any)
    <the message, LF line ends, mboxrd-quoted "From " lines>
    <empty line>
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from sendgate.sendmail_shim.client import Envelope

DEFAULT_DIRECTORY = "/var/spool/sendgate/deferred"   # spool_directory in sendgate/config.py
DEFAULT_USER_SIZE_LIMIT = 51200000                   # spool_user_size_limit in sendgate/config.py
ENTRY_MODE = 0o640
DIRECTORY_MODE = 0o3777                              # docs/spool.md: why others may list
TEMP, BAD, REFUSED = ".tmp.", ".bad.", ".refused."

FIELDS = ("X-Sendgate-Envelope-From", "X-Sendgate-Envelope-To", "X-Sendgate-Extract",
          "X-Sendgate-Mail-Parameters", "X-Sendgate-Rcpt-Parameters")


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
    # The message's own trailing empty lines stay (fuzz/spool.py found them
    # lost); it ends with a LF, then the empty line that ends the entry.
    if quoted and not quoted.endswith(b"\n"):
        quoted += b"\n"
    return "\n".join(lines + [""]).encode("utf-8", "surrogateescape") + quoted + b"\n"


def parse_entry(chunk: bytes) -> tuple[Envelope, bytes] | None:
    """The envelope and message of one of our entries, or None for any
    other text."""
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


def with_date(message: bytes) -> bytes:
    """The message with a Date: of now on top when its header has none, so
    that a late delivery still shows when it was written."""
    from email.utils import formatdate

    from sendgate.policy.message import split_message
    fields, body = split_message(message)
    if any(f.is_("Date") for f in fields):
        return message
    line = f"Date: {formatdate(localtime=True)}\n".encode("ascii")
    if not fields and len(body) == len(message):
        return line + b"\n" + message   # no header at all: the input is all body
    return line + message


def owner_of(name: str) -> int | None:
    """The uid an entry's name claims, or None when it is not an entry's name."""
    parts = name.split(".")
    if len(parts) != 3 or not all(p.isascii() and p for p in parts):
        return None
    uid, nanoseconds, random = parts
    if not (uid.isdigit() and nanoseconds.isdigit() and len(random) == 16
            and all(c in "0123456789abcdef" for c in random)):
        return None
    return int(uid)


def written_at(name: str) -> float:
    """When an entry was saved, from its name (seconds since the epoch)."""
    return int(name.split(".")[1]) / 1e9


def save(directory: str, message: bytes, envelope: Envelope) -> str:
    """Write one entry as the caller; its path.  OSError when the directory
    is missing, not ours to use (not a sticky, set-gid directory) or full."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(dfd)
        if st.st_mode & (stat.S_ISVTX | stat.S_ISGID) != stat.S_ISVTX | stat.S_ISGID:
            raise OSError(errno.EPERM, "not a sticky set-gid directory", directory)
        name = f"{os.getuid()}.{time.time_ns()}.{os.urandom(8).hex()}"
        entry = format_entry(with_date(message), envelope, time.asctime())
        fd = os.open(TEMP + name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     ENTRY_MODE, dir_fd=dfd)
        try:
            os.fchmod(fd, ENTRY_MODE)   # whatever the umask: the group (sendgate) reads it
            view = memoryview(entry)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(TEMP + name, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            os.unlink(TEMP + name, dir_fd=dfd)
            raise
    finally:
        os.close(dfd)
    return os.path.join(directory, name)


class Refused(Exception):
    """An entry that must not be sent: why."""


def read_entry(dfd: int, name: str, size_limit: int) -> tuple[int, int, Envelope, bytes] | None:
    """An fd holding the entry's flock (close it once the entry is removed
    or kept), the owner's uid, the envelope and the message of the entry
    name in the directory dfd, after the checks of docs/spool.md; None when
    it is gone or being sent by another reader (submitd, its owner's
    resubmit).  Refused for anything else."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise Refused("a symbolic link" if err.errno == errno.ELOOP else err.strerror) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(name, dir_fd=dfd, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("not a regular file")
        if st.st_nlink != 1:
            raise Refused(f"{st.st_nlink} hard links")
        if stat.S_IMODE(st.st_mode) & ~ENTRY_MODE:
            raise Refused(f"mode {stat.S_IMODE(st.st_mode):04o}, more than {ENTRY_MODE:04o}")
        if owner_of(name) != st.st_uid:
            raise Refused(f"named for uid {owner_of(name)}, owned by uid {st.st_uid}")
        if st.st_size > size_limit:
            raise Refused(f"{st.st_size} bytes, over spool_user_size_limit ({size_limit})")
        chunks, size = [], 0
        while size <= size_limit:
            chunk = os.read(fd, min(1 << 20, size_limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > size_limit:
            raise Refused(f"grew over spool_user_size_limit ({size_limit}) while read")
        parsed = parse_entry(b"".join(chunks))
        if parsed is None:
            raise Refused("not a spool entry")
    except BaseException:
        os.close(fd)
        raise
    return (fd, st.st_uid, *parsed)


def set_aside(dfd: int, name: str, prefix: str) -> None:
    """Rename an entry so that it is never tried again (BAD or REFUSED)."""
    os.rename(name, prefix + name, src_dir_fd=dfd, dst_dir_fd=dfd)


def waiting(directory: str) -> list[str]:
    """The names of the entries waiting to be sent, oldest first."""
    return sorted((n for n in os.listdir(directory) if owner_of(n) is not None), key=written_at)


def own_entries(directory: str, uid: int) -> list[tuple[str, str]]:
    """(state, name) of this uid's entries: waiting, bad or refused, oldest first."""
    found = []
    for name in os.listdir(directory):
        for state, prefix in (("bad", BAD), ("refused", REFUSED), ("waiting", "")):
            if name.startswith(prefix):
                rest = name[len(prefix):]
                if owner_of(rest) == uid:
                    try:
                        if os.lstat(os.path.join(directory, name)).st_uid == uid:
                            found.append((state, rest, name))
                    except FileNotFoundError:
                        pass
                break
    return [(state, name) for state, rest, name in sorted(found, key=lambda f: written_at(f[1]))]


def summary(directory: str) -> tuple[int, float | None, int]:
    """For `sendgate status`: how many entries wait, when the oldest was
    saved (None: none waits), how many were set aside (bad or refused)."""
    names = os.listdir(directory)
    waiting_now = [written_at(n) for n in names if owner_of(n) is not None]
    aside = sum(1 for n in names if n.startswith((BAD, REFUSED)))
    return len(waiting_now), min(waiting_now, default=None), aside
