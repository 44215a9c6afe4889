"""Manual pages built from the programs' own help.

Each command's module docstring is its manual (NAME, SYNOPSIS, DESCRIPTION,
SECURITY, CONFIGURATION, DIAGNOSTICS, SEE ALSO, each an unindented heading
over an indented body); `--help` prints it and this module turns it into
roff.  The CONFIGURATION section of each page starts with the keys the
schema (sendgate/config.py) says that program reads, followed by what the
docstring's own CONFIGURATION section adds; sendgate.yaml(5) is the whole
schema.  The pages live in man/ and are installed by the package;
`sendgate man-pages DIR` writes them and tests/test_manpages.py fails when
the committed ones are stale.
"""

from __future__ import annotations

import argparse
import importlib
import os

from sendgate import config

VERSION = "sendgate 0.1.0"
# page, section, the module whose docstring is the manual, its program in config.PROGRAMS
PAGES = (
    ("sendgate", 8, "sendgate.admin.cli", "admin"),
    ("sendgate-submitd", 8, "sendgate.submit_socket.main", "submitd"),
    ("sendgate-milter", 8, "sendgate.milter.main", "milter"),
    ("sendgate-sendmail", 1, "sendgate.sendmail_shim.main", "sendmail"),
)
# The section the key list goes in, and the sections it comes before when
# the docstring has none.
CONFIGURATION = "CONFIGURATION"
AFTER_CONFIGURATION = ("DIAGNOSTICS", "DEAD LETTERS", "SEE ALSO")


def escape(line: str) -> str:
    text = line.replace("\\", "\\e")
    return "\\&" + text if text.startswith((".", "'")) else text


def key_entry(key: config.Key) -> list[str]:
    """One key as a roff tagged paragraph: name, type and default; meaning."""
    return [".TP", f"\\fB{key.name}\\fR ({escape(key.type_doc)}; default: {escape(key.shown_default)})",
            escape(key.doc)]


def key_list(program: str) -> list[str]:
    return ["Keys of sendgate.yaml(5) that this program reads:",
            *(line for key in config.keys_of(program) for line in key_entry(key))]


def sections(doc: str) -> list[tuple[str, list[str]]]:
    """The docstring's sections: (heading, body lines with the indent removed)."""
    out: list[tuple[str, list[str]]] = []
    for line in doc.strip("\n").splitlines():
        if line and not line[0].isspace():
            out.append((line.strip(), []))
        elif out and (out[-1][1] or line.strip()):
            out[-1][1].append(line[4:] if line.startswith("    ") else line.strip())
    return out


def from_docstring(name: str, section: int, doc: str, program: str) -> str:
    """The page: the docstring's sections, the CONFIGURATION section headed
    by program's keys (added before DIAGNOSTICS when the docstring has none)."""
    found = sections(doc)
    if CONFIGURATION not in (heading for heading, _ in found):
        at = next((i for i, (heading, _) in enumerate(found) if heading in AFTER_CONFIGURATION), len(found))
        found.insert(at, (CONFIGURATION, []))
    out = [f'.TH {name.upper()} {section} "" "{VERSION}" "sendgate manual"']
    for heading, body in found:
        out.append(f".SH {heading}")
        if heading == CONFIGURATION:
            out += key_list(program)
            if body:
                out.append(".PP")
        while body and not body[-1].strip():
            body.pop()
        if body:
            out.append(".nf")
            out.extend(escape(line) for line in body)
            out.append(".fi")
    return "\n".join(out) + "\n"


def configuration_page() -> str:
    out = ['.TH SENDGATE.YAML 5 "" "%s" "sendgate manual"' % VERSION,
           ".SH NAME", "sendgate.yaml \\- sendgate configuration file",
           ".SH SYNOPSIS", ".B /etc/sendgate/sendgate.yaml",
           ".SH DESCRIPTION",
           "One YAML mapping of key: value, read by " + ", ".join(config.PROGRAMS.values()) + ";",
           "each key below names the programs that act on it. An unknown key or a bad value is fatal: the message",
           "names the file, the line and the key, and the program exits 78.",
           ".SH KEYS"]
    for key in config.SCHEMA:
        readers = ", ".join(config.PROGRAMS[p] for p in key.programs)
        out += key_entry(key)[:-1] + [f"{escape(key.doc)} Read by {readers}."]
    out += [".SH SEE ALSO", "sendgate(8), sendgate-submitd(8), sendgate-milter(8), sendgate-sendmail(1)"]
    return "\n".join(out) + "\n"


def _options(parser) -> list[str]:
    """A parser's arguments as roff tagged paragraphs (--help left out)."""
    out = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or "-h" in action.option_strings or action.help is None:
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else " " + (action.metavar or action.dest.upper())
            name = ", ".join(f"\\fB{escape(o)}\\fR{escape(metavar)}" for o in action.option_strings)
        else:
            name = f"\\fI{escape(action.metavar or action.dest)}\\fR"
        out += [".TP", name, escape(action.help)]
    return out


def _body(text: str) -> list[str]:
    return [".nf", *(escape(line) for line in text.splitlines()), ".fi"]


def subcommand_page(name: str, parser) -> str:
    """sendgate-NAME(8): the sub-command's usage, its --help description and
    every option; for stack, each action in a section of its own."""
    cli = _cli()
    out = [f'.TH SENDGATE-{name.upper()} 8 "" "{VERSION}" "sendgate manual"',
           ".SH NAME", f"sendgate-{name} \\- {escape(_summary(name))}",
           ".SH SYNOPSIS"]
    actions = cli.subcommands(parser) if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions) else {}
    parts = [(f"sendgate {name} {action}", sub) for action, sub in actions.items()] or [(f"sendgate {name}", parser)]
    for _, sub in parts:
        out += _body(sub.format_usage().removeprefix("usage: ").rstrip())
    out.append(".SH DESCRIPTION")
    if actions:
        out += _body(f"The actions of sendgate {name}, one section each.")
    for title, sub in parts:
        if actions:
            out.append(f".SH {title.upper().removeprefix('SENDGATE ')}")
        out += _body(sub.description)
        options = _options(sub)
        if options:
            out += [".PP", "Arguments:", *options]
    out += [".SH DIAGNOSTICS", "See sendgate(8).",
            ".SH SEE ALSO", "sendgate(8), sendgate.yaml(5)"]
    return "\n".join(out) + "\n"


def _cli():
    """sendgate.admin.cli, whose parser the sub-command pages are built from;
    read like the other commands' modules (by name), as cli runs this module
    for `sendgate man-pages`."""
    return importlib.import_module("sendgate.admin.cli")


def _summary(name: str) -> str:
    (group,) = [a for a in _cli().build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return next(a.help for a in group._choices_actions if a.dest == name)


def pages() -> dict[str, str]:
    """file name -> roff text, for every page."""
    out = {}
    for name, parser in _cli().subcommands().items():
        out[f"sendgate-{name}.8"] = subcommand_page(name, parser)
    for name, section, module, program in PAGES:
        out[f"{name}.{section}"] = from_docstring(name, section, importlib.import_module(module).__doc__, program)
    out["sendgate.yaml.5"] = configuration_page()
    return out


def write(directory: str) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    written = []
    for filename, text in pages().items():
        path = os.path.join(directory, filename)
        with open(path, "w", encoding="utf-8") as fp:
            fp.write(text)
        written.append(path)
    return written
