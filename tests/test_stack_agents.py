"""The Sendmail stack's helpers: the delivery agent (sendgate/stack/deliver.py)
and the syslog socket's log lines (sendgate/stack/syslog.py)."""

from __future__ import annotations

import pytest

from sendgate.stack.deliver import deliver
from sendgate.stack.syslog import line_for


def test_stack_delivery_agent_writes_the_recipient(tmp_path):
    for sub in ("tmp", "new", "cur"):
        (tmp_path / sub).mkdir()
    path = deliver(str(tmp_path), "bob@example.net", b"Subject: x\n\nhi\n")
    assert path.startswith(str(tmp_path / "new") + "/")
    assert open(path, "rb").read() == b"X-Original-To: bob@example.net\nDelivered-To: bob@example.net\nSubject: x\n\nhi\n"
    assert list((tmp_path / "tmp").iterdir()) == []
    path = deliver(str(tmp_path), "carol@example.net", b"Return-Path: <a@b>\nSubject: y\n\nhi\n")
    assert open(path, "rb").read() == (b"Return-Path: <a@b>\nX-Original-To: carol@example.net\n"
                                       b"Delivered-To: carol@example.net\nSubject: y\n\nhi\n")


@pytest.mark.parametrize("datagram,want", [
    pytest.param(b"<22>Nov 30 12:00:00 sendmail[12]: 6AU: stat=Sent", b"Nov 30 12:00:00 sendmail[12]: 6AU: stat=Sent\n",
                 id="priority-removed"),
    pytest.param(b"<22>x\ny\n\0", b"x y\n", id="one-line"),
    pytest.param(b"no priority", b"no priority\n", id="no-priority"),
])
def test_stack_syslog_line(datagram, want):
    assert line_for(datagram) == want
