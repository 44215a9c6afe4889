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

pytestmark = pytest.mark.postfix


def test_bench_quick_runs_every_part(tmp_path):
    need(os.geteuid() == 0, "the bench starts a private Postfix stack as root")
    for tool in ("hyperfine", "msmtp", "/usr/sbin/smtp-source", "/usr/bin/time"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (scripts/debian-packages)")
    result = subprocess.run([sys.executable, str(CHECKOUT / "bench" / "bench.py"), "--quick", "--no-plot",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd="/")
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"latency", "throughput", "scale", "idle", "big"} <= results.keys()
    assert [t["target"] for t in results["targets"]] == [
        "sendmail-command latency", "socket throughput", "milter throughput"]
    assert "### 4. Targets" in (tmp_path / "report.md").read_text()
