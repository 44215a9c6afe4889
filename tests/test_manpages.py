"""Manual pages: built from each command's --help, committed in man/,
installed by the package."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from conftest import program
from sendgate import manpages

CHECKOUT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("filename", sorted(manpages.pages()))
def test_committed_page_is_current(filename):
    assert (CHECKOUT / "man" / filename).read_text() == manpages.pages()[filename], \
        "man/ is stale: sendgate man-pages man"


@pytest.mark.parametrize("filename", sorted(manpages.pages()))
def test_page_is_installed(filename):
    section = filename.rsplit(".", 1)[1]
    assert (pathlib.Path(sys.prefix) / "share/man" / f"man{section}" / filename).read_text() == \
        manpages.pages()[filename]


@pytest.mark.parametrize("command", ["sendgate", "sendgate-submitd", "sendgate-milter", "sendgate-sendmail"])
def test_help_is_the_manual(command):
    result = subprocess.run([program(command), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "DIAGNOSTICS", "SEE ALSO"):
        assert f"\n{section}\n" in "\n" + result.stdout, (command, section)
