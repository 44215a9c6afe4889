"""No policy, no mail: when the milter is away or fails, the MTA tempfails.

The stack tests run against a short-lived stack of their own (the session
stack keeps its milter): the milter is killed, and Postfix, configured with
milter_default_action = tempfail as the shipped snippet is, must refuse
mail on every way in with a 4xx.  The unit tests drive the milter class
through pymilter's own test context: a failing callback must become
TEMPFAIL with a log line, never an accept without policy.
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import smtplib
import time

import Milter
import pytest

from conftest import CHECKOUT, need_stack_prerequisites, sendmail, start_stack, stop_stack, submit_smtp
from miltermta import ContextMTA
from sendgate.milter import adapter
from sendgate.milter.adapter import PolicyMilter
from sendgate.milter.ratestore import MemoryStore, RedisStore
from sendgate.milter.settings import MilterSettings, SettingsSource
from sendgate.policy.fixups import FixupSettings
from sendgate.policy.limits import RateLimits
from sendgate.policy.sender import SenderRules

TEMPFAIL = [("REPLYCODE", "451 4.3.0 Error: the mail policy could not be applied, try again later")]
MILTER_AWAY = "451 4.7.1 Service unavailable - try again later"


def test_shipped_postfix_snippet_fails_closed():
    settings = [line.split("=", 1)[1].strip() for line in (CHECKOUT / "config/postfix/main.cf").read_text().splitlines()
                if line.startswith("milter_default_action")]
    assert settings == ["tempfail"]


# --- a failing callback ------------------------------------------------------

COMPLETE = [("Date", "Mon, 30 Nov 2026 10:00:00 +0000"), ("Message-ID", "<1@example.org>"),
            ("From", "sgtest1@example.org"), ("Subject", "complete, so no edits")]


def run_message(monkeypatch, store, fields=COMPLETE) -> list[tuple]:
    """One message from sgtest1 on pymilter's test context; the packets the
    MTA would receive."""
    settings = MilterSettings(
        fixups=FixupSettings(hostname="mail.example.org"), rules=SenderRules(domain="example.org"),
        rates=RateLimits(window=3600, messages=10, recipients=10), store=store, local_daemon_name="sendgate-local")
    monkeypatch.setattr(PolicyMilter, "source", SettingsSource("/nonexistent/sendgate.yaml", settings, load=None),
                        raising=False)
    monkeypatch.setattr(Milter, "factory", PolicyMilter)
    return ContextMTA().message("sgtest1@example.org", ["bob@example.net"], fields,
                                {"{auth_authen}": "sgtest1", "{auth_type}": "PLAIN"}, queue_id="4ABCDEF")


def test_a_working_message_passes(monkeypatch):
    assert run_message(monkeypatch, MemoryStore()) == [("CONTINUE",)]


def test_exception_in_a_no_reply_callback_tempfails_at_end_of_message(monkeypatch, caplog):
    def broken(name, value):
        raise ValueError("header store broken")
    monkeypatch.setattr(adapter, "Field", broken)
    with caplog.at_level(logging.INFO, logger="sendgate/milter"):
        assert run_message(monkeypatch, MemoryStore()) == TEMPFAIL
    assert caplog.messages == [
        "error in header callback: ValueError: header store broken (the message will be tempfailed)",
        "4ABCDEF: error in end-of-message: RuntimeError: earlier callback failed: "
        "header: ValueError: header store broken: tempfail"]


def test_exception_while_applying_the_plan_tempfails_and_logs_no_accept(monkeypatch, caplog):
    def disabled(self, *args):
        raise Milter.DisabledAction("ADDHDRS")
    monkeypatch.setattr(PolicyMilter, "addheader", disabled)
    with caplog.at_level(logging.INFO, logger="sendgate/milter"):
        assert run_message(monkeypatch, MemoryStore(), COMPLETE[1:]) == TEMPFAIL   # no Date: one is added
    assert caplog.messages == ["4ABCDEF: error in end-of-message: DisabledAction: ADDHDRS: tempfail"]


def test_rate_store_that_does_not_answer_tempfails(monkeypatch, tmp_path, caplog):
    store = RedisStore(f"unix://{tmp_path}/no-redis.sock", timeout=1)
    with caplog.at_level(logging.INFO, logger="sendgate/milter"):
        assert run_message(monkeypatch, store) == TEMPFAIL
    (line,) = caplog.messages
    assert line.startswith("4ABCDEF: error in end-of-message: StoreError: redis: ")
    assert "No such file or directory" in line and line.endswith(": tempfail")


# --- the milter process dies --------------------------------------------------

@pytest.fixture(scope="module")
def doomed():
    need_stack_prerequisites()
    started = start_stack("sendgate-doomed-")
    yield started
    stop_stack(started.dir)


def test_killed_milter_makes_postfix_tempfail_everywhere(doomed):
    host, port = doomed.inbound
    with smtplib.SMTP(host, port, timeout=10) as open_session:
        open_session.ehlo("client.example")
        assert open_session.docmd("MAIL FROM:<carol@example.net>")[0] == 250
        assert open_session.docmd("RCPT TO:<bob@example.org>")[0] == 250
        assert submit_smtp(doomed, "sgtest1", "sgtest1@example.org", ["bob@example.net"],
                           "Subject: before\n\nx\n") == "250 queued"

        pid = int((doomed.dir / "run/milter.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pathlib.Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

        # The session that was open when the milter died, mid-transaction.
        code, text = open_session.data(b"Subject: during\r\n\r\nx\r\n")
        assert f"{code} {text.decode()}" == MILTER_AWAY

    # Postfix asks the milter at connect; without it, not even TLS starts.
    assert submit_smtp(doomed, "sgtest1", "sgtest1@example.org", ["bob@example.net"],
                       "Subject: after\n\nx\n") == "454 4.3.0 Try again later"
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo("client.example")
        assert client.docmd("MAIL FROM:<carol@example.net>") == (451, b"4.7.1 Service unavailable - try again later")
    result = sendmail(doomed, "sgtest1", ["-i", "bob@example.net"], b"Subject: local\n\nx\n")
    assert result.returncode == 75
    assert result.stderr == (b"sendmail: sender refused: " + MILTER_AWAY.encode()
                             + b"; message saved in /home/sgtest1/dead.letter\n")
    log = doomed.postfix_log.read_text()
    assert "milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: 4.7.1 Service unavailable" in log
