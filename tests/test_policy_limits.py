"""The rate-limit decision and the in-process counter store."""

from __future__ import annotations

import threading

import pytest

from sendgate.milter.ratestore import MemoryStore
from sendgate.policy.limits import RateLimits, RateVerdict, Usage, charge, check_rate, rate_verdict, window_start

LIMITS = RateLimits(window=3600, messages=3, recipients=5)


@pytest.mark.parametrize("limits,usage,want", [
    pytest.param(LIMITS, Usage(3, 5), None, id="at-both-limits"),
    pytest.param(LIMITS, Usage(4, 4),
                 "451 4.7.1 Error: too many messages from user alice: at most 3 per 3600 seconds, try again later",
                 id="one-message-too-many"),
    pytest.param(LIMITS, Usage(2, 6),
                 "451 4.7.1 Error: too many recipients from user alice: at most 5 per 3600 seconds, try again later",
                 id="one-recipient-too-many"),
    pytest.param(LIMITS, Usage(9, 9),
                 "451 4.7.1 Error: too many messages from user alice: at most 3 per 3600 seconds, try again later",
                 id="both-over-names-messages"),
    pytest.param(RateLimits(window=60, messages=0, recipients=0), Usage(10**6, 10**6), None, id="zero-is-no-limit"),
    pytest.param(RateLimits(window=60, messages=0, recipients=2), Usage(10**6, 3),
                 "451 4.7.1 Error: too many recipients from user alice: at most 2 per 60 seconds, try again later",
                 id="recipient-limit-alone"),
])
def test_check_rate(limits, usage, want):
    refusal = check_rate("alice", usage, limits)
    assert (None if refusal is None else str(refusal)) == want


@pytest.mark.parametrize("recipients,want", [
    pytest.param(1, Usage(1, 1), id="one-recipient"),
    pytest.param(7, Usage(1, 7), id="seven-recipients"),
])
def test_charge(recipients, want):
    assert charge(recipients) == want


TOO_MANY = "451 4.7.1 Error: too many messages from user alice: at most 3 per 3600 seconds, try again later"


@pytest.mark.parametrize("charged,totals,want", [
    pytest.param(Usage(1, 2), Usage(3, 5), (None, None), id="within-nothing-refunded"),
    pytest.param(Usage(1, 2), Usage(4, 5), (TOO_MANY, Usage(-1, -2)), id="over-the-charge-is-refunded"),
    pytest.param(Usage(1, 4), Usage(2, 9),
                 ("451 4.7.1 Error: too many recipients from user alice: at most 5 per 3600 seconds, try again later",
                  Usage(-1, -4)), id="recipients-over-refunds-all-recipients"),
])
def test_rate_verdict(charged, totals, want):
    verdict = rate_verdict("alice", charged, totals, LIMITS)
    assert isinstance(verdict, RateVerdict)
    assert (None if verdict.refusal is None else str(verdict.refusal), verdict.refund) == want


def test_refunded_refusal_leaves_the_counters_as_they_were():
    """The milter's sequence (sendgate/milter/adapter.py charge_rate) on a
    real store: charge, decide, refund; a retry is judged the same way."""
    store = MemoryStore()
    store.add("alice", 0, 3600, 3, 3)
    for _ in range(2):
        charged = charge(1)
        verdict = rate_verdict("alice", charged, store.add("alice", 0, 3600, charged.messages, charged.recipients),
                               LIMITS)
        assert str(verdict.refusal) == TOO_MANY
        store.add("alice", 0, 3600, verdict.refund.messages, verdict.refund.recipients)
    assert store.add("alice", 0, 3600, 0, 0) == Usage(3, 3)


@pytest.mark.parametrize("now,window,want", [
    pytest.param(0.0, 3600, 0, id="epoch"),
    pytest.param(3599.9, 3600, 0, id="end-of-first-window"),
    pytest.param(3600.0, 3600, 3600, id="start-of-second-window"),
    pytest.param(1_790_000_123.5, 60, 1_790_000_100, id="minute-window"),
])
def test_window_start(now, window, want):
    assert window_start(now, window) == want


def test_memory_store_counts_per_principal_and_window():
    store = MemoryStore()
    assert store.add("alice", 0, 60, 1, 3) == Usage(1, 3)
    assert store.add("alice", 0, 60, 1, 2) == Usage(2, 5)
    assert store.add("bob", 0, 60, 1, 1) == Usage(1, 1)
    assert store.add("alice", 0, 60, -1, -2) == Usage(1, 3)
    assert store.add("alice", 60, 60, 1, 1) == Usage(1, 1)      # a new window starts at zero
    assert store.add("bob", 60, 60, 1, 1) == Usage(1, 1)
    assert set(store._counts) == {("alice", 60), ("bob", 60)}   # old windows are dropped


def test_memory_store_is_safe_across_threads():
    # libmilter calls back on one thread per MTA connection.
    store = MemoryStore()

    def send():
        for _ in range(500):
            store.add("alice", 0, 60, 1, 2)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.add("alice", 0, 60, 0, 0) == Usage(4000, 8000)
