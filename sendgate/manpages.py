"""Manual pages built from the programs' own help.

Each command's module docstring is its manual (NAME, SYNOPSIS, DESCRIPTION,
SECURITY, CONFIGURATION, DIAGNOSTICS, SEE ALSO, each an unindented heading
over an indented body); `--help` prints it and this module turns it into
roff.  sendgate.yaml(5) is built from the configuration schema.  The pages
live in man/ and are installed by the package; `sendgate man-pages DIR`
writes them and a test fails when the committed ones are stale.
"""

from __future__ import annotations

import importlib
import os

from sendgate import config

VERSION = "sendgate 0.1.0"
PAGES = (
    ("sendgate", 8, "sendgate.cli"),
    ("sendgate-submitd", 8, "sendgate.submit_socket.main"),
    ("sendgate-milter", 8, "sendgate.milter.main"),
    ("sendgate-sendmail", 1, "sendgate.sendmail_shim.main"),
)


def escape(line: str) -> str:
    text = line.replace("\\", "\\e")
    return "\\&" + text if text.startswith((".", "'")) else text


def from_docstring(name: str, section: int, doc: str) -> str:
    out = [f'.TH {name.upper()} {section} "" "{VERSION}" "sendgate manual"']
    body: list[str] = []

    def flush() -> None:
        while body and not body[-1].strip():
            body.pop()
        if body:
            out.append(".nf")
            out.extend(escape(line) for line in body)
            out.append(".fi")
        body.clear()

    for line in doc.strip("\n").splitlines():
        if line and not line[0].isspace():
            flush()
            out.append(f".SH {line.strip()}")
        elif body or line.strip():
            body.append(line[4:] if line.startswith("    ") else line.strip())
    flush()
    return "\n".join(out) + "\n"


def configuration_page() -> str:
    out = ['.TH SENDGATE.YAML 5 "" "%s" "sendgate manual"' % VERSION,
           ".SH NAME", "sendgate.yaml \\- sendgate configuration file",
           ".SH SYNOPSIS", ".B /etc/sendgate/sendgate.yaml",
           ".SH DESCRIPTION",
           "One YAML mapping of key: value, read by sendgate-submitd, sendgate-milter, the sendgate command and",
           "(for submit_socket only) sendgate-sendmail. An unknown key or a bad value is fatal: the message names",
           "the file, the line and the key, and the program exits 78.",
           ".SH KEYS"]
    for key in config.SCHEMA:
        default = format(key.default, "04o") if key.name.endswith("_mode") else key.default
        shown = "(empty)" if default in ("", (), {}) else str(default)
        out += [".TP", f"\\fB{key.name}\\fR ({escape(key.type_doc)}; default: {escape(shown)})", escape(key.doc)]
    out += [".SH SEE ALSO", "sendgate(8), sendgate-submitd(8), sendgate-milter(8), sendgate-sendmail(1)"]
    return "\n".join(out) + "\n"


def pages() -> dict[str, str]:
    """file name -> roff text, for every page."""
    out = {}
    for name, section, module in PAGES:
        out[f"{name}.{section}"] = from_docstring(name, section, importlib.import_module(module).__doc__)
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
