"""sendgate.policy stays pure: no I/O, no daemon frameworks; so does the
milter's plan (sendgate/milter/plan.py), which only turns policy output into
milter actions as data."""

from __future__ import annotations

import ast
import pathlib

import pytest

import sendgate.milter.plan
import sendgate.policy

POLICY = pathlib.Path(sendgate.policy.__file__).parent
PURE = [*sorted(POLICY.glob("*.py")), pathlib.Path(sendgate.milter.plan.__file__)]
ALLOWED = {"__future__", "base64", "collections", "dataclasses", "enum", "functools", "itertools", "re",
           "string", "typing", "sendgate.policy", "sendgate.replies", "sendgate.wiredata"}


def imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pure_module_imports_nothing_with_io(path):
    bad = {n for n in imports(path) if not any(n == a or n.startswith(a + ".") for a in ALLOWED)}
    assert bad == set()


def test_sendmail_command_imports_little():
    """The sendmail command's start-up cost is every cron job's: no asyncio, email, yaml."""
    import subprocess
    import sys
    code = ("import sys, sendgate.sendmail_shim.main; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('asyncio', 'email', 'yaml', 'argparse', 'aiosmtpd', 'Milter', 'logging', 'ssl')))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
