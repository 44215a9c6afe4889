"""Helpers shared by the sendmail command's tests: a scratch directory every
test user can read, with `sendmail` and `send-mail` on its bin/ pointing at
the installed command, and a runner that puts that bin/ first in PATH."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest

from conftest import need, program, run_as


@pytest.fixture(scope="module")
def public_dir():
    """A fresh directory under /tmp, mode 0755, removed afterwards."""
    need(os.geteuid() == 0, "runs programs as the test users")
    directory = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-shim-", dir="/tmp"))
    directory.chmod(0o755)
    (directory / "bin").mkdir(mode=0o755)
    for name in ("sendmail", "send-mail", "mailq", "newaliases"):
        (directory / "bin" / name).symlink_to(program("sendgate-sendmail"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def run_caller(stack, public_dir, user, argv, stdin=b"", env=None):
    """argv as user, with the scratch bin/ first in PATH and the stack's config."""
    environment = {**stack.env(), "PATH": f"{public_dir}/bin:/usr/bin:/bin", **(env or {})}
    return run_as(user, argv, stdin, environment)
