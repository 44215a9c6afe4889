"""Kept MTA sessions (submit_upstream_cache_*) on a real stack: a session
kept after one user's client went speaks for the next user only after
XCLIENT LOGIN= of that user, a kept session the MTA timed out is not used,
and the counts show what was reused.

The stack keeps one session (cache size 1) for a minute, so that which
session the next client gets is known; on Postfix the sendgate service's
smtpd_timeout is 2 s, so that the MTA itself ends a kept session.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from conftest import assert_submitted_by, delivered, hup_submitd, sendmail, start_stack, stop_stack, unique_marker
from test_metrics import free_port, scrape

HOW = 'sendgate_upstream_sessions_total{{how="{}"}}'


@pytest.fixture(scope="module", params=["postfix", "sendmail"])
def cached_stack(request):
    port = free_port()
    stack = start_stack("sendgate-cache-", f"submit_metrics_listen={port}", "submit_upstream_cache_size=1",
                        "submit_upstream_cache_time_limit=60", mta=request.param)
    if stack.mta == "postfix":
        etc = str(stack.dir / "postfix/etc")
        for argv in (["postconf", "-c", etc, "-P", "sendgate/unix/smtpd_timeout=2s"],
                     ["postfix", "-c", etc, "reload"]):
            subprocess.run(argv, check=True, capture_output=True, timeout=60)
        hup_submitd(stack)  # sessions kept from before the reload run with the old timeout
    yield stack, port
    stop_stack(stack.dir)


def counts(port: int) -> dict[str, float]:
    got = scrape(port)
    return {how: got.get(HOW.format(how), 0.0) for how in ("new", "kept", "switched")}


def send(stack, user: str, subject: str) -> None:
    result = sendmail(stack, user, ["-t", "-i"], f"To: bob@example.net\nSubject: {subject}\n\nx\n".encode())
    assert (result.returncode, result.stderr) == (0, b"")


def test_each_login_is_its_own_on_a_kept_session(cached_stack, request):
    """sgtest1, sgtest2, sgtest1, sgtest2 in a row on one kept MTA session:
    each message is judged as its own user's, by the MTA (Postfix logs the
    XCLIENT login) and by the milter."""
    stack, port = cached_stack
    marker = unique_marker(request)
    users = ["sgtest1", "sgtest2", "sgtest1", "sgtest2"]
    send(stack, users[0], f"{marker}-0")  # whatever was kept before, the chain starts here
    before = counts(port)
    for i, user in enumerate(users[1:], 1):
        send(stack, user, f"{marker}-{i}")
    after = counts(port)
    for i, user in enumerate(users):
        [item] = delivered(stack, f"{marker}-{i}")
        assert_submitted_by(stack, item, user)
        assert item.message["Return-Path"] == f"<{user}@example.org>"
    want = {"new": 0, "kept": 0, "switched": 3} if stack.mta == "postfix" else {"new": 0, "kept": 3, "switched": 0}
    assert {k: after[k] - before[k] for k in after} == want


def test_same_login_takes_the_kept_session(cached_stack, request):
    stack, port = cached_stack
    marker = unique_marker(request)
    send(stack, "sgtest3", f"{marker}-0")
    before = counts(port)
    send(stack, "sgtest3", f"{marker}-1")
    after = counts(port)
    assert {k: after[k] - before[k] for k in after} == {"new": 0, "kept": 1, "switched": 0}
    for i in range(2):
        [item] = delivered(stack, f"{marker}-{i}")
        assert_submitted_by(stack, item, "sgtest3")


@pytest.mark.parametrize("cached_stack", ["postfix"], indirect=True)
def test_a_session_the_mta_timed_out_is_not_used(cached_stack, request):
    """Postfix ends the kept session after smtpd_timeout (421, then closes);
    the next client gets a new one and its message goes through."""
    stack, port = cached_stack
    marker = unique_marker(request)
    send(stack, "sgtest1", f"{marker}-0")
    time.sleep(3)
    before = counts(port)
    send(stack, "sgtest1", f"{marker}-1")
    after = counts(port)
    assert {k: after[k] - before[k] for k in after} == {"new": 1, "kept": 0, "switched": 0}
    [item] = delivered(stack, f"{marker}-1")
    assert_submitted_by(stack, item, "sgtest1")
