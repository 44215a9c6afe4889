"""Shared fixtures: private MTA stacks (one per MTA, started when a test
first needs it and kept for the session), helpers to submit mail as the
unprivileged test users and to read what was delivered.

Tests that must behave the same on every MTA use the `stack` fixture, which
runs them once on Postfix and once on Sendmail; tests of one MTA's own
mechanism use `postfix_stack` or `sendmail_stack`.  Without root or Postfix
they are skipped, except under CI=true, where that is a failure: CI must
exercise the real MTAs.  The Sendmail stack fetches Sendmail itself.

Every test that uses a stack fixture or needs root is marked `mta`
(pytest_collection_modifyitems below), so that `pytest -m "not mta"` runs
the pure suite: no MTA, no daemon, no test user.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import pathlib
import pwd
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import types
from dataclasses import dataclass

import pytest

import sendgate

CHECKOUT = pathlib.Path(__file__).resolve().parent.parent
VENV_BIN = pathlib.Path(sys.executable).parent
TEST_USERS = ("sgtest1", "sgtest2", "sgtest3", "sgtest4")
DOMAIN = "example.org"
MTAS = ("postfix", "sendmail")


def _digest(root: pathlib.Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def pytest_sessionstart(session):
    # The tests run the installed copy (the daemons and the test users need
    # a path every user can read); make sure it is this checkout's code.
    installed = pathlib.Path(sendgate.__file__).parent
    if installed != CHECKOUT / "sendgate" and _digest(installed) != _digest(CHECKOUT / "sendgate"):
        pytest.exit(f"the installed sendgate ({installed}) differs from this checkout: "
                    "run scripts/test, which reinstalls it", returncode=3)


# The fixtures that start an MTA stack; pytest's item.fixturenames also
# holds every fixture these are reached through.
STACK_FIXTURES = frozenset({"stacks", "stack", "postfix_stack", "sendmail_stack"})
# How a test says it needs root: need(os.geteuid() == 0, ...), in the test,
# a fixture, or a helper of tests/ they call (start_stack, run_as, ...).
ROOT_CHECK = "geteuid"
TESTS = pathlib.Path(__file__).resolve().parent


def _of_tests(thing) -> bool:
    path = getattr(getattr(thing, "__code__", None), "co_filename", None) or getattr(thing, "__file__", None)
    return path is not None and pathlib.Path(path).resolve().is_relative_to(TESTS)


def _checks_root(code: types.CodeType, namespace: dict, seen: set) -> bool:
    """Whether code, its nested functions or a function of tests/ that it
    names (directly, as module.name or as a class's method) checks for root."""
    if code in seen:
        return False
    seen.add(code)
    if ROOT_CHECK in code.co_names:
        return True
    nested = [(c, namespace) for c in code.co_consts if isinstance(c, types.CodeType)]
    for name in code.co_names:
        value = namespace.get(name)
        if isinstance(value, types.ModuleType) and _of_tests(value):
            called = [getattr(value, attribute, None) for attribute in code.co_names]
        elif isinstance(value, type) and _of_tests(sys.modules.get(value.__module__)):
            called = list(vars(value).values())
        else:
            called = [value]
        nested += [(f.__code__, f.__globals__) for f in called if isinstance(f, types.FunctionType) and _of_tests(f)]
    return any(_checks_root(c, ns, seen) for c, ns in nested)


def needs_mta(item) -> bool:
    if STACK_FIXTURES & set(item.fixturenames):
        return True
    functions = [getattr(item, "function", None)]
    for defs in item._fixtureinfo.name2fixturedefs.values():
        functions += [getattr(d.func, "__wrapped__", d.func) for d in defs]
    seen: set = set()
    return any(_checks_root(f.__code__, f.__globals__, seen)
               for f in functions if isinstance(f, types.FunctionType))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if needs_mta(item):
            item.add_marker(pytest.mark.mta)


def need(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs this: {why}")
    pytest.skip(why)


def program(name: str) -> str:
    return str(VENV_BIN / name)


@dataclass
class Stack:
    dir: pathlib.Path
    facts: dict[str, str]

    @property
    def socket(self) -> str:
        return self.facts["socket"]

    @property
    def maildir(self) -> pathlib.Path:
        return pathlib.Path(self.facts["maildir"])

    @property
    def config(self) -> str:
        return self.facts["config"]

    @property
    def mta(self) -> str:
        return self.facts["mta"]

    @property
    def postfix_log(self) -> pathlib.Path:
        assert self.mta == "postfix"
        return pathlib.Path(self.facts["log"])

    @property
    def sendmail_log(self) -> pathlib.Path:
        assert self.mta == "sendmail"
        return pathlib.Path(self.facts["log"])

    @property
    def milter_log(self) -> pathlib.Path:
        return pathlib.Path(self.facts["milter_log"])

    @property
    def inbound(self) -> tuple[str, int]:
        host, port = self.facts["inbound"].rsplit(":", 1)
        return host, int(port)

    @property
    def submission(self) -> tuple[str, int]:
        host, port = self.facts["submission"].rsplit(":", 1)
        return host, int(port)

    @property
    def milter_socket(self) -> str:
        return str(self.dir / "run/milter/milter.sock")

    def env(self) -> dict[str, str]:
        return {"SENDGATE_CONFIG": self.config, "PATH": "/usr/bin:/bin"}


def start_stack(prefix: str, *settings: str, mta: str = "postfix", options: tuple[str, ...] = (),
                parent: str = "/tmp") -> Stack:
    """sendgate stack up in a new directory under parent; --set KEY=VALUE
    for settings, options (e.g. --dkim) as they are.  On Postfix, also the
    test users' SASL accounts (password: password_of(user))."""
    need_stack_prerequisites(mta)
    directory = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    directory.chmod(0o755)
    args = [*options, *(a for item in settings for a in ("--set", item))]
    up = subprocess.run([program("sendgate"), "stack", "up", "--mta", mta, "--dir", str(directory), *args],
                        capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        stop_stack(directory)
        pytest.fail(f"stack up --mta {mta} failed ({up.returncode}):\n{up.stdout}{up.stderr}")
    for user in TEST_USERS if mta == "postfix" else ():
        add = subprocess.run([program("sendgate"), "stack", "adduser", "--dir", str(directory), user,
                              password_of(user)], capture_output=True, text=True, timeout=60)
        if add.returncode != 0:
            stop_stack(directory)
            pytest.fail(f"stack adduser {user} failed ({add.returncode}):\n{add.stderr}")
    return Stack(directory, dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line))


def stop_stack(directory: pathlib.Path) -> None:
    subprocess.run([program("sendgate"), "stack", "down", "--dir", str(directory)],
                   capture_output=True, text=True, timeout=120)
    shutil.rmtree(directory, ignore_errors=True)


def need_stack_prerequisites(mta: str = "postfix") -> None:
    need(os.geteuid() == 0, "the stack tests run as root")
    for user in TEST_USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            need(False, f"test user {user} is missing (scripts/test creates it)")
    if mta == "postfix":
        need(shutil.which("postfix") is not None, "Postfix is not installed")
        need(shutil.which("saslpasswd2") is not None, "saslpasswd2 is not installed (sasl2-bin)")
    else:
        need(shutil.which("m4") is not None, "m4 is not installed (the Sendmail stack's .cf is built with it)")


class Stacks:
    """The session's stacks, one per MTA, started on first use and stopped at the end."""

    def __init__(self):
        self.started: dict[str, Stack] = {}
        self.failed: dict[str, str] = {}

    def get(self, mta: str) -> Stack:
        need_stack_prerequisites(mta)
        if mta in self.failed:
            pytest.fail(self.failed[mta])
        if mta not in self.started:
            try:
                self.started[mta] = start_stack(f"sendgate-test-{mta}-", mta=mta)
            except pytest.fail.Exception as err:
                self.failed[mta] = str(err)
                raise
        return self.started[mta]

    def close(self) -> None:
        for item in self.started.values():
            stop_stack(item.dir)


@pytest.fixture(scope="session")
def stacks():
    started = Stacks()
    yield started
    started.close()


@pytest.fixture(scope="session", params=MTAS)
def stack(request, stacks) -> Stack:
    return stacks.get(request.param)


@pytest.fixture(scope="session")
def postfix_stack(stacks) -> Stack:
    return stacks.get("postfix")


@pytest.fixture(scope="session")
def sendmail_stack(stacks) -> Stack:
    return stacks.get("sendmail")


def password_of(user: str) -> str:
    return f"secret-of-{user}"


def submit_smtp(stack: Stack, user: str | None, sender: str, recipients: list[str], message: str,
                password: str | None = None) -> str:
    """Send one message on the submission port: STARTTLS (the stack's test
    certificate verified), AUTH as user unless None.  Returns the final
    reply as "CODE TEXT"."""
    host, port = stack.submission
    context = ssl.create_default_context(cafile=str(stack.dir / "postfix/tls/cert.pem"))
    with smtplib.SMTP(host, port, timeout=30) as client:
        try:
            client.starttls(context=context)
        except smtplib.SMTPResponseException as err:
            return f"{err.smtp_code} {err.smtp_error.decode()}"
        if user is not None:
            client.login(user, password if password is not None else password_of(user))
        try:
            client.sendmail(sender, recipients, message)
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as err:
            return f"{err.smtp_code} {err.smtp_error.decode()}"
        except smtplib.SMTPRecipientsRefused as err:
            code, text = next(iter(err.recipients.values()))
            return f"{code} {text.decode()}"
    return "250 queued"


def run_as(user: str, argv: list[str], stdin: bytes = b"", env: dict | None = None,
           timeout: float = 60, groups: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run argv as user, with a clean environment plus env (and the
    supplementary groups groups besides the user's own)."""
    need(os.geteuid() == 0, f"runs programs as the test user {user}")
    entry = pwd.getpwnam(user)
    environment = {"HOME": entry.pw_dir, "USER": user, "LOGNAME": user, "PATH": "/usr/bin:/bin"}
    environment.update(env or {})
    return subprocess.run(["runuser", *(f"--supp-group={g}" for g in groups), "-u", user, "--", "env", "-i",
                           *(f"{k}={v}" for k, v in environment.items()), *argv],
                          input=stdin, capture_output=True, timeout=timeout, cwd="/")


def clear_dead_letter(home: pathlib.Path) -> None:
    """Remove a test user's ~/dead.letter, and the link target the symlink
    test plants, whatever is there."""
    for path in (home / "dead.letter", home / "elsewhere"):
        if path.is_symlink() or path.exists():
            path.unlink()


def sendmail(stack: Stack, user: str, args: list[str], message: bytes, env: dict | None = None):
    return run_as(user, [program("sendgate-sendmail"), *args], message, {**stack.env(), **(env or {})})


@dataclass
class Delivered:
    path: pathlib.Path
    raw: bytes
    message: email.message.Message

    def all(self, name: str) -> list[str]:
        return [str(v) for v in self.message.get_all(name, [])]

    def one(self, name: str) -> str:
        values = self.all(name)
        assert len(values) == 1, f"{name}: expected one field, got {values!r}"
        return values[0]

    @property
    def header_names(self) -> list[str]:
        return list(self.message.keys())


def delivered(stack: Stack, marker: str, count: int = 1, timeout: float = 20) -> list[Delivered]:
    """The delivered copies whose raw text contains marker (wait for count)."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        new = stack.maildir / "new"
        for path in sorted(new.iterdir()) if new.exists() else []:
            raw = path.read_bytes()
            if marker.encode() in raw:
                found.append(Delivered(path, raw, email.message_from_bytes(raw, policy=email.policy.compat32)))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def queue_id(item: Delivered) -> str:
    """The MTA's queue id, from the Received: it added (Postfix and Sendmail
    both write "... id QUEUEID ...")."""
    received = item.all("Received")[0]
    return received.split(" id ", 1)[1].split()[0].rstrip(";")


def postfix_log_lines(stack: Stack, qid: str) -> list[str]:
    return [line for line in stack.postfix_log.read_text(errors="replace").splitlines() if f" {qid}:" in line]


def log_text(path: pathlib.Path, until, offset: int = 0, timeout: float = 5) -> str:
    """The log's text after offset, once until (a substring or a compiled
    pattern) is in it, or whatever is there after timeout.  The milter
    writes its lines from a thread of its own, a moment after deciding."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_bytes()[offset:].decode("utf-8", "replace")
        found = until.search(text) if hasattr(until, "search") else until in text
        if found or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


def milter_log_lines(stack: Stack, qid: str, until: str = "") -> list[str]:
    """The milter's lines for qid, once one of them contains until."""
    pattern = re.compile(re.escape(f" {qid}: ") + ".*" + re.escape(until))
    text = log_text(stack.milter_log, pattern)
    return [line for line in text.splitlines() if f" {qid}: " in line]


def sendmail_log_lines(stack: Stack, qid: str, until: str, timeout: float = 10) -> list[str]:
    """Sendmail's log lines for qid, once one of them contains until (it
    logs a delivery just after the delivery agent has written the file)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in stack.sendmail_log.read_text(errors="replace").splitlines() if f" {qid}: " in line]
        if any(until in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def assert_submitted_by(stack: Stack, item: Delivered, login: str) -> None:
    """The milter judged the message as login's submission.  On Postfix the
    MTA itself logged the XCLIENT login too; Sendmail never learns the login
    (it reaches only the milter, see sendgate.policy.handoff), but its log
    shows that the message came in on the submit daemon's service."""
    qid = queue_id(item)
    lines = milter_log_lines(stack, qid, until="submission: login=")
    assert any(f"{qid}: submission: login={login} " in line for line in lines)
    if stack.mta == "postfix":
        assert any(f"sasl_method=XCLIENT, sasl_username={login}" in line for line in postfix_log_lines(stack, qid))
    else:
        lines = sendmail_log_lines(stack, qid, until="stat=Sent")
        assert any(": from=<" in line and ", daemon=sendgate-local, " in line for line in lines)
        assert any("mailer=maildir" in line and "stat=Sent" in line for line in lines)
    assert item.all("X-Sendgate-Login") == []


def unique_marker(request) -> str:
    return "m" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]


# What the submit daemon logs when a SIGHUP was handled, either way
# (sendgate/submit_socket/main.py, Service.reload).
RELOADED = re.compile(r": (reloaded |error: reload failed, )")


def hup_submitd(stack) -> None:
    """SIGHUP to the stack's submit daemon; return once it has logged the
    reload this signal caused (a line after the log's end at the signal)."""
    log = stack.dir / "log/submitd.log"
    offset = log.stat().st_size
    os.kill(int((stack.dir / "run/submitd.pid").read_text()), signal.SIGHUP)
    text = log_text(log, RELOADED, offset, timeout=10)
    assert RELOADED.search(text), f"no reload logged in {log} after SIGHUP:\n{text}"


@pytest.fixture(scope="session")
def deb() -> pathlib.Path:
    """The Debian package, built once per session by scripts/build-deb
    (tests/test_deb.py, and the host suite's package install)."""
    need(os.geteuid() == 0, "building the package needs root (scripts/build-deb installs its build dependencies)")
    need(shutil.which("dpkg-buildpackage") is not None, "dpkg-buildpackage (dpkg-dev) is not installed")
    result = subprocess.run([str(CHECKOUT / "scripts/build-deb")], cwd=CHECKOUT, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    # Issue 17: the build runs without deprecation warnings (setuptools', pip's).
    assert [line for line in (result.stdout + result.stderr).splitlines() if "deprecat" in line.lower()] == []
    version = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["version"]
    path = CHECKOUT / result.stdout.strip().splitlines()[-1]
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    assert path == CHECKOUT / f"dist/sendgate_{version}_{arch}.deb"
    return path
