"""A private, complete sendgate stack under one directory: Postfix, the milter
and the submit socket, for trying sendgate out and for the tests.

The Postfix instance has its own config_directory, queue_directory and
data_directory under DIR and listens on unix sockets and one loopback port
only; the system's Postfix instance is never touched.  Every message it
accepts, whatever the recipient's domain, is delivered by Postfix's virtual(8)
agent into the one Maildir DIR/mail/Maildir (a catch-all), which records the
envelope recipient in X-Original-To: and Delivered-To:.

Layout (besides sendgate's own part, sendgate/stack/common.py):
    DIR/postfix/etc/main.cf     Postfix configuration (postfix_config=)
    DIR/postfix/spool/          Postfix queue; public/sendgate is the submit
                                daemon's XCLIENT service (group postdrop)
    DIR/postfix/etc/sasl/       Cyrus SASL: smtpd.conf and the sasldb of the
                                submission service (stack adduser)
    DIR/postfix/tls/            the test certificate made at stack up
    DIR/log/postfix.log         Postfix's log (log=)

Network submission (submission=): a smtpd on a loopback port that requires
STARTTLS and then SASL AUTH, the way port 587 works on a real host.  SASL is
Cyrus with an auxprop sasldb under DIR: smtpd checks passwords itself, in
process, from a file of this stack, so no second daemon (Dovecot's auth
service, saslauthd) has to be started, kept private and stopped, and the
system's SASL configuration is never read.  The SASL directory is
$config_directory/sasl because Debian's Postfix looks for smtpd.conf there
(and then in /usr/lib/sasl) whatever cyrus_sasl_config_path says; main.cf
names it in cyrus_sasl_config_path as well, for Postfix builds that honour it.

The `sendgate` and the submission service come from sendgate/postfix.py,
as on a real host.  The same stack on Sendmail instead of Postfix:
sendgate/stack/sendmail.py.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess

from sendgate.postfix import Service, sendgate_service, submission_service
from sendgate.stack import common, opendkim
from sendgate.stack.common import SERVICE_USER, StackError, mkdir, require, write

POSTFIX_USER = "postfix"
POSTDROP_GROUP = "postdrop"
SASL_MECHANISMS = "PLAIN LOGIN"


class Paths(common.Paths):
    WHERE = {
        **common.Paths.WHERE,
        "postfix_config": "postfix/etc", "queue": "postfix/spool", "data": "postfix/data",
        "upstream": "postfix/spool/public/sendgate", "postfix_log": "log/postfix.log",
        "sasl_dir": "postfix/etc/sasl", "sasldb": "postfix/etc/sasl/sasldb2", "tls_dir": "postfix/tls",
        "tls_cert": "postfix/tls/cert.pem", "tls_key": "postfix/tls/key.pem",
        "submission_file": "run/submission", **opendkim.WHERE,
    }


def main_cf(p: Paths, domain: str, hostname: str, mail_uid: int, mail_gid: int, milter_socket: str) -> str:
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
smtpd_milters = {milter_socket}
milter_default_action = tempfail
milter_protocol = 6
# Postfix's own sendmail and postdrop: root only, as setup-postfix sets it.
authorized_submit_users = root
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


def master_cf(service: Service, inbound_port: int) -> str:
    return f"""# Private Postfix instance of a sendgate stack; written by `sendgate stack up`.
# service type  private unpriv chroot wakeup maxproc command
# The submit daemon's service: in public/ (mode 0710, group postdrop), so
# only root and members of postdrop (the submit daemon) can connect.  It is
# the only service that accepts XCLIENT.
{service.master_cf()}# Port-25-style inbound service on loopback: no XCLIENT, no AUTH.
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
    """The master.cf service: TLS first, then AUTH, then mail; and the TLS
    session cache manager it needs."""
    return f"""# Network submission on loopback, like port 587: STARTTLS required, AUTH
# only after it, and only authenticated clients may send.  No XCLIENT.
{submission_service(f"127.0.0.1:{port}").master_cf()}tlsmgr    unix  -       -       n       1000?   1       tlsmgr
"""


def sasl_smtpd_conf(p: Paths) -> str:
    return (f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {p.sasldb}\n"
            f"mech_list: {SASL_MECHANISMS}\n")


def make_test_certificate(p: Paths, hostname: str) -> None:
    """A self-signed certificate for hostname, valid for a week; the key is
    read by Postfix as root before it drops privileges."""
    mkdir(p.tls_dir, 0o755)
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7", "-subj", f"/CN={hostname}",
         "-addext", f"subjectAltName=DNS:{hostname},IP:127.0.0.1", "-keyout", p.tls_key, "-out", p.tls_cert],
        capture_output=True, text=True, timeout=60)
    require(result.returncode == 0, f"openssl could not make the test certificate:\n{result.stderr}")
    os.chmod(p.tls_key, 0o600)


def prepare_submission(p: Paths, hostname: str) -> int:
    """Certificate, SASL configuration and an empty sasldb; returns the port."""
    require(shutil.which("saslpasswd2") is not None,
            "saslpasswd2 is not installed (Debian: apt-get install sasl2-bin)")
    require(shutil.which("openssl") is not None, "openssl is not installed (Debian: apt-get install openssl)")
    make_test_certificate(p, hostname)
    mkdir(p.sasl_dir, 0o750, group=POSTFIX_USER)
    write(os.path.join(p.sasl_dir, "smtpd.conf"), sasl_smtpd_conf(p), 0o640)
    os.chown(os.path.join(p.sasl_dir, "smtpd.conf"), 0, grp.getgrnam(POSTFIX_USER).gr_gid)
    port = common.free_loopback_port()
    write(p.submission_file, f"127.0.0.1:{port}\n")
    return port


def adduser(directory: str, login: str, password: str) -> None:
    """Create (or change the password of) a SASL account on the stack."""
    p = Paths(os.path.abspath(directory))
    require(os.geteuid() == 0, "stack adduser needs root (the sasldb belongs to root, group postfix)")
    require(os.path.isdir(p.sasl_dir), f"no stack in {p.root} (no {p.sasl_dir}): run `sendgate stack up` first")
    require(bool(login) and all(c.isalnum() or c in "._-+" for c in login),
            f"bad login {login!r}: use letters, digits and . _ - +")
    require(bool(password) and "\n" not in password, "the password must be one non-empty line")
    realm = _sasl_realm(p)
    result = subprocess.run(["saslpasswd2", "-p", "-c", "-f", p.sasldb, "-u", realm, login],
                            input=password, capture_output=True, text=True, timeout=30)
    require(result.returncode == 0, f"saslpasswd2 failed: {result.stderr.strip()}")
    os.chown(p.sasldb, 0, grp.getgrnam(POSTFIX_USER).gr_gid)
    os.chmod(p.sasldb, 0o640)


def _sasl_realm(p: Paths) -> str:
    with open(os.path.join(p.postfix_config, "main.cf"), encoding="utf-8") as fp:
        for line in fp:
            name, _, value = line.partition("=")
            if name.strip() == "myhostname":
                return value.strip()
    raise StackError(f"{p.postfix_config}/main.cf names no myhostname")


def _ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def check_prerequisites() -> None:
    require(os.geteuid() == 0, "stack up needs root (it starts a private Postfix instance)")
    require(shutil.which("postfix") is not None and os.path.exists("/usr/sbin/postconf"),
            "Postfix is not installed (Debian: apt-get install postfix, answering 'No configuration')")
    common.require_users(SERVICE_USER, POSTFIX_USER)
    # The submit daemon takes the group itself (submit_groups), as its
    # systemd unit gives it: the service user is in no group of Postfix's.
    try:
        grp.getgrnam(POSTDROP_GROUP)
    except KeyError:
        require(False, f"no group {POSTDROP_GROUP!r}: Postfix is not installed properly")


def _postfix(p: Paths, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["postfix", "-c", p.postfix_config, *args],
                          capture_output=True, text=True, timeout=120)


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
       settings: dict | None = None, dkim: bool = False) -> dict[str, str]:
    """Build and start the stack; return the key=value facts `stack up` prints.
    dkim: a private OpenDKIM after sendgate-milter in smtpd_milters
    (sendgate/stack/opendkim.py)."""
    check_prerequisites()
    p = Paths(os.path.abspath(directory))
    if dkim:
        opendkim.check_prerequisites(p.root)
    common.require_not_running(p, "submitd", "milter")
    owner = mail_owner or default_mail_owner()
    mail_uid, mail_gid = _ids(owner)
    hostname = f"mail.{domain}"
    # Users must reach the submit socket: every directory on the way is 0755.
    mkdir(p.root, 0o755)
    mkdir(p.run, 0o755)
    mkdir(p.milter_dir, 0o2750, group=POSTFIX_USER)
    mkdir(p.logs, 0o755)
    mkdir(p.postfix_config, 0o755)
    mkdir(p.queue, 0o755)
    mkdir(p.data, 0o700, owner=POSTFIX_USER)
    mkdir(p.mail, 0o755, owner=owner)
    cfg = common.write_config(p, {
        "myhostname": hostname, "myorigin": domain,
        "submit_socket": p.socket, "submit_upstream": f"unix:{p.upstream}",
        "milter_socket": f"unix:{p.milter_socket}", "postfix_config_directory": p.postfix_config,
        "log_destination": "stderr",
        # The inbound service stands in for the network's port 25, reached
        # from loopback by the tests: relayed as a remote client's mail.
        "milter_loopback_clients": "relay",
    }, settings)
    inbound = common.inbound_port(p)
    submission = prepare_submission(p, hostname)
    require(submission != inbound, "two services were given the same loopback port; run stack up again")
    # sendgate's milter first: the signer must see the fields it adds (docs/dkim.md).
    milters = cfg.milter_socket + (" " + opendkim.prepare(p, domain, POSTFIX_USER) if dkim else "")
    write(os.path.join(p.postfix_config, "main.cf"),
          main_cf(p, domain, hostname, mail_uid, mail_gid, milters) + submission_main_cf(p))
    service = sendgate_service(os.path.basename(p.upstream), cfg.milter_local_daemon_name,
                               maxproc=cfg.submit_upstream_session_limit)
    write(os.path.join(p.postfix_config, "master.cf"), master_cf(service, inbound) + submission_master_cf(submission))

    pids: dict[str, int] = {}
    logs = {"postfix": p.postfix_log}
    common.start_milter(p, pids, logs)
    if dkim:
        opendkim.start(p, pids, logs)
    result = _postfix(p, "start")
    if result.returncode != 0:
        common.down(p.root, stop_mta, opendkim.stop)
        raise StackError(f"postfix start failed:\n{result.stdout}{result.stderr}")
    common.wait_for("Postfix's sendgate service", lambda: os.path.exists(p.upstream), pids, logs)
    common.start_submitd(p, pids, logs)
    return {
        "socket": p.socket, "maildir": p.maildir, "config": p.config,
        "postfix_config": p.postfix_config, "log": p.postfix_log, "inbound": f"127.0.0.1:{inbound}",
        "submission": f"127.0.0.1:{submission}",
        "submitd_log": p.submitd_log, "milter_log": p.milter_log, "domain": domain,
        "mta": "postfix", "upstream": p.upstream, **(opendkim.facts(p) if dkim else {}),
    }


def stop_mta(root: str) -> list[str]:
    """Stop this stack's Postfix, when root holds one and it runs."""
    p = Paths(root)
    if os.path.exists(os.path.join(p.postfix_config, "main.cf")) and _postfix(p, "status").returncode == 0:
        _postfix(p, "stop")
        return ["postfix"]
    return []

