"""Shared fixtures: one private Postfix stack per test session, helpers to
submit mail as the unprivileged test users and to read what was delivered.

Tests that need the real stack use the `stack` fixture.  Without root or
Postfix they are skipped, except under CI=true, where a missing Postfix is
a failure: CI must exercise the real MTA.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import pathlib
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import pytest

import sendgate

CHECKOUT = pathlib.Path(__file__).resolve().parent.parent
VENV_BIN = pathlib.Path(sys.executable).parent
TEST_USERS = ("sgtest1", "sgtest2", "sgtest3", "sgtest4")
DOMAIN = "example.org"


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
    def postfix_log(self) -> pathlib.Path:
        return pathlib.Path(self.facts["log"])

    @property
    def inbound(self) -> tuple[str, int]:
        host, port = self.facts["inbound"].rsplit(":", 1)
        return host, int(port)

    def env(self) -> dict[str, str]:
        return {"SENDGATE_CONFIG": self.config, "PATH": "/usr/bin:/bin"}


@pytest.fixture(scope="session")
def stack():
    need(os.geteuid() == 0, "the stack tests run as root")
    need(shutil.which("postfix") is not None, "Postfix is not installed")
    for user in TEST_USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            need(False, f"test user {user} is missing (scripts/test creates it)")
    directory = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-test-", dir="/tmp"))
    directory.chmod(0o755)
    up = subprocess.run([program("sendgate"), "stack", "up", "--dir", str(directory)],
                        capture_output=True, text=True, timeout=180)
    if up.returncode != 0:
        subprocess.run([program("sendgate"), "stack", "down", "--dir", str(directory)], capture_output=True)
        pytest.fail(f"stack up failed ({up.returncode}):\n{up.stdout}{up.stderr}")
    facts = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    yield Stack(directory, facts)
    subprocess.run([program("sendgate"), "stack", "down", "--dir", str(directory)],
                   capture_output=True, text=True, timeout=120)
    shutil.rmtree(directory, ignore_errors=True)


def run_as(user: str, argv: list[str], stdin: bytes = b"", env: dict | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
    """Run argv as user, with a clean environment plus env."""
    entry = pwd.getpwnam(user)
    environment = {"HOME": entry.pw_dir, "USER": user, "LOGNAME": user, "PATH": "/usr/bin:/bin"}
    environment.update(env or {})
    return subprocess.run(["runuser", "-u", user, "--", "env", "-i",
                           *(f"{k}={v}" for k, v in environment.items()), *argv],
                          input=stdin, capture_output=True, timeout=timeout, cwd="/")


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
    """Postfix's queue id, from the Received: it added."""
    received = item.all("Received")[0]
    return received.split(" id ", 1)[1].split()[0].rstrip(";")


def postfix_log_lines(stack: Stack, qid: str) -> list[str]:
    return [line for line in stack.postfix_log.read_text(errors="replace").splitlines() if f" {qid}:" in line]


def unique_marker(request) -> str:
    return "m" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
