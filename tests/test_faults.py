"""The fault campaign, bounded (docs/faults.md): submissions while the
submit daemon, the milter and Postfix's smtpd are killed with SIGKILL at
seeded random moments, then sessions in a row.  Nothing is lost, no caller
is told both "sent" and "saved", the spool drains, and sessions leave no
open file behind."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import tempfile

import pytest

from conftest import need_stack_prerequisites

pytestmark = pytest.mark.mta

CAMPAIGN = pathlib.Path(__file__).resolve().parent.parent / "faults/campaign.py"


def load_campaign():
    spec = importlib.util.spec_from_file_location("campaign", CAMPAIGN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def campaign():
    need_stack_prerequisites()
    module = load_campaign()
    directory = tempfile.mkdtemp(prefix="sendgate-test-faults-", dir="/tmp")
    pathlib.Path(directory).chmod(0o755)
    run = module.Campaign(directory, seed=11, pause=0.4)
    run.up()
    try:
        yield run
    finally:
        run.down()
        shutil.rmtree(directory, ignore_errors=True)


def test_nothing_is_lost_while_the_daemons_are_killed(campaign):
    results = campaign.run(messages=40, workers=4, seed=11)
    campaign.drain()
    tally = campaign.judge(results)
    detail = [(r["marker"], r["status"], r["copies"], r["stderr"]) for r in results
              if r["verdict"] not in ("delivered", "saved", "duplicated")]
    assert sum(campaign.kills.values()) > 0, "the killer never fired"
    assert (tally["lost"], tally["exit0-saved"], tally["waiting"]) == (0, 0, 0), detail
    assert tally["delivered"] + tally["saved"] + tally["duplicated"] == 40
    # Every failure the caller saw was temporary (75) and its message saved.
    assert {r["status"] for r in results if r["status"]} <= {75}
    assert all(r["saved"] for r in results if r["status"])


def test_sessions_in_a_row_leave_no_open_file(campaign):
    usage = campaign.sessions(500)
    assert usage["after"]["open_files"] <= usage["before"]["open_files"], usage
    assert usage["after"]["rss_kb"] - usage["before"]["rss_kb"] < 8 * 1024, usage
