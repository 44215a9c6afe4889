"""sendmail -F builds its From: without sendgate.policy
(sendgate/sendmail_shim/fullname.py): the same text format_mailbox gives,
the same header the policy's split_message finds."""

from __future__ import annotations

import pytest

from sendgate.policy.fixups import format_mailbox
from sendgate.policy.message import split_message
from sendgate.sendmail_shim.fullname import header_names, mailbox

NAMES = [
    pytest.param("Cron Daemon", id="atoms"),
    pytest.param("root (Cron Daemon)", id="parentheses-quoted"),
    pytest.param("Doe, John", id="comma-quoted"),
    pytest.param('say "hi" \\ there', id="quote-and-backslash-escaped"),
    pytest.param("O'Brien-Smith", id="atext-specials"),
    pytest.param("Jörg Müller", id="non-ascii-encoded-word"),
    pytest.param("日本語", id="cjk"),
    pytest.param("a.b", id="dot-quoted"),
    pytest.param("", id="empty-address-only"),
    pytest.param("bad\udcffbyte", id="surrogate-escaped-byte"),
]


@pytest.mark.parametrize("name", NAMES)
def test_mailbox_is_format_mailbox(name):
    assert mailbox(name, "u@example.org") == format_mailbox(name, "u@example.org")


@pytest.mark.parametrize("message", [
    pytest.param(b"Subject: s\n\nbody\n", id="plain"),
    pytest.param(b"FROM: a@b\nSubject: s\n\nbody\n", id="from-any-case"),
    pytest.param(b"Subject: s\n folded\nFrom: a@b\n\n", id="folded"),
    pytest.param(b"just a body\n", id="no-header"),
    pytest.param(b"\nbody\n", id="empty-header"),
    pytest.param(b"Subject: s\r\nFrom : x\r\n\r\n", id="space-before-colon-ends-header"),
    pytest.param(b"", id="empty"),
    pytest.param(b" leading continuation\nFrom: a\n\n", id="leading-white-space"),
])
def test_header_scan_is_split_message(message):
    fields, body = split_message(message)
    names, has_header = header_names(message)
    assert names == [f.name.lower().encode() for f in fields]
    assert has_header == (bool(fields) or len(body) != len(message))
