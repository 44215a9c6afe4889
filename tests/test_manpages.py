"""Manual pages: built from each command's --help, committed in man/,
installed by the package."""

from __future__ import annotations

import argparse
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


def _arguments(parser):
    return [a for a in parser._actions if "-h" not in a.option_strings and not isinstance(a, argparse._SubParsersAction)]


def _parsers():
    from sendgate.admin import cli
    for name, parser in cli.subcommands().items():
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        yield name, name, parser
        for action in actions:
            for sub, subparser in action.choices.items():
                yield name, f"{name} {sub}", subparser


@pytest.mark.parametrize("page,command,parser", list(_parsers()), ids=[c for _, c, _ in _parsers()])
def test_every_subcommand_has_a_page_with_every_option(page, command, parser):
    """Each sub-command of the sendgate parser (and each stack action) has
    its page sendgate-NAME(8), a description, and every argument explained,
    in --help and on the page."""
    text = manpages.pages()[f"sendgate-{page}.8"]
    assert parser.description, command
    if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):  # stack: its actions' text
        assert " ".join(parser.description.split()) in " ".join(text.split()), command
    for action in _arguments(parser):
        assert action.help, f"{command}: {action.option_strings or action.dest} has no help"
        shown = action.option_strings or [action.metavar or action.dest]
        assert all(f"\\fB{name}\\fR" in text or f"\\fI{name}\\fR" in text for name in shown), (command, shown)
        assert " ".join(action.help.split()) in " ".join(text.split()), (command, action.help)
    assert f"sendgate-{page}(8)" in manpages.pages()["sendgate.8"]  # sendgate(8) points at it


@pytest.mark.parametrize("command", sorted(__import__("sendgate.admin.cli", fromlist=["cli"]).subcommands()))
def test_subcommand_help_is_real_help(command):
    result = subprocess.run([program("sendgate"), command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    usage, description = result.stdout.split("\n\n")[:2]
    assert usage.startswith(f"usage: sendgate {command} ")
    assert len(description.split()) >= 4, description
