"""A private, complete sendgate stack under one directory: Postfix, the milter
and the submit socket, for trying sendgate out and for the tests.

The Postfix instance has its own config_directory, queue_directory and
data_directory under DIR and listens on unix sockets and one loopback port
only; the system's Postfix instance is never touched.  Every message it
accepts, whatever the recipient's domain, is delivered by Postfix's virtual(8)
agent into the one Maildir DIR/mail/Maildir (a catch-all), which records the
envelope recipient in X-Original-To: and Delivered-To:.

Layout:
    DIR/sendgate.yaml           the sendgate configuration (config=)
    DIR/run/submit.sock         the submit socket, mode 0666 (socket=)
    DIR/run/milter/milter.sock  the milter socket, group postfix
    DIR/run/*.pid               daemons started by `stack up`
    DIR/postfix/etc/main.cf     Postfix configuration (postfix_config=)
    DIR/postfix/spool/          Postfix queue; public/sendgate is the submit
                                daemon's XCLIENT service (group postdrop)
    DIR/postfix/etc/sasl/       Cyrus SASL: smtpd.conf and the sasldb of the
                                submission service (stack adduser)
    DIR/postfix/tls/            the test certificate made at stack up
    DIR/mail/Maildir/           delivered mail (maildir=)
    DIR/log/postfix.log         Postfix's log (log=); submitd.log, milter.log

Network submission (submission=): a smtpd on a loopback port that requires
STARTTLS and then SASL AUTH, the way port 587 works on a real host.  SASL is
Cyrus with an auxprop sasldb under DIR: smtpd checks passwords itself, in
process, from a file of this stack, so no second daemon (Dovecot's auth
service, saslauthd) has to be started, kept private and stopped, and the
system's SASL configuration is never read.  The SASL directory is
$config_directory/sasl because Debian's Postfix looks for smtpd.conf there
(and then in /usr/lib/sasl) whatever cyrus_sasl_config_path says; main.cf
names it in cyrus_sasl_config_path as well, for Postfix builds that honour it.

The same stack on Sendmail instead of Postfix: sendgate.stack_sendmail.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time

from sendgate import config

SERVICE_USER = "sendgate"
POSTFIX_USER = "postfix"
POSTDROP_GROUP = "postdrop"
LOCAL_DAEMON_NAME = "sendgate-local"
SUBMISSION_DAEMON_NAME = "sendgate-submission"
READY_TIMEOUT = 30.0


class StackError(Exception):
    """stack up/down cannot go on; str() says why and what to do."""


class Paths:
    """Where everything of a stack lives, as attributes: p.socket, p.maildir..."""

    WHERE = {
        "config": "sendgate.yaml", "run": "run", "socket": "run/submit.sock",
        "milter_dir": "run/milter", "milter_socket": "run/milter/milter.sock",
        "postfix_config": "postfix/etc", "queue": "postfix/spool", "data": "postfix/data",
        "upstream": "postfix/spool/public/sendgate", "mail": "mail", "maildir": "mail/Maildir",
        "logs": "log", "postfix_log": "log/postfix.log", "submitd_log": "log/submitd.log",
        "milter_log": "log/milter.log", "inbound_file": "run/inbound",
        "sasl_dir": "postfix/etc/sasl", "sasldb": "postfix/etc/sasl/sasldb2", "tls_dir": "postfix/tls",
        "tls_cert": "postfix/tls/cert.pem", "tls_key": "postfix/tls/key.pem",
        "submission_file": "run/submission",
    }

    def __init__(self, root: str):
        self.root = root

    def __getattr__(self, name: str) -> str:
        if name not in self.WHERE:
            raise AttributeError(name)
        return os.path.join(self.root, self.WHERE[name])

    def pidfile(self, name: str) -> str:
        return os.path.join(self.root, "run", f"{name}.pid")


def main_cf(p: Paths, domain: str, hostname: str, mail_uid: int, mail_gid: int) -> str:
    return f"""# Private Postfix instance of a sendgate stack; written by `sendgate stack up`.
compatibility_level = 3.6
queue_directory = {p.queue}
data_directory = {p.data}
mail_owner = {POSTFIX_USER}
setgid_group = {POSTDROP_GROUP}
myhostname = {hostname}
mydomain = {domain}
myorigin = {domain}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
biff = no
maillog_file = {p.postfix_log}
maillog_file_prefixes = {p.logs}
smtputf8_enable = yes
alias_maps =
alias_database =

# The milter is the policy point; fail closed when it is away.
smtpd_milters = unix:{p.milter_socket}
milter_default_action = tempfail
milter_protocol = 6
# The milter does the RFC 6409 fix-ups, on Postfix as on Sendmail.
local_header_rewrite_clients =

# A catch-all: every domain is delivered to the one Maildir.
virtual_mailbox_domains = static:all
virtual_mailbox_base = {p.mail}
virtual_mailbox_maps = static:Maildir/
virtual_uid_maps = static:{mail_uid}
virtual_gid_maps = static:{mail_gid}
virtual_minimum_uid = 1
"""


def master_cf(p: Paths, inbound_port: int) -> str:
    return f"""# Private Postfix instance of a sendgate stack; written by `sendgate stack up`.
# service type  private unpriv chroot wakeup maxproc command
# The submit daemon's service: in public/ (mode 0710, group postdrop), so
# only root and members of postdrop (the sendgate user) can connect.  It is
# the only service that accepts XCLIENT.
sendgate  unix  n       -       n       -       -       smtpd
  -o smtpd_authorized_xclient_hosts=127.0.0.1
  -o milter_macro_daemon_name={LOCAL_DAEMON_NAME}
  -o syslog_name=postfix/sendgate
# Port-25-style inbound service on loopback: no XCLIENT, no AUTH.
127.0.0.1:{inbound_port} inet n - n - - smtpd
  -o syslog_name=postfix/inbound
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


# --- network submission: STARTTLS + Cyrus SASL (sasldb) on a loopback port ---

SASL_MECHANISMS = "PLAIN LOGIN"


def submission_main_cf(p: Paths) -> str:
    """main.cf lines for the submission service: SASL is Cyrus, configured
    only from this stack's directory.  smtpd_sasl_local_domain stays empty,
    so a client logs in as plain LOGIN, the milter sees {auth_authen}=LOGIN,
    and Cyrus looks LOGIN up in the realm $myhostname."""
    return f"""
# Network submission (the submission= service in master.cf): Cyrus SASL
# with this stack's sasldb, and the test certificate made at stack up.
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = {p.sasl_dir}
smtpd_tls_cert_file = {p.tls_cert}
smtpd_tls_key_file = {p.tls_key}
"""


def submission_master_cf(port: int) -> str:
    """The master.cf service: TLS first, then AUTH, then mail."""
    return f"""# Network submission on loopback, like port 587: STARTTLS required, AUTH
# only after it, and only authenticated clients may send.  No XCLIENT.
127.0.0.1:{port} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name={SUBMISSION_DAEMON_NAME}
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
"""


def sasl_smtpd_conf(p: Paths) -> str:
    return (f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {p.sasldb}\n"
            f"mech_list: {SASL_MECHANISMS}\n")


def make_test_certificate(p: Paths, hostname: str) -> None:
    """A self-signed certificate for hostname, valid for a week; the key is
    read by Postfix as root before it drops privileges."""
    _mkdir(p.tls_dir, 0o755)
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7", "-subj", f"/CN={hostname}",
         "-addext", f"subjectAltName=DNS:{hostname},IP:127.0.0.1", "-keyout", p.tls_key, "-out", p.tls_cert],
        capture_output=True, text=True, timeout=60)
    _require(result.returncode == 0, f"openssl could not make the test certificate:\n{result.stderr}")
    os.chmod(p.tls_key, 0o600)


def prepare_submission(p: Paths, hostname: str) -> int:
    """Certificate, SASL configuration and an empty sasldb; returns the port."""
    _require(shutil.which("saslpasswd2") is not None,
             "saslpasswd2 is not installed (Debian: apt-get install sasl2-bin)")
    _require(shutil.which("openssl") is not None, "openssl is not installed (Debian: apt-get install openssl)")
    make_test_certificate(p, hostname)
    _mkdir(p.sasl_dir, 0o750, group=POSTFIX_USER)
    _write(os.path.join(p.sasl_dir, "smtpd.conf"), sasl_smtpd_conf(p), 0o640)
    os.chown(os.path.join(p.sasl_dir, "smtpd.conf"), 0, grp.getgrnam(POSTFIX_USER).gr_gid)
    port = _free_loopback_port()
    _write(p.submission_file, f"127.0.0.1:{port}\n")
    return port


def adduser(directory: str, login: str, password: str) -> None:
    """Create (or change the password of) a SASL account on the stack."""
    p = Paths(os.path.abspath(directory))
    _require(os.geteuid() == 0, "stack adduser needs root (the sasldb belongs to root, group postfix)")
    _require(os.path.isdir(p.sasl_dir), f"no stack in {p.root} (no {p.sasl_dir}): run `sendgate stack up` first")
    _require(bool(login) and all(c.isalnum() or c in "._-+" for c in login),
             f"bad login {login!r}: use letters, digits and . _ - +")
    _require(bool(password) and "\n" not in password, "the password must be one non-empty line")
    realm = _sasl_realm(p)
    result = subprocess.run(["saslpasswd2", "-p", "-c", "-f", p.sasldb, "-u", realm, login],
                            input=password, capture_output=True, text=True, timeout=30)
    _require(result.returncode == 0, f"saslpasswd2 failed: {result.stderr.strip()}")
    os.chown(p.sasldb, 0, grp.getgrnam(POSTFIX_USER).gr_gid)
    os.chmod(p.sasldb, 0o640)


def _sasl_realm(p: Paths) -> str:
    with open(os.path.join(p.postfix_config, "main.cf"), encoding="utf-8") as fp:
        for line in fp:
            name, _, value = line.partition("=")
            if name.strip() == "myhostname":
                return value.strip()
    raise StackError(f"{p.postfix_config}/main.cf names no myhostname")


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise StackError(message)


def _ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def check_prerequisites() -> None:
    _require(os.geteuid() == 0, "stack up needs root (it starts a private Postfix instance)")
    _require(shutil.which("postfix") is not None and os.path.exists("/usr/sbin/postconf"),
             "Postfix is not installed (Debian: apt-get install postfix, answering 'No configuration')")
    for user in (SERVICE_USER, POSTFIX_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise StackError(f"user {user!r} does not exist (scripts/bootstrap creates it)") from None
    uid, gid = _ids(SERVICE_USER)
    postdrop = grp.getgrnam(POSTDROP_GROUP).gr_gid
    _require(postdrop in os.getgrouplist(SERVICE_USER, gid),
             f"user {SERVICE_USER!r} must be in group {POSTDROP_GROUP!r} to reach Postfix's public/ "
             f"directory: usermod -aG {POSTDROP_GROUP} {SERVICE_USER}")


def _write(path: str, text: str, mode: int = 0o644) -> None:
    with open(path, "w", encoding="utf-8") as fp:
        fp.write(text)
    os.chmod(path, mode)


def _mkdir(path: str, mode: int, owner: str | None = None, group: str | None = None) -> None:
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    uid = pwd.getpwnam(owner).pw_uid if owner else -1
    gid = grp.getgrnam(group).gr_gid if group else -1
    os.chown(path, uid, gid)


def _postfix(p: Paths, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["postfix", "-c", p.postfix_config, *args],
                          capture_output=True, text=True, timeout=120)


def _spawn(p: Paths, name: str, module: str, log_path: str) -> int:
    # cwd "/": `python -m` puts the working directory first on sys.path, and
    # a checkout there would shadow the installed package.
    env = dict(os.environ, SENDGATE_CONFIG=p.config)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", module, "--config", p.config],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd="/",
                                start_new_session=True, close_fds=True)
    _write(p.pidfile(name), f"{proc.pid}\n")
    return proc.pid


def _alive(pid: int) -> bool:
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


def _wait_for(what: str, ready, pids: dict[str, int], logs: dict[str, str], timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        for name, pid in pids.items():
            if not _alive(pid):
                raise StackError(f"{name} exited during start-up; see {logs[name]}:\n{_tail(logs[name])}")
        time.sleep(0.05)
    raise StackError(f"timed out waiting for {what}")


def _tail(path: str, lines: int = 10) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fp:
            return "".join(fp.readlines()[-lines:])
    except OSError:
        return ""


def _probe(path: str) -> bool:
    """True when a session on the submit socket gets through to Postfix."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            greeting = s.recv(512)
            s.sendall(b"QUIT\r\n")
            return greeting.startswith(b"220 ")
    except OSError:
        return False


def default_mail_owner() -> str:
    """The invoking user under sudo, else the service user."""
    user = os.environ.get("SUDO_USER")
    if user and user != "root":
        try:
            pwd.getpwnam(user)
            return user
        except KeyError:
            pass
    return SERVICE_USER


def up(directory: str, domain: str = "example.org", mail_owner: str | None = None,
       settings: dict | None = None, mta: str = "postfix") -> dict[str, str]:
    """Build and start the stack; return the key=value facts `stack up` prints."""
    unknown = sorted(set(settings or {}) - set(config.KEYS))
    if unknown:
        raise config.ConfigError("--set", None, unknown[0], "unknown key")
    if mta == "sendmail":
        from sendgate import stack_sendmail
        return stack_sendmail.up(directory, domain, mail_owner, settings)
    check_prerequisites()
    p = Paths(os.path.abspath(directory))
    _require(not any(os.path.exists(p.pidfile(n)) for n in ("submitd", "milter")),
             f"a stack seems to be running in {p.root}: run `sendgate stack down --dir {p.root}` first")
    owner = mail_owner or default_mail_owner()
    mail_uid, mail_gid = _ids(owner)
    hostname = f"mail.{domain}"
    # Users must reach the submit socket: every directory on the way is 0755.
    _mkdir(p.root, 0o755)
    _mkdir(p.run, 0o755)
    _mkdir(p.milter_dir, 0o750, group=POSTFIX_USER)
    _mkdir(p.logs, 0o755)
    _mkdir(p.postfix_config, 0o755)
    _mkdir(p.queue, 0o755)
    _mkdir(p.data, 0o700, owner=POSTFIX_USER)
    _mkdir(p.mail, 0o755, owner=owner)
    inbound = _free_loopback_port()
    _write(p.inbound_file, f"127.0.0.1:{inbound}\n")
    submission = prepare_submission(p, hostname)
    _require(submission != inbound, "two services were given the same loopback port; run stack up again")
    _write(os.path.join(p.postfix_config, "main.cf"),
           main_cf(p, domain, hostname, mail_uid, mail_gid) + submission_main_cf(p))
    _write(os.path.join(p.postfix_config, "master.cf"), master_cf(p, inbound) + submission_master_cf(submission))
    _write(p.config, config.render({
        "myhostname": hostname, "myorigin": domain,
        "submit_socket": p.socket, "submit_upstream": f"unix:{p.upstream}",
        "milter_socket": f"unix:{p.milter_socket}", "milter_local_daemon_name": LOCAL_DAEMON_NAME,
        "postfix_config_directory": p.postfix_config,
        "log_destination": "stderr", **(settings or {}),
    }))
    config.load(p.config)  # what we wrote must pass our own check

    logs = {"milter": p.milter_log, "submitd": p.submitd_log, "postfix": p.postfix_log}
    pids = {"milter": _spawn(p, "milter", "sendgate.milter.main", p.milter_log)}
    _wait_for("the milter socket", lambda: os.path.exists(p.milter_socket), pids, logs)
    result = _postfix(p, "start")
    if result.returncode != 0:
        down(p.root)
        raise StackError(f"postfix start failed:\n{result.stdout}{result.stderr}")
    _wait_for("Postfix's sendgate service", lambda: os.path.exists(p.upstream), pids, logs)
    pids["submitd"] = _spawn(p, "submitd", "sendgate.submit_socket.main", p.submitd_log)
    _wait_for("the submit socket", lambda: os.path.exists(p.socket) and _probe(p.socket), pids, logs)
    return {
        "socket": p.socket, "maildir": p.maildir, "config": p.config,
        "postfix_config": p.postfix_config, "log": p.postfix_log, "inbound": f"127.0.0.1:{inbound}",
        "submission": f"127.0.0.1:{submission}",
        "submitd_log": p.submitd_log, "milter_log": p.milter_log, "domain": domain,
        "mta": "postfix", "upstream": p.upstream,
    }


def down(directory: str) -> list[str]:
    """Stop what `stack up` started in directory; return what was stopped."""
    p = Paths(os.path.abspath(directory))
    stopped = [_stop(p, "submitd")]
    # The MTA before the milter: libmilter waits for its open connections.
    if os.path.exists(os.path.join(p.postfix_config, "main.cf")):
        result = _postfix(p, "status")
        if result.returncode == 0:
            _postfix(p, "stop")
            stopped.append("postfix")
    stopped += [_stop(p, name) for name in ("sendmail", "syslog", "milter")]
    for sock in (p.socket, p.milter_socket):
        if os.path.exists(sock):
            os.unlink(sock)
    return [name for name in stopped if name]


def _stop(p: Paths, name: str) -> str | None:
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
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped = f"{name}[{pid}]"
    except ProcessLookupError:
        pass
    os.unlink(path)
    return stopped
