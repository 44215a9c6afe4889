"""Prometheus metrics, scraped from both daemons during an end-to-end run."""

from __future__ import annotations

import re
import socket
import urllib.request

import pytest

from conftest import delivered, need_stack_prerequisites, sendmail, start_stack, stop_stack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def measured_stack():
    need_stack_prerequisites()
    ports = free_port(), free_port()
    stack = start_stack("sendgate-metrics-", f"submit_metrics_listen={ports[0]}",
                        f"milter_metrics_listen=127.0.0.1:{ports[1]}")
    yield stack, ports
    stop_stack(stack.dir)


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^([^#\s]+) (\S+)$", text, re.M)}


def test_metrics_count_what_happened(measured_stack):
    stack, (submit_port, milter_port) = measured_stack
    ok = sendmail(stack, "sgtest1", ["-t", "-i"], b"From: Carol <carol@example.net>\nTo: bob@example.net\nSubject: metrics-1\n\nx\n")
    refused = sendmail(stack, "sgtest1", ["-t", "-i", "-f", "root@example.org"], b"To: bob@example.net\n\nx\n")
    assert (ok.returncode, refused.returncode) == (0, 77)
    delivered(stack, "metrics-1")
    submit, milter = scrape(submit_port), scrape(milter_port)
    assert submit['sendgate_messages_total{daemon="submit",mode="local",outcome="accepted"}'] == 1
    assert submit['sendgate_messages_total{daemon="submit",mode="local",outcome="rejected"}'] == 1
    assert submit["sendgate_upstream_seconds_count"] == 1
    assert submit["sendgate_sessions_open"] == 0
    assert milter['sendgate_messages_total{daemon="milter",mode="submission",outcome="accepted"}'] == 1
    for field in ("Date", "Message-ID", "Sender"):
        assert milter[f'sendgate_fixups_total{{action="add",field="{field}"}}'] == 1
    assert milter["sendgate_milter_seconds_count"] == 1


def test_metrics_listen_on_loopback_only(measured_stack):
    stack, (submit_port, _) = measured_stack
    listening = open("/proc/net/tcp").read().splitlines()[1:]
    local = {line.split()[1] for line in listening if line.split()[3] == "0A"}
    assert f"0100007F:{submit_port:04X}" in local
    assert f"00000000:{submit_port:04X}" not in local
