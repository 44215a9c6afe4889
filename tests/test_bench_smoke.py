"""The benchmarks still run: bench/run --quick end to end (no figures are
asserted; speed is measured by bench/, never by the test suite)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import CHECKOUT, need


def test_bench_quick_runs_every_part(tmp_path):
    need(os.geteuid() == 0, "the bench starts a private Postfix stack as root")
    for tool in ("hyperfine", "msmtp", "/usr/sbin/smtp-source", "/usr/bin/time"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (scripts/debian-packages-test)")
    bench = subprocess.Popen([sys.executable, str(CHECKOUT / "bench" / "bench.py"), "--quick", "--no-plot",
                              "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, cwd="/")
    try:
        output, _ = bench.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        bench.terminate()  # on SIGTERM the bench stops its stack before it exits
        output, _ = bench.communicate(timeout=120)
        pytest.fail(f"bench/bench.py --quick still running after 300 s:\n{output}")
    assert bench.returncode == 0, output
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"latency", "throughput", "scale", "idle", "big"} <= results.keys()
    assert [t["target"] for t in results["targets"]] == [
        "sendmail-command latency", "socket throughput", "milter throughput"]
    assert "### 4. Targets" in (tmp_path / "report.md").read_text()
