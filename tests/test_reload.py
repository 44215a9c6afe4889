"""Configuration reloads without losing sessions: SIGHUP for the submit
daemon, a changed file for the milter (libmilter owns SIGHUP)."""

from __future__ import annotations

import contextlib
import time

import pytest

from conftest import delivered, hup_submitd, sendmail, unique_marker
from sendgate.milter.settings import SettingsSource


@contextlib.contextmanager
def edited(stack, extra: str):
    path = stack.dir / "sendgate.yaml"
    original = path.read_text()
    path.write_text(original + extra)
    try:
        yield
    finally:
        path.write_text(original)


def submit(stack, user, request, extra_header=""):
    m = unique_marker(request) + user
    return m, sendmail(stack, user, ["-t", "-i"], f"To: bob@example.net\n{extra_header}Subject: {m}\n\nx\n".encode())


def test_sighup_applies_new_limits_to_new_sessions(stack, request):
    log = stack.dir / "log/submitd.log"
    with edited(stack, "submit_deny_users: [nobody, sgtest2]\n"):
        hup_submitd(stack)
        _, refused = submit(stack, "sgtest2", request)
        _, allowed = submit(stack, "sgtest1", request)
    hup_submitd(stack)
    _, again = submit(stack, "sgtest2", request)
    assert (refused.returncode, refused.stderr.split(b";")[0]) == (
        77, b"sendmail: submit server refused the session: 554 5.7.1 Error: user sgtest2 is not allowed to submit mail")
    assert allowed.returncode == 0
    assert again.returncode == 0
    assert f"reloaded {stack.dir}/sendgate.yaml" in log.read_text()


def test_sighup_with_a_broken_file_keeps_serving(stack, request):
    log = stack.dir / "log/submitd.log"
    with edited(stack, "submit_no_such_key: 1\n"):
        hup_submitd(stack)
        m, result = submit(stack, "sgtest1", request)
    hup_submitd(stack)
    assert result.returncode == 0
    assert (f"error: reload failed, keeping the running configuration: {stack.dir}/sendgate.yaml:"
            in log.read_text())
    assert "submit_no_such_key: unknown key" in log.read_text()


def test_milter_rereads_a_changed_file(stack, request):
    foreign = "From: Carol <carol@example.net>\n"
    with edited(stack, "fixup_sender: false\n"):
        time.sleep(1.1)  # the milter looks at the file at most once a second
        m_off, off = submit(stack, "sgtest1", request, foreign)
        (copy_off,) = delivered(stack, m_off)
    time.sleep(1.1)
    m_on, on = submit(stack, "sgtest1", request, foreign)
    assert off.returncode == 0 and on.returncode == 0
    assert copy_off.all("Sender") == []
    copies_on = [c for c in delivered(stack, m_on, count=2) if c.path != copy_off.path]
    assert [c.one("Sender") for c in copies_on] == ["sendgate test user sgtest1 <sgtest1@example.org>"]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_settings_source_checks_at_most_once_a_second(tmp_path):
    path = tmp_path / "sendgate.yaml"
    path.write_text("a\n")
    loads = []
    clock = Clock()
    source = SettingsSource(str(path), "first", lambda p: loads.append(p) or f"load{len(loads)}", clock)
    path.write_text("changed\n")
    assert source.current() == "first"  # within the second: not looked at
    clock.now += 1.0
    assert source.current() == "load1"
    clock.now += 5
    assert source.current() == "load1" and len(loads) == 1  # unchanged file: not read again


def test_settings_source_keeps_settings_on_a_bad_file(tmp_path):
    path = tmp_path / "sendgate.yaml"
    path.write_text("a\n")
    clock = Clock()

    def broken(_):
        raise ValueError("f.yaml:1: x: unknown key")

    source = SettingsSource(str(path), "running", broken, clock)
    path.write_text("bad\n")
    clock.now += 2
    assert source.current() == "running"
