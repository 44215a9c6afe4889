"""What sendgate writes into Postfix and reads back from it, in one place.

* The `sendgate` service: the smtpd that the submit daemon forwards to,
  a unix socket in $queue_directory/public/ (owner postfix, group postdrop,
  mode 0710, 2710 on Debian: only root, postfix and the sendgate user reach
  it), the only service that trusts
  XCLIENT.  Its entry is produced here for the private stacks
  (sendgate/stack/postfix.py), `sendgate setup-postfix`
  (sendgate/admin/hostsetup.py), the bench (bench/benchstack.py) and the
  shipped example config/postfix/master.cf (tests/test_postfix.py checks
  that file against this module).
* The network submission service (port 587 style): STARTTLS, then SASL
  AUTH, then mail; never XCLIENT.
* Where each smtpd service finds the milter: the smtpd_milters word for a
  socket under $queue_directory is relative to it (every Postfix daemon
  runs in that directory, chrooted or not, so one word reaches the socket
  from both), and the services of master.cf with the milters each one uses.
* The order of smtpd_milters: sendgate's milter before a signing milter
  (signing_milters), whose signature must cover the fields sendgate adds.
* postconf(1), run against one configuration directory.
* The probe: the greeting of an SMTP server on a unix socket.  The submit
  daemon answers only once it has the MTA's greeting, so a 220 on the
  submit socket says the whole path is up.
"""

from __future__ import annotations

import fnmatch
import os
import socket
import subprocess
from dataclasses import dataclass

# The master.cf columns after the service name and type: private, unpriv,
# chroot, wakeup (maxproc is the Service's).  Every sendgate service is
# unchrooted, so that socket paths (the milter's) mean the same to smtpd as
# to the daemons.
_COLUMNS = ("n", "-", "n", "-")


@dataclass(frozen=True)
class Service:
    """One master.cf service: `name type n - n - MAXPROC command` and its
    -o lines; maxproc "-" is Postfix's default_process_limit."""

    name: str
    type: str
    parameters: tuple[tuple[str, str], ...]
    command: str = "smtpd"
    maxproc: str = "-"

    @property
    def columns(self) -> tuple[str, ...]:
        return (*_COLUMNS, self.maxproc)

    @property
    def key(self) -> str:
        """NAME/TYPE, as postconf -M and -P name the service."""
        return f"{self.name}/{self.type}"

    def entry(self) -> str:
        """The service line without -o, as postconf -M takes it."""
        return " ".join((self.name, self.type, *self.columns, self.command))

    def master_cf(self) -> str:
        """The entry as master.cf lines: the columns aligned, one -o per line."""
        head = f"{self.name:<9} {self.type:<5} " + "".join(f"{c:<8}" for c in self.columns) + self.command
        return head + "\n" + "".join(f"  -o {k}={v}\n" for k, v in self.parameters)

    def postconf_parameters(self) -> list[str]:
        """The -o settings as postconf -P takes them: NAME/TYPE/KEY=VALUE."""
        return [f"{self.key}/{k}={v}" for k, v in self.parameters]


def service_name(submit_upstream: str) -> str:
    """The master.cf name of the service whose socket is submit_upstream
    (unix:$queue_directory/public/NAME)."""
    return os.path.basename(submit_upstream.removeprefix("unix:"))


def sendgate_service(name: str, daemon_name: str, milters: str | None = None, maxproc: int | None = None) -> Service:
    """The submit daemon's XCLIENT service.  daemon_name is the milter's
    milter_local_daemon_name, the only service whose XCLIENT logins the
    milter counts; milters, when given, replaces main.cf's smtpd_milters for
    this service alone (the bench's services without sendgate-milter);
    maxproc, when given, is its process limit: submit_upstream_session_limit,
    the most MTA sessions the submit daemon holds."""
    parameters = [
        ("smtpd_authorized_xclient_hosts", "127.0.0.1"),
        ("milter_macro_daemon_name", daemon_name),
        # The milter does the RFC 6409 fix-ups; Postfix must not add its own.
        ("local_header_rewrite_clients", ""),
    ]
    if milters is not None:
        parameters.append(("smtpd_milters", milters))
    parameters.append(("syslog_name", f"postfix/{name}"))
    return Service(name, "unix", tuple(parameters), maxproc="-" if maxproc is None else str(maxproc))


def submission_service(name: str, daemon_name: str = "sendgate-submission") -> Service:
    """Network submission on an inet service (name: a port or HOST:PORT):
    STARTTLS required, AUTH only after it, only authenticated clients send,
    and the milter applies the same policy to the authenticated user."""
    return Service(name, "inet", (
        ("syslog_name", "postfix/submission"),
        ("smtpd_tls_security_level", "encrypt"),
        ("smtpd_sasl_auth_enable", "yes"),
        ("smtpd_tls_auth_only", "yes"),
        ("smtpd_client_restrictions", "permit_sasl_authenticated,reject"),
        ("smtpd_relay_restrictions", "permit_sasl_authenticated,reject"),
        ("milter_macro_daemon_name", daemon_name),
        ("local_header_rewrite_clients", ""),
    ))


def milter_entry(milter_socket: str, queue_directory: str) -> str:
    """The smtpd_milters word for milter_socket: relative to queue_directory
    when the socket is below it (Debian's chrooted smtpd sees only that
    tree), else the socket as configured."""
    path = milter_socket.removeprefix("unix:")
    queue = queue_directory.rstrip("/") + "/"
    return "unix:" + path[len(queue):] if path.startswith(queue) else milter_socket


def milter_words(value: str) -> list[str]:
    """The milters of an smtpd_milters value (commas, spaces and the braces
    of `{ unix:path, timeout=... }` groups are separators)."""
    for mark in "{},":
        value = value.replace(mark, " ")
    return [word for word in value.split() if "=" not in word]


_SEPARATORS = ", \t\n"


def milter_items(value: str) -> list[tuple[int, int, str]]:
    """The top-level entries of an smtpd_milters value as (start, end,
    milter): a `{ unix:path, timeout=... }` group is one entry, its first
    word the milter; commas and spaces separate entries."""
    items, i = [], 0
    while i < len(value):
        if value[i] in _SEPARATORS:
            i += 1
            continue
        if value[i] == "{":
            end = value.find("}", i)
            end = len(value) if end < 0 else end + 1
            words = milter_words(value[i:end])
        else:
            end = i
            while end < len(value) and value[end] not in _SEPARATORS + "{":
                end += 1
            words = [value[i:end]]
        if words:
            items.append((i, end, words[0]))
        i = end
    return items


def is_signer(milter: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(milter, pattern) for pattern in patterns)


def signer_before(value: str, ours: set[str], patterns: tuple[str, ...]) -> str | None:
    """The first signing milter (one of patterns) that value names before
    any of ours; None when ours come first, or no signer is named."""
    for _, _, milter in milter_items(value):
        if milter in ours:
            return None
        if is_signer(milter, patterns):
            return milter
    return None


def with_milter_first(value: str, entry: str, ours: set[str], patterns: tuple[str, ...]) -> str:
    """value with entry before the first signing milter, or at the end when
    none is named; every other entry, its text and its separators kept.
    An entry of ours after a signer is moved; one before every signer stays."""
    items = milter_items(value)
    signers = [start for start, _, milter in items if is_signer(milter, patterns) and milter not in ours]
    own = [(start, end) for start, end, milter in items if milter in ours]
    if own and (not signers or own[0][0] < signers[0]):
        return value
    for start, end in reversed(own):  # after a signer: taken out, put in below
        rest = value[end:].lstrip(_SEPARATORS)
        value = value[:start] + rest if rest else value[:start].rstrip(_SEPARATORS)
    items = milter_items(value)
    gaps = [value[end:start] for (_, end, _), (start, _, _) in zip(items, items[1:])]
    separator = ", " if any("," in gap for gap in gaps) else " "  # the list's own style
    for start, _, milter in items:
        if is_signer(milter, patterns) and milter not in ours:
            return value[:start] + entry + separator + value[start:]
    return f"{value.rstrip(_SEPARATORS)} {entry}".strip()


def milter_path_seen(word: str, queue_directory: str, chrooted: bool) -> str:
    """The file a service looks for when smtpd_milters names `unix:PATH`, as
    a path of the host: relative paths start at queue_directory, and a
    chrooted service's absolute paths are inside it."""
    path = word.removeprefix("unix:")
    if not path.startswith("/") or chrooted:
        return os.path.join(queue_directory, path.lstrip("/"))
    return path


def process_limit(master: str, key: str, default_limit: str) -> int | None:
    """The maxproc of service key (NAME/TYPE) in `postconf -M` output, "-"
    read as default_process_limit; 0 is no limit; None: no such service."""
    for line in master.splitlines():
        fields = line.split()
        if len(fields) >= 8 and f"{fields[0]}/{fields[1]}" == key:
            value = default_limit if fields[6] == "-" else fields[6]
            return int(value) if value.strip().isdigit() else None
    return None


@dataclass(frozen=True)
class SmtpdService:
    key: str        # NAME/TYPE
    chrooted: bool
    exposed: bool   # reachable by clients: inet, pass (behind postscreen) or a public unix socket
    milters: str    # its -o smtpd_milters, else main.cf's


def smtpd_services(master: str, parameters: str, main_milters: str) -> list[SmtpdService]:
    """The smtpd services of `postconf -M` output, with the milters each uses
    (`postconf -P` output holds the -o overrides).  A "-" in the chroot
    column is Postfix 3's default, no; in the private column, yes."""
    overrides = {}
    for line in parameters.splitlines():
        name, _, value = line.partition("=")
        if name.strip().endswith("/smtpd_milters"):
            overrides[name.strip().rsplit("/", 1)[0]] = value.strip()
    out = []
    for line in master.splitlines():
        fields = line.split()
        if len(fields) < 8 or fields[7] != "smtpd":
            continue
        key = f"{fields[0]}/{fields[1]}"
        exposed = fields[1] != "unix" or fields[2] == "n"
        out.append(SmtpdService(key, fields[4] == "y", exposed, overrides.get(key, main_milters)))
    return out


class PostconfError(Exception):
    """postconf failed; str() is "postconf ARGS: what it said"."""

    def __init__(self, args: tuple[str, ...], stderr: str):
        self.said = stderr.strip()
        super().__init__(f"postconf {' '.join(args)}: {self.said}")


def postconf(directory: str, *args: str) -> str:
    """postconf -c directory ARGS; its standard output.  OSError when there
    is no postconf, PostconfError when it fails."""
    result = subprocess.run(["postconf", "-c", directory, *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise PostconfError(args, result.stderr)
    return result.stdout


def greeting(path: str) -> str | None:
    """The greeting of the SMTP server on the unix socket at path (then
    QUIT), None when nothing answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            text = s.recv(512).decode(errors="replace").strip()
            s.sendall(b"QUIT\r\n")
            return text
    except OSError:
        return None
