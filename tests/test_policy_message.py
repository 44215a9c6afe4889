"""Header splitting and editing, byte for byte."""

from __future__ import annotations

import pytest

from sendgate.policy.message import AddHeader, ChangeHeader, Field, apply_edits, delete_fields, split_message


@pytest.mark.parametrize("data,fields,body", [
    pytest.param(b"A: 1\r\nB: 2\r\n\r\nbody\r\n", [("A", "1"), ("B", "2")], b"body\r\n", id="crlf"),
    pytest.param(b"A: 1\nB:2\n\nbody", [("A", "1"), ("B", "2")], b"body", id="lf-no-space"),
    pytest.param(b"To: a,\r\n\tb\r\n\r\n", [("To", "a,\n\tb")], b"", id="folded"),
    pytest.param(b"A: 1\nnot a field\nB: 2\n", [("A", "1")], b"not a field\nB: 2\n", id="non-field-ends-header"),
    pytest.param(b"A: \xff\xfe\n\n", [("A", "\udcff\udcfe")], b"", id="8bit-survives"),
    pytest.param(b"\nbody", [], b"body", id="no-header"),
    pytest.param(b"A: 1\x00\n\n", [("A", "1\x00")], b"", id="nul-kept-as-text"),
])
def test_split_message(data, fields, body):
    assert split_message(data) == ([Field(n, v) for n, v in fields], body)


def test_delete_fields_keeps_every_other_byte():
    data = b"From:a\r\nBcc: x,\r\n y\r\nTo:  b\r\nBcc: z\r\n\r\nBcc: body\r\n"
    assert delete_fields(data, (1, 3)) == b"From:a\r\nTo:  b\r\n\r\nBcc: body\r\n"


def test_apply_edits():
    header = [Field("Sender", "a"), Field("To", "t"), Field("Sender", "b")]
    edits = [ChangeHeader("sender", 2, ""), ChangeHeader("Sender", 1, "me"), AddHeader("Date", "d"),
             AddHeader("Resent-Date", "r", 0), ChangeHeader("Sender", 5, "")]
    assert apply_edits(header, edits) == [Field("Resent-Date", "r"), Field("Sender", "me"), Field("To", "t"),
                                          Field("Date", "d")]
