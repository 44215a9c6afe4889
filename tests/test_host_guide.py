"""The README's "Install on an existing Postfix host", run as written on a
stock Debian 12 Postfix host booted under real systemd (tests/hostroot.py),
then attacked as an ordinary user, then rolled back.  docs/host-tests.md
says what it covers and what it costs.

The tests share one booted host and run in file order: the guide first,
the rollback last.
"""

from __future__ import annotations

import difflib
import email
import email.policy
import os
import re
import shutil
import subprocess
import textwrap
import time

import pytest

import hostroot
from conftest import CHECKOUT, need

pytestmark = [pytest.mark.host, pytest.mark.mta]

DOMAIN = hostroot.MAILNAME
# The file tree, modes and owners setup-postfix and install-shim touch;
# the queue's own files come and go with the mail and are left out.
SNAPSHOT = r"""
postconf -n; echo ==; postconf -M; echo ==; dpkg-divert --list | sort; echo ==
find /etc /usr /var/spool/postfix -xdev \
    \( -path /etc/sendgate/sendgate.yaml -o -name __pycache__ -o -path /etc/ld.so.cache \
       -o -regex '/var/spool/postfix/\(active\|bounce\|corrupt\|defer\|deferred\|flush\|hold\|incoming\|maildrop\|saved\|trace\|pid\)/.*' \) \
    -prune -o -printf '%p %M %u %g %l\n' | sort | grep -v -e '^/etc/sendgate ' -e '^/etc/sendgate/sendgate.yaml '
"""


def sh_blocks(text: str) -> list[list[str]]:
    blocks = re.findall(r"^( *)```sh\n(.*?)^\1```", text, re.M | re.S)
    return [[line for line in textwrap.dedent(body).splitlines() if line.strip()] for _, body in blocks]


def guide() -> tuple[list[list[str]], list[str]]:
    """The guide's steps (one list of commands per step) and the rollback,
    as the README has them."""
    readme = (CHECKOUT / "README.md").read_text()
    section = readme.split("\n## Install on an existing Postfix host\n", 1)[1].split("\n## ", 1)[0]
    steps, rest = section.split("**Network submission", 1)
    (rollback,) = sh_blocks(rest.split("**Rollback**", 1)[1])
    return sh_blocks(steps), rollback


class Guided(hostroot.Host):
    def __init__(self) -> None:
        super().__init__()
        self.ran: list[tuple[str, object]] = []
        self.before = ""
        self.install = ""
        self.steps: list[list[str]] = []
        self.rollback: list[str] = []

    def follow(self, commands: list[str]) -> bool:
        for command in commands:
            done = self.sh(f"cd /root/sendgate && {command}", check=False, timeout=900)
            self.ran.append((command, done))
            if done.returncode != 0:
                return False
        return True


def install_guide(install: str, deb: str = "") -> tuple[list[list[str]], list[str]]:
    """The guide for the checkout, or for the package: the README's "the
    steps below are then the same, with sendgate in /usr/bin", the package
    installed instead of step 1 and purged after the rollback."""
    steps, rollback = guide()
    if install == "checkout":
        return steps, rollback
    def packaged(commands: list[str]) -> list[str]:
        return [c.replace("/opt/sendgate/venv/bin/sendgate", "sendgate") for c in commands]
    return [[f"dpkg -i /root/{deb}"], *map(packaged, steps[1:])], [*packaged(rollback), "dpkg --purge sendgate"]


@pytest.fixture(scope="module", params=["checkout", "package"])
def host(request):
    need(os.geteuid() == 0, "the host suite runs as root")
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        need(shutil.which(tool) is not None, f"the host suite needs {tool}")
    deb = request.getfixturevalue("deb") if request.param == "package" else None
    source = hostroot.cached_root()
    machine = Guided()
    machine.install = request.param
    try:
        machine.boot(source)
        if deb is not None:
            shutil.copy(deb, machine.path("/root"))
        machine.steps, machine.rollback = install_guide(request.param, deb.name if deb else "")
        machine.before = machine.sh(SNAPSHOT).stdout if deb else ""
        if machine.follow(machine.steps[0]):
            machine.before = machine.before or machine.sh(SNAPSHOT).stdout
            for step in machine.steps[1:]:
                if not machine.follow(step):
                    break
        yield machine
    finally:
        machine.shutdown()


def mailbox(host, user: str) -> list[email.message.EmailMessage]:
    path = host.path(f"/var/mail/{user}")
    if not path.exists():
        return []
    # mbox: each message starts with a "From " line and ends with an empty one.
    parts = re.split(rb"(?m)^From ", path.read_bytes())[1:]
    return [email.message_from_bytes(b"From " + part.removesuffix(b"\n"), policy=email.policy.default)
            for part in parts]


def arrived(host, user: str, subject: str, timeout: float = 60) -> email.message.EmailMessage:
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in mailbox(host, user) if m["Subject"] == subject]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            queue = host.sh("postqueue -p; journalctl --no-pager -n 40", check=False).stdout
            pytest.fail(f"{subject!r} did not reach {user}:\n{queue}")
        time.sleep(0.3)


def never_arrives(host, user: str, subject: str) -> None:
    """After a message sent afterwards has arrived, subject has not."""
    marker = f"{subject} (marker)"
    host.sh("/usr/sbin/sendmail root", user="root", input=f"Subject: {marker}\n\nafter\n")
    arrived(host, "root", marker)
    host.sh("postqueue -p | grep -q 'Mail queue is empty' || sleep 2", check=False)
    assert [m["Subject"] for m in mailbox(host, user) if m["Subject"] == subject] == []


def test_the_guide_runs_as_written(host):
    failed = [(command, done.returncode, done.stdout + done.stderr) for command, done in host.ran
              if done.returncode != 0]
    assert failed == []
    assert [command for command, _ in host.ran] == [c for step in host.steps for c in step]
    (status,) = [done.stdout for command, done in host.ran if command.endswith("sendgate status")]
    assert "problem:" not in status, status
    assert host.sh("systemctl is-active sendgate-milter.service sendgate-submitd.socket "
                   "sendgate-submitd.service postfix.service").stdout.split() == ["active"] * 4


def test_a_users_mail_is_delivered_with_the_fixups(host):
    done = host.sh("/usr/sbin/sendmail bob", user="alice", input="Subject: host guide 1\n\nhello from alice\n",
                   check=False)
    assert (done.returncode, done.stderr) == (0, "")
    message = arrived(host, "bob", "host guide 1")
    assert message["From"] == f"alice@{DOMAIN}"
    assert message["Date"] and message["Message-ID"]
    assert message.get_content() == "hello from alice\n"
    assert message["Return-Path"] == f"<alice@{DOMAIN}>"


# Postfix's own submission path, open to every user on a stock host.
POSTFIX_PATHS = [
    pytest.param("/usr/sbin/sendmail.sendgate-orig -f alice@{domain} bob", "Subject: {subject}\n\nx\n",
                 id="postfix-sendmail"),
    pytest.param("/usr/sbin/sendmail.sendgate-orig -bs",
                 "EHLO x\r\nMAIL FROM:<alice@{domain}>\r\nRCPT TO:<bob>\r\nDATA\r\nSubject: {subject}\r\n\r\nx\r\n"
                 ".\r\nQUIT\r\n", id="postfix-sendmail-bs"),
    pytest.param("/usr/sbin/postdrop -r", "Subject: {subject}\n", id="postdrop"),
]


@pytest.mark.parametrize("command, data", POSTFIX_PATHS)
def test_postfix_s_own_submission_refuses_users(host, command, data, request):
    subject = f"around the policy {request.node.callspec.id}"
    done = host.sh(command.format(domain=DOMAIN), user="alice", input=data.format(domain=DOMAIN, subject=subject),
                   check=False)
    assert "is not allowed to submit mail" in done.stdout + done.stderr
    never_arrives(host, "bob", subject)


LOOPBACK = """
import smtplib, sys
with smtplib.SMTP("127.0.0.1", 25) as smtp:
    smtp.ehlo("client")
    code, reply = smtp.mail(sys.argv[1])
    if code == 250:
        smtp.rcpt("bob")
        code, reply = smtp.data(b"Subject: " + sys.argv[2].encode() + b"\\r\\n\\r\\nover loopback\\r\\n")
    print(code, reply.decode())
"""


def test_a_loopback_client_is_its_socket_s_owner(host):
    forged = host.sh(f"python3 -c '{LOOPBACK}' bob@{DOMAIN} 'loopback forged'", user="alice").stdout
    assert forged.startswith("553 5.7.1"), forged
    assert "not owned by user alice" in forged
    own = host.sh(f"python3 -c '{LOOPBACK}' alice@{DOMAIN} 'loopback own'", user="alice").stdout
    assert own.startswith("250 "), own
    message = arrived(host, "bob", "loopback own")
    assert message["From"] == f"alice@{DOMAIN}"
    assert message["Message-ID"] and message["Date"]
    never_arrives(host, "bob", "loopback forged")


def groups(host, unit: str) -> list[str]:
    pid = host.sh(f"systemctl show --property=MainPID --value {unit}").stdout.strip()
    line = [x for x in host.sh(f"cat /proc/{pid}/status").stdout.splitlines() if x.startswith("Groups:")][0]
    return sorted(host.sh(f"getent group {gid} | cut -d: -f1").stdout.strip() for gid in line.split()[1:])


# One user holding sessions on the submit socket: some idle (not a command
# sent), some parked in DATA with part of a message.
HOLD = """
import socket, sys, time
held = []
for n in range(100):
    s = socket.socket(socket.AF_UNIX); s.connect("/run/sendgate/submit.sock"); held.append(s)
for n in range(100):
    s = socket.socket(socket.AF_UNIX); s.connect("/run/sendgate/submit.sock"); held.append(s)
    s.sendall(b"EHLO x\\r\\nMAIL FROM:<alice@%s>\\r\\nRCPT TO:<bob>\\r\\nDATA\\r\\nSubject: parked\\r\\n\\r\\n"
              % sys.argv[1].encode() + b"x" * 60000 + b"\\r\\n")
time.sleep(1)
print("held", len(held), flush=True)
sys.stdin.read()  # until the test closes it
"""


def test_one_user_s_held_sessions_do_not_stop_another(host):
    holder = subprocess.Popen(host.argv(f"python3 -c '{HOLD}' {DOMAIN}", user="alice"), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held 200\n", holder.stderr.read() if holder.poll() is not None else ""
        done = host.sh("timeout 20 /usr/sbin/sendmail alice", user="bob", input="Subject: past the crowd\n\nx\n",
                       check=False)
        assert (done.returncode, done.stderr) == (0, "")
        arrived(host, "alice", "past the crowd")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    never_arrives(host, "bob", "parked")


def test_the_milter_holds_no_group_of_postfix_s_and_the_submit_daemon_only_postdrop(host):
    assert (groups(host, "sendgate-milter.service"), groups(host, "sendgate-submitd.service")) == (
        ["sendgate"], ["postdrop", "sendgate"])


def test_with_the_submit_daemon_stopped_mail_is_saved_then_sent(host):
    host.sh("systemctl stop sendgate-submitd.socket sendgate-submitd.service")
    try:
        done = host.sh("/usr/sbin/sendmail bob", user="alice", input="Subject: while stopped\n\nkept\n",
                       check=False)
        assert done.returncode == 75, done.stderr
        saved = host.sh("find /var/spool/sendgate/deferred -type f -user alice").stdout.split()
        assert len(saved) == 1, done.stderr
    finally:
        host.sh("systemctl start sendgate-submitd.socket sendgate-submitd.service")
    message = arrived(host, "bob", "while stopped", timeout=120)
    assert message.get_content() == "kept\n"
    assert host.sh("find /var/spool/sendgate/deferred -type f -user alice").stdout == ""


def test_postfix_s_debconf_answers_are_untouched(host):
    answers = host.sh("debconf-show postfix").stdout
    assert "* postfix/main_mailer_type: Internet Site" in answers.splitlines()


def test_bootstrap_again_changes_nothing(host):
    if host.install == "package":
        pytest.skip("the package install has no bootstrap")
    before = host.sh(SNAPSHOT).stdout
    host.sh("cd /root/sendgate && scripts/bootstrap")
    assert host.sh(SNAPSHOT).stdout == before


@pytest.mark.parametrize("command, output", [
    pytest.param("/usr/bin/mailq.sendgate-orig", "Mail queue is empty\n", id="mailq"),
    pytest.param("/usr/bin/newaliases.sendgate-orig && echo done", "done\n", id="newaliases"),
])
def test_the_kept_originals_work(host, command, output):
    assert host.sh(command).stdout == output


@pytest.mark.parametrize("unit", ["sendgate-submitd.service", "sendgate-milter.service"])
def test_systemd_analyze_security(host, unit, record_property):
    report = host.sh(f"systemd-analyze security --no-pager {unit}").stdout
    (level,) = re.findall(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", report)
    record_property("exposure", level)
    print(f"{unit}: exposure {level}")
    assert float(level) <= 5.0, report


def test_the_rollback_restores_the_host(host):
    assert host.before, "the guide did not get past step 1"
    for command in host.rollback:
        done = host.sh(f"cd /root/sendgate && {command}", check=False)
        assert done.returncode == 0, (command, done.stdout + done.stderr)
    after = host.sh(SNAPSHOT).stdout
    assert list(difflib.unified_diff(host.before.splitlines(), after.splitlines(), "before", "after",
                                     lineterm="")) == []
    # /usr/sbin/sendmail is Postfix's again (the shim would exit 75, its
    # daemon being stopped) and delivers.
    host.sh("/usr/sbin/sendmail bob", input="Subject: after the rollback\n\nx\n")
    arrived(host, "bob", "after the rollback")
