"""Every finding of the fuzzing campaign (docs/fuzzing.md), as the input
that found it, reduced, and what must hold for it now."""

from __future__ import annotations

import pytest

from sendgate.policy.envelope import resent_block
from sendgate.policy.fixups import FixupSettings, Stamp, submission_fixups
from sendgate.policy.identity import Principal
from sendgate.policy.message import AddHeader, apply_edits, split_message
from sendgate.sendmail_shim.client import Envelope
from sendgate.spool import format_entry, parse_entry

PRINCIPAL = Principal("alice", "alice@example.org", "Alice Example")
SETTINGS = FixupSettings(hostname="host.example.org", domain="example.org")
STAMP = Stamp("Wed, 2 Dec 2026 20:00:00 +0000", "20261202200000.fuzz")


@pytest.mark.parametrize("message, at", [
    pytest.param(b"From: bob@example.net\nResent-Bcc: hidden@example.net\nTo: carol@example.net\n\nbody\n", 1,
                 id="F1-only-resent-field-is-resent-bcc"),
    pytest.param(b"Resent-Bcc: hidden@example.net\n\nbody\n", 0, id="F1-resent-bcc-alone"),
])
def test_fixups_when_the_only_resent_field_is_removed(message, at):
    """F1: the fix-ups removed the Resent-Bcc, then looked for the resent
    block in a header that had none left: IndexError in resent_block."""
    header, _ = split_message(message)
    edits = submission_fixups(header, PRINCIPAL, SETTINGS, STAMP)
    fixed = apply_edits(header, edits)
    assert [f.name for f in fixed if f.name.lower() == "resent-bcc"] == []
    assert AddHeader("Resent-From", "Alice Example <alice@example.org>", at) in edits
    assert submission_fixups(fixed, PRINCIPAL, SETTINGS, STAMP) == []


def test_resent_block_of_a_header_without_resent_fields():
    assert resent_block(split_message(b"From: a@example.org\n\n")[0]) == []


@pytest.mark.parametrize("message", [
    pytest.param(b"Subject: x\n\nbody\n\n", id="F2-one-trailing-empty-line"),
    pytest.param(b"Subject: x\n\nbody\n\n\n\n", id="F2-three-trailing-empty-lines"),
    pytest.param(b"Subject: x\n\n", id="F2-empty-body"),
    pytest.param(b"Subject: x\n\nno final line end", id="no-final-lf-gets-one"),
])
def test_spool_entry_keeps_trailing_empty_lines(message):
    """F2: format_entry stripped every trailing LF of the message, so a body
    ending in empty lines came back from the spool or ~/dead.letter shorter."""
    envelope = Envelope("alice@example.org", ["bob@example.org"], False, [], [])
    parsed = parse_entry(format_entry(message, envelope, "Wed Dec  2 20:00:00 2026"))
    assert parsed is not None
    assert parsed[1] == (message if message.endswith(b"\n") else message + b"\n")
