"""The RCPTHDR corpus: every tests/corpus/NAME.eml is submitted with
`sendgate-sendmail -t -i` (MAIL FROM:<..> RCPTHDR) through the real stack,
and what happened is compared with tests/corpus/NAME.expected:

    status: the sendmail command's exit status
    stderr: its message, when it failed
    rcpt: one line per delivered copy (X-Original-To), sorted
    header: the delivered header fields in order, as bytes, Received: and
            the per-copy X-Original-To:/Delivered-To: left out; a Date: or
            Message-ID: that the input did not have shows as (added)
    body: intact when the delivered body is the submitted one (line ends
            aside), else what was delivered

The .expected files are golden files in the manner of Postfix's .ref files:
written by running with SENDGATE_CORPUS_UPDATE=1 and then read line by line
before they are committed.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from conftest import delivered, sendmail

from sendgate.policy.message import encode, split_message


CORPUS = pathlib.Path(__file__).parent / "corpus"
CASES = sorted(p.stem for p in CORPUS.glob("*.eml"))
PER_COPY = {"x-original-to", "delivered-to", "received"}


def body_of(message: bytes) -> bytes:
    """The body as the MTA should deliver it: LF line ends, after the header."""
    message = message.replace(b"\r\n", b"\n")
    if message.startswith(b"From "):
        message = message.split(b"\n", 1)[1]
    return split_message(message)[1]


def outcome(stack, name: str, copies_expected: int | None) -> bytes:
    source = (CORPUS / f"{name}.eml").read_bytes()
    marker = f"corpus-{name}-{os.getpid()}"
    # The marker goes last, into the body, where it changes nothing the
    # policy looks at (a header line at the top would break resent blocks).
    result = sendmail(stack, "sgtest1", ["-t", "-i"], source + f"\n{marker}\n".encode())
    lines = [b"status: %d" % result.returncode]
    if result.returncode:
        lines.append(b"stderr: " + result.stderr.strip().split(b"; message saved")[0])
        return b"\n".join(lines) + b"\n"
    if copies_expected is None:  # updating: wait until no further copy turns up
        copies = delivered(stack, marker)
        while len(again := delivered(stack, marker, count=len(copies) + 1, timeout=2)) > len(copies):
            copies = again
    else:
        copies = delivered(stack, marker, count=copies_expected)
    lines += sorted(b"rcpt: " + c.one("X-Original-To").encode() for c in copies)
    views = []
    for copy in copies:
        header, body = split_message(copy.raw)
        view = []
        for field in header:
            if field.name.lower() in PER_COPY:
                continue
            value = encode(field.value)
            if field.name.lower().removeprefix("resent-") in ("date", "message-id") and value not in source:
                value = b"(added)"
            view.append(encode(field.name) + b": " + value)
        views.append(view)
    assert all(v == views[0] for v in views), "copies differ beyond their envelope recipient"
    lines += [b"header: " + line for line in views[0]]
    # What was sent is the source, a line break, the marker line: strip them.
    body = split_message(copies[0].raw)[1].removesuffix(f"{marker}\n".encode())
    intact = body in (body_of(source), body_of(source) + b"\n")
    lines.append(b"body: intact" if intact else b"body: changed: " + body[:200])
    return b"\n".join(lines) + b"\n"


def expected_file(stack, name: str) -> pathlib.Path:
    """Postfix's result is the reference; an MTA whose result differs has its
    own file under corpus/MTA/, each difference read and explained in
    corpus/MTA/README.md."""
    own = CORPUS / stack.mta / f"{name}.expected"
    return own if stack.mta != "postfix" and own.exists() else CORPUS / f"{name}.expected"


@pytest.mark.parametrize("name", CASES)
def test_corpus(stack, name):
    expected = expected_file(stack, name)
    updating = os.environ.get("SENDGATE_CORPUS_UPDATE") == "1"
    count = None if updating else expected.read_bytes().count(b"\nrcpt: ")
    got = outcome(stack, name, count)
    if updating:
        if stack.mta == "postfix":
            expected.write_bytes(got)
        elif got != (CORPUS / f"{name}.expected").read_bytes():
            (CORPUS / stack.mta).mkdir(exist_ok=True)
            (CORPUS / stack.mta / f"{name}.expected").write_bytes(got)
        return
    assert got == expected.read_bytes()


def test_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert sorted(p.stem for p in CORPUS.glob("*.expected")) == CASES
