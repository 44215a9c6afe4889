"""A private sendgate stack on the real Sendmail 8.17: `sendgate stack up --mta sendmail`.

Debian's sendmail-bin conflicts with postfix, so the stack does not install
it: it fetches sendmail-bin, sendmail-base and sendmail-cf with `apt-get
download`, unpacks them with `dpkg -x` into /opt/sendgate/sendmail (once per
machine, under a lock; set-id bits are removed) and runs that binary with a
.cf of its own, built with m4 from sendmail-cf's files.  Nothing is read from
or written to /etc/mail or /var/spool/mqueue.

The instance (sendmail -bD, a foreground daemon) starts as root, binds its
two daemon sockets and runs everything else as RunAsUser smmta, Debian's
account for the Sendmail MTA (scripts/bootstrap creates it):

* Name=sendgate-local, Family=local: the submit daemon's service, a unix
  socket in DIR/sendmail/local (mode 0750, owner smmta, group sendgate).
  Sendmail binds it with its fixed umask 022, so the stack then gives it to
  smmta:sendgate mode 0660: only root, Sendmail and the sendgate user can
  connect.  The submit daemon passes the login in an X-Sendgate-Login: field
  (submit_upstream_protocol: header, see sendgate.policy.handoff).
* Name=inbound, 127.0.0.1:PORT: a port-25-style service (no AUTH).

The milter is attached with INPUT_MAIL_FILTER and F=T (temp-fail when it is
away), and gets {daemon_name} at connect and the {auth_*} macros at MAIL.

Delivery: ruleset 0 sends every address, whatever its domain, to the mailer
"maildir", which runs `python -m sendgate.stack.deliver DIR/mail/Maildir $u`
(sendgate/stack/deliver.py) once per recipient as smmta.  That writes
X-Original-To: and Delivered-To: with the envelope recipient, as virtual(8)
does in the Postfix stack.  The mailer has Sendmail's usual D, F, M and P
flags, so Sendmail adds Date:, From:, Message-Id: (when still missing after
the milter) and Return-Path: at delivery, as its smtp and local mailers do.
The catch-all accepts every recipient (FEATURE(`promiscuous_relay'), no DNS
lookups); the sockets are loopback and unix only.

Sendmail runs in namespaces of its own (unshare --uts --mount): its host
name is mail.DOMAIN (a host name without a dot would make it sleep 60 s at
start, "My unqualified host name ... unknown"), and its /dev is
DIR/sendmail/dev, holding null, zero, random, urandom and a syslog socket
"log" served by sendgate/stack/syslog.py: Sendmail logs only through syslog(3),
and this way its log lines land in DIR/log/sendmail.log, with what it prints
on standard output.  Where no namespace can be made (an unprivileged
container), Sendmail runs without: stack up then waits out its minute when
the host name has no dot, and its log lines go to the system's /dev/log, if
there is one.

Layout (besides sendgate's own part, sendgate/stack/common.py):
    DIR/sendmail/etc/sendmail.mc, sendmail.cf   configuration (sendmail_config=)
    DIR/sendmail/queue/                          the queue (smmta, 0700)
    DIR/sendmail/local/sendgate                  the submit daemon's service (upstream=)
    DIR/sendmail/dev/                            Sendmail's /dev (log: its syslog socket)
    DIR/log/sendmail.log                         Sendmail's log and standard output (log=)
"""

from __future__ import annotations

import ctypes.util
import fcntl
import glob
import grp
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

from sendgate.stack import common, opendkim
from sendgate.stack.common import READY_TIMEOUT, SERVICE_USER, mkdir, require, wait_for, write

SENDMAIL_USER = "smmta"
PREFIX = "/opt/sendgate/sendmail"
PACKAGES = ("sendmail-bin", "sendmail-base", "sendmail-cf")
BINARY = "usr/libexec/sendmail/sendmail"
CF_DIR = "usr/share/sendmail/cf"
HELP_FILE = "etc/mail/helpfile"
INBOUND_DAEMON_NAME = "inbound"


class Paths(common.Paths):
    WHERE = {
        **common.Paths.WHERE,
        "etc": "sendmail/etc", "mc": "sendmail/etc/sendmail.mc", "cf": "sendmail/etc/sendmail.cf",
        "queue": "sendmail/queue", "local_dir": "sendmail/local", "upstream": "sendmail/local/sendgate",
        "mta_pidfile": "sendmail/sendmail.pid", "dev": "sendmail/dev", "syslog_socket": "sendmail/dev/log",
        "sendmail_log": "log/sendmail.log", **opendkim.WHERE,
    }


def _prefix_ready(prefix: str) -> bool:
    return os.access(os.path.join(prefix, BINARY), os.X_OK) and os.path.isdir(os.path.join(prefix, CF_DIR))


def ensure_prefix(prefix: str = PREFIX) -> str:
    """Fetch and unpack Debian's Sendmail into prefix unless it is there."""
    if _prefix_ready(prefix):
        return prefix
    parent = os.path.dirname(prefix)
    os.makedirs(parent, exist_ok=True)
    with open(prefix + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _prefix_ready(prefix):
            return prefix
        work = tempfile.mkdtemp(prefix=".sendmail-", dir=parent)
        try:
            got = subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *PACKAGES],
                                 cwd=work, capture_output=True, text=True, timeout=600)
            require(got.returncode == 0, f"apt-get download {' '.join(PACKAGES)} failed "
                    f"(run apt-get update?):\n{got.stdout}{got.stderr}")
            root = os.path.join(work, "root")
            for deb in sorted(glob.glob(os.path.join(work, "*.deb"))):
                unpacked = subprocess.run(["dpkg", "-x", deb, root], capture_output=True, text=True, timeout=120)
                require(unpacked.returncode == 0, f"dpkg -x {deb} failed:\n{unpacked.stderr}")
            # The stack runs the binary as root; a set-group-id copy lying
            # about would only be something more for local users to attack.
            for here, _, files in os.walk(root):
                for name in files:
                    path = os.path.join(here, name)
                    mode = os.lstat(path).st_mode
                    if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                        os.chmod(path, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
            os.chmod(root, 0o755)
            require(_prefix_ready(root), f"the packages hold no {BINARY}")
            os.rename(root, prefix)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return prefix


def check_prerequisites() -> None:
    require(os.geteuid() == 0, "stack up needs root (it starts a private Sendmail instance)")
    common.require_users(SERVICE_USER, SENDMAIL_USER)
    require(shutil.which("m4") is not None, "m4 is not installed (Debian: apt-get install m4)")
    require(ctypes.util.find_library("wrap") is not None,
            "Sendmail needs libwrap.so.0 (Debian: apt-get install libwrap0)")


def sendmail_mc(p: Paths, prefix: str, hostname: str, inbound_port: int, daemon_name: str,
                signer: str | None = None) -> str:
    """signer: OpenDKIM's milter socket, its filter after sendgate's (the
    order of the INPUT_MAIL_FILTER lines is the order they run in)."""
    deliver = f"{sys.executable} -m sendgate.stack.deliver {p.maildir} $u"
    signer = "" if signer is None else (
        "dnl After sendgate's milter: the signer must see the fields it adds.\n"
        f"INPUT_MAIL_FILTER(`opendkim', `S=local:{signer.removeprefix('unix:')}, F=T, T=C:30s;S:1m;R:1m;E:5m')dnl\n")
    return f"""divert(-1)
# Private Sendmail instance of a sendgate stack; written by sendgate stack up --mta sendmail.
define(`MAIL_SETTINGS_DIR', `{p.etc}/')
divert(0)dnl
VERSIONID(`sendgate stack')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `{hostname}')dnl
define(`QUEUE_DIR', `{p.queue}')dnl
define(`confPID_FILE', `{p.mta_pidfile}')dnl
define(`HELP_FILE', `{prefix}/{HELP_FILE}')dnl
define(`ALIAS_FILE', `')dnl
define(`confRUN_AS_USER', `{SENDMAIL_USER}:{SENDMAIL_USER}')dnl
dnl The stack directory may sit in /tmp: trust a sticky directory on the path.
define(`confDONT_BLAME_SENDMAIL', `TrustStickyBit')dnl
define(`confPRIVACY_FLAGS', `noexpn,novrfy,noetrn,noverb')dnl
define(`confTO_IDENT', `0s')dnl
dnl Deliver at once even on a loaded test machine: by default Sendmail only
dnl queues (and delivers at the next queue run) above a load average of 8.
define(`confQUEUE_LA', `200')dnl
define(`confREFUSE_LA', `400')dnl
define(`confDELAY_LA', `0')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`nocanonify')dnl
FEATURE(`accept_unresolvable_domains')dnl
dnl A catch-all: every recipient is delivered to the one Maildir.
FEATURE(`promiscuous_relay')dnl
dnl The submit daemon's service: only root, smmta and group sendgate reach it.
DAEMON_OPTIONS(`Name={daemon_name}, Family=local, Addr={p.upstream}, M=EA')dnl
dnl Port-25-style inbound service on loopback: no AUTH.
DAEMON_OPTIONS(`Name={INBOUND_DAEMON_NAME}, Family=inet, Addr=127.0.0.1, Port={inbound_port}, M=EA')dnl
dnl The milter is the policy point; temp-fail when it is away.
INPUT_MAIL_FILTER(`sendgate', `S=local:{p.milter_socket}, F=T, T=C:30s;S:1m;R:1m;E:5m')dnl
{signer}define(`confMILTER_MACROS_CONNECT', ``j, _, {{daemon_name}}, {{if_name}}, {{if_addr}}'')dnl
define(`confMILTER_MACROS_ENVFROM', ``i, {{auth_type}}, {{auth_authen}}, {{auth_ssf}}, {{auth_author}}, {{mail_addr}}'')dnl
MAILER(`local')dnl
MAILER_DEFINITIONS
Mmaildir, P={sys.executable}, F=lsuhnDFMP, S=EnvFromL/HdrFromL, R=EnvToL/HdrToL,
	T=DNS/RFC822/X-Unix, A={deliver}
LOCAL_RULE_0
R$* < @ $+ . > $*\t$#maildir $: $1 @ $2
R$* < @ $+ > $*\t$#maildir $: $1 @ $2
R$+\t$#maildir $: $1 @ $j
"""


def _build_cf(p: Paths, prefix: str) -> None:
    cf_dir = os.path.join(prefix, CF_DIR) + "/"
    built = subprocess.run(["m4", f"-D_CF_DIR_={cf_dir}", os.path.join(cf_dir, "m4/cf.m4"), p.mc],
                           capture_output=True, text=True, timeout=60)
    require(built.returncode == 0 and "ERROR" not in built.stderr,
            f"m4 could not build {p.cf}:\n{built.stderr}")
    write(p.cf, built.stdout)


# Run inside the namespaces: /dev becomes DIR/sendmail/dev (the device files
# bound in from the real /dev), the host name mail.DOMAIN.
_IN_NAMESPACE = (
    'set -e; d=$0; for n in null zero random urandom; do : > "$d/$n"; mount --bind "/dev/$n" "$d/$n"; done; '
    'mount --rbind "$d" /dev; hostname "$1"; shift; exec "$@"'
)


def _start_sendmail(p: Paths, prefix: str, hostname: str, pids: dict[str, int],
                    logs: dict[str, str]) -> float:
    """Start Sendmail (and its syslog socket); return how long it may take to listen."""
    argv = [os.path.join(prefix, BINARY), "-C", p.cf, "-bD", "-q1m"]
    patience = READY_TIMEOUT
    if subprocess.run(["unshare", "--uts", "--mount", "true"], capture_output=True).returncode == 0:
        with open(p.sendmail_log, "ab") as log:
            syslog = subprocess.Popen(
                [sys.executable, "-m", "sendgate.stack.syslog", p.syslog_socket, p.sendmail_log, SENDMAIL_USER],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", start_new_session=True, close_fds=True)
        write(p.pidfile("syslog"), f"{syslog.pid}\n")
        pids["syslog"], logs["syslog"] = syslog.pid, p.sendmail_log
        wait_for("the syslog socket", lambda: os.path.exists(p.syslog_socket), pids, logs)
        argv = ["unshare", "--uts", "--mount", "sh", "-c", _IN_NAMESPACE, p.dev, hostname, *argv]
    elif "." not in socket.gethostname():
        patience += 60  # Sendmail sleeps a minute over its unqualified host name
    with open(p.sendmail_log, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                                start_new_session=True, close_fds=True)
    write(p.pidfile("sendmail"), f"{proc.pid}\n")
    pids["sendmail"] = proc.pid
    return patience


def up(directory: str, domain: str = "example.org", mail_owner: str | None = None,
       settings: dict | None = None, dkim: bool = False) -> dict[str, str]:
    """Build and start the stack; return the key=value facts `stack up` prints.
    dkim: a private OpenDKIM, its INPUT_MAIL_FILTER after sendgate's
    (sendgate/stack/opendkim.py)."""
    require(mail_owner is None, "--mail-owner: the Sendmail stack delivers as Sendmail's own "
            f"account {SENDMAIL_USER!r}; its messages are readable by everyone")
    check_prerequisites()
    p = Paths(os.path.abspath(directory))
    if dkim:
        opendkim.check_prerequisites(p.root)
    prefix = ensure_prefix()
    common.require_not_running(p, "submitd", "milter", "sendmail", "syslog")
    hostname = f"mail.{domain}"
    mkdir(p.root, 0o755)
    mkdir(p.run, 0o755)
    mkdir(p.milter_dir, 0o2750, group=SENDMAIL_USER)
    mkdir(p.logs, 0o755)
    mkdir(p.etc, 0o755)
    mkdir(p.dev, 0o750, group=SENDMAIL_USER)
    mkdir(p.queue, 0o700, owner=SENDMAIL_USER, group=SENDMAIL_USER)
    mkdir(p.local_dir, 0o750, owner=SENDMAIL_USER, group=SERVICE_USER)
    mkdir(p.mail, 0o755, owner=SENDMAIL_USER, group=SENDMAIL_USER)
    for sub in ("", "/tmp", "/new", "/cur"):
        mkdir(p.maildir + sub, 0o755, owner=SENDMAIL_USER, group=SENDMAIL_USER)
    cfg = common.write_config(p, {
        "myhostname": hostname, "myorigin": domain,
        "submit_socket": p.socket, "submit_upstream": f"unix:{p.upstream}",
        "submit_groups": [],  # the upstream socket's directory is group sendgate
        "submit_upstream_protocol": "header",
        "milter_socket": f"unix:{p.milter_socket}", "milter_socket_group": SENDMAIL_USER,
        "log_destination": "stderr",
        # The inbound service stands in for the network's port 25, reached
        # from loopback by the tests: relayed as a remote client's mail.
        "milter_loopback_clients": "relay",
    }, settings)
    inbound = common.inbound_port(p)
    signer = opendkim.prepare(p, domain, SENDMAIL_USER) if dkim else None
    write(p.mc, sendmail_mc(p, prefix, hostname, inbound, cfg.milter_local_daemon_name, signer))
    write(os.path.join(p.etc, "service.switch"), "hosts\tfiles\naliases\tfiles\n")
    write(os.path.join(p.etc, "local-host-names"), f"{hostname}\n")
    _build_cf(p, prefix)

    pids: dict[str, int] = {}
    logs = {"sendmail": p.sendmail_log}
    common.start_milter(p, pids, logs)
    if dkim:
        opendkim.start(p, pids, logs)
    if os.path.lexists(p.upstream):
        os.unlink(p.upstream)  # Sendmail will not replace a socket smmta cannot write
    patience = _start_sendmail(p, prefix, hostname, pids, logs)
    wait_for(f"Sendmail's {cfg.milter_local_daemon_name} socket", lambda: os.path.exists(p.upstream),
             pids, logs, patience)
    os.chown(p.upstream, pwd.getpwnam(SENDMAIL_USER).pw_uid, grp.getgrnam(SERVICE_USER).gr_gid)
    os.chmod(p.upstream, 0o660)
    common.start_submitd(p, pids, logs)
    return {
        "socket": p.socket, "maildir": p.maildir, "config": p.config,
        "sendmail_config": p.cf, "log": p.sendmail_log, "inbound": f"127.0.0.1:{inbound}",
        "submitd_log": p.submitd_log, "milter_log": p.milter_log, "domain": domain,
        "mta": "sendmail", "upstream": p.upstream, **(opendkim.facts(p) if dkim else {}),
    }


def stop_mta(root: str) -> list[str]:
    """Stop this stack's Sendmail and its syslog socket, when root has them."""
    p = Paths(root)
    return [name for name in (common.stop(p, "sendmail"), common.stop(p, "syslog")) if name]

