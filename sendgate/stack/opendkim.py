"""A private OpenDKIM as the stack's second milter, after sendgate-milter
(`stack up --dkim`): the DKIM signer of a real host, signing for the
stack's domain with a key made at stack up (docs/dkim.md).

Layout (besides the MTA's, sendgate/stack/postfix.py):
    DIR/opendkim/opendkim.conf      its configuration (dkim_config=)
    DIR/opendkim/keys/test.private  the key opendkim-genkey made (owner opendkim, 0600)
    DIR/opendkim/keys/test.txt      the public key as a DNS TXT record of
                                    test._domainkey.DOMAIN (dkim_record=): a
                                    verifier reads it from here, no DNS
    DIR/run/opendkim/opendkim.sock  its milter socket, in a set-gid directory
                                    of the MTA's group (as sendgate-milter's)
    DIR/log/opendkim.log            what it writes on stderr (Syslog no)

What it signs is OpenDKIM's own rule (opendkim.conf(5)): mail whose From:
domain is Domain, when the client is one of InternalHosts or authenticated
(SMTP AUTH, and XCLIENT LOGIN, which Postfix passes as {auth_authen}).
InternalHosts is the host itself: 127.0.0.1 (OpenDKIM's default, what
Postfix names its unix-socket clients and the tests' loopback clients are)
and localhost, the only name Sendmail gives a client of its unix-socket
daemon (sendgate-local, "[UNIX: localhost]"), which has no address.  Mail from any other client is
neither signed nor, in Mode s, verified.  It signs OpenDKIM's default
fields and Message-ID and Sender (SignHeaders *,+Message-ID,+Sender: the
default list, RFC 6376 section 5.4.1, has neither), and signs From: once
more than there are (OversignHeaders From, as Debian's opendkim.conf).  OpenDKIM starts as root and runs
as its Debian account, opendkim.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from sendgate.stack import common
from sendgate.stack.common import mkdir, require, write

USER = "opendkim"
SELECTOR = "test"
WHERE = {
    "dkim_dir": "opendkim", "dkim_config": "opendkim/opendkim.conf", "dkim_keys": "opendkim/keys",
    "dkim_key": f"opendkim/keys/{SELECTOR}.private", "dkim_record": f"opendkim/keys/{SELECTOR}.txt",
    "dkim_socket_dir": "run/opendkim", "dkim_socket": "run/opendkim/opendkim.sock", "dkim_log": "log/opendkim.log",
}


def check_prerequisites(root: str) -> None:
    """Before stack up makes anything: OpenDKIM installed, its account, and
    root below no directory others may write (check_directory)."""
    require(shutil.which("opendkim") is not None and shutil.which("opendkim-genkey") is not None,
            "--dkim: OpenDKIM is not installed (Debian: apt-get install opendkim opendkim-tools)")
    common.require_users(USER)
    check_directory(root)


def opendkim_conf(p, domain: str) -> str:
    return f"""# The private OpenDKIM of a sendgate stack; written by `sendgate stack up --dkim`.
Mode                    s
Domain                  {domain}
Selector                {SELECTOR}
KeyFile                 {p.dkim_key}
InternalHosts           127.0.0.1, localhost
Canonicalization        relaxed/simple
OversignHeaders         From
# OpenDKIM's default list (RFC 6376 section 5.4.1) has neither Message-ID
# nor Sender: add them, so that every field sendgate adds is signed.
SignHeaders             *,+Message-ID,+Sender
Socket                  local:{p.dkim_socket}
UMask                   0007
UserID                  {USER}
Syslog                  no
"""


def check_directory(root: str) -> None:
    """OpenDKIM refuses a configuration or key file below a directory that
    others may write (it names /tmp so), sticky or not."""
    path = os.path.dirname(root)
    while True:
        mode = os.stat(path).st_mode
        require(not mode & 0o022, f"--dkim: {path} can be written by other users, and OpenDKIM refuses files "
                f"below it: put the stack's directory elsewhere (e.g. under /run or /var/lib)")
        if path == "/":
            return
        path = os.path.dirname(path)


def prepare(p, domain: str, mta_group: str) -> str:
    """Key pair, configuration and socket directory; the milter word the
    MTA's configuration names."""
    mkdir(p.dkim_dir, 0o755)
    mkdir(p.dkim_keys, 0o750, owner=USER, group=USER)
    result = subprocess.run(["opendkim-genkey", "-b", "2048", "-D", p.dkim_keys, "-d", domain, "-s", SELECTOR],
                            capture_output=True, text=True, timeout=120)
    require(result.returncode == 0, f"opendkim-genkey failed:\n{result.stdout}{result.stderr}")
    for path in (p.dkim_key, p.dkim_record):
        shutil.chown(path, USER, USER)
    os.chmod(p.dkim_key, 0o600)
    os.chmod(p.dkim_record, 0o644)
    mkdir(p.dkim_socket_dir, 0o2750, owner=USER, group=mta_group)
    write(p.dkim_config, opendkim_conf(p, domain))
    return f"unix:{p.dkim_socket}"


def start(p, pids: dict[str, int], logs: dict[str, str]) -> None:
    logs["opendkim"] = p.dkim_log
    pids["opendkim"] = common.spawn_program(p, "opendkim", ["opendkim", "-f", "-x", p.dkim_config], p.dkim_log)
    common.wait_for("OpenDKIM's socket", lambda: os.path.exists(p.dkim_socket), pids, logs)


def facts(p) -> dict[str, str]:
    return {"dkim_config": p.dkim_config, "dkim_record": p.dkim_record, "dkim_selector": SELECTOR,
            "dkim_log": p.dkim_log}


def stop(root: str) -> list[str]:
    """Stop the stack's OpenDKIM, when it runs."""
    stopped = common.stop(common.Paths(root), "opendkim")
    return [stopped] if stopped else []
