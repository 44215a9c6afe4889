"""Manual pages: built from each command's --help, committed in man/,
installed by the package."""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys

import pytest

from conftest import program
from sendgate import config
from sendgate.admin import manpages

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


@pytest.mark.parametrize("name,section,module,program", manpages.PAGES, ids=[page[0] for page in manpages.PAGES])
def test_configuration_section_lists_the_programs_keys(name, section, module, program):
    """The key list is the schema's; what the docstring adds may name only
    keys the schema says the program reads."""
    page = manpages.pages()[f"{name}.{section}"]
    configuration = page.split(".SH CONFIGURATION\n", 1)[1].split("\n.SH ", 1)[0]
    listed = [line.split("\\fR", 1)[0].removeprefix("\\fB") for line in configuration.splitlines()
              if line.startswith("\\fB")]
    assert listed == [key.name for key in config.keys_of(program)]
    prose = dict(manpages.sections(importlib.import_module(module).__doc__)).get("CONFIGURATION", [])
    named = {word.strip(".,;:()`") for line in prose for word in line.split()} & set(config.KEYS)
    assert named <= set(listed), f"{module}: CONFIGURATION names keys its program does not read"
