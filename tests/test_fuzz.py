"""CI's share of the fuzzing campaign (docs/fuzzing.md): each harness of
fuzz/ runs under atheris over its seed corpus (tests/corpus) and then 3,000 runs
of fuzzing from a fixed seed (a count, not a time, so that a loaded machine
runs the same inputs); any property broken or undeclared
exception fails the run (libFuzzer exits non-zero).  fuzz/run is the long
campaign."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest

from conftest import need

ROOT = pathlib.Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
TARGETS = ("addresses", "message", "envelope", "fixups", "options", "smtpwire", "wiredata", "spool")


def test_every_harness_is_listed():
    assert sorted(p.stem for p in FUZZ.glob("*.py") if p.stem != "common") == sorted(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_harness_over_its_corpus(target, tmp_path):
    need(importlib.util.find_spec("atheris") is not None, "atheris is missing (the fuzz extra; scripts/test installs it)")
    seeds = tmp_path / "seeds"
    written = subprocess.run([sys.executable, str(FUZZ / f"{target}.py"), "--write-seeds", str(seeds)],
                             capture_output=True, text=True, check=True)
    assert int(written.stdout.strip()) > 0
    run = subprocess.run([sys.executable, str(FUZZ / f"{target}.py"), "-seed=1", "-runs=3000",
                          "-timeout=10", f"-artifact_prefix={tmp_path}/", str(seeds)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "INITED" in run.stderr
