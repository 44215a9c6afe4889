"""Who may use the submit socket, and how much: pure decisions for
sendgate-submitd.  The daemon supplies the facts (the peer from the kernel,
its groups from the user database, session counts, the times of recent
messages) and applies the reply.

Order of checks at connect: the deny lists, then the allow lists (empty
means everyone), then the session limits.  A user denied by name or group
is refused even if an allow list names them.

What one uid may hold (docs/threat-model.md, "Denial of service"): an MTA
session only inside a transaction (MAIL to the end of data), at most
transactions_per_uid of them and upstream_session_limit in all (the MTA's
process limit for the service); unfinished message data in memory up to
data_per_uid bytes, data_limit in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sendgate import replies
from sendgate.replies import Reply


@dataclass(frozen=True)
class Peer:
    uid: int
    login: str
    groups: frozenset[str]


@dataclass(frozen=True)
class AdmissionRules:
    allow_users: frozenset[str] = frozenset()
    deny_users: frozenset[str] = frozenset({"nobody"})
    allow_groups: frozenset[str] = frozenset()
    deny_groups: frozenset[str] = frozenset()
    sessions_per_uid: int = 100
    session_limit: int = 500
    message_rate_limit: int = 0      # messages per window per uid; 0: no limit
    rate_window: int = 60            # seconds
    transactions_per_uid: int = 10   # transactions in progress, each holding an MTA session
    upstream_session_limit: int = 50  # MTA sessions of the daemon, in transactions and kept
    data_per_uid: int = 20480000     # bytes of unfinished message data held in memory
    data_limit: int = 102400000


def may_submit(peer: Peer, rules: AdmissionRules) -> tuple[Reply, str] | None:
    """None when the peer may submit at all, else (reply, the rule that refused)."""
    refuse = replies.R554_NOT_AUTHORIZED.format(login=peer.login or f"uid {peer.uid}")
    if not peer.login:
        return refuse, "no login name"
    if peer.login in rules.deny_users:
        return refuse, "submit_deny_users"
    if peer.groups & rules.deny_groups:
        return refuse, "submit_deny_groups"
    if rules.allow_users or rules.allow_groups:
        if peer.login not in rules.allow_users and not peer.groups & rules.allow_groups:
            return refuse, "submit_allow_users/submit_allow_groups"
    return None


def session_refusal(peer: Peer, rules: AdmissionRules, of_uid: int, total: int,
                    host: str) -> tuple[Reply, str] | None:
    """Given the sessions already open (of this uid, in all), may one more start?"""
    if total >= rules.session_limit:
        return replies.R421_TOO_MANY_SESSIONS.format(host=host), "submit_session_limit"
    if of_uid >= rules.sessions_per_uid:
        return replies.R421_TOO_MANY_SESSIONS_UID.format(host=host, uid=str(peer.uid)), "submit_sessions_per_uid"
    return None


def transaction_refusal(peer: Peer, rules: AdmissionRules, of_uid: int, total: int) -> tuple[Reply, str] | None:
    """At MAIL, given the transactions in progress (of this uid, in all),
    may one more start?  Each holds an MTA session, a process of the MTA."""
    if of_uid >= rules.transactions_per_uid:
        return replies.R451_TOO_MANY_TRANSACTIONS_UID.format(uid=str(peer.uid)), "submit_transactions_per_uid"
    if total >= rules.upstream_session_limit:
        return replies.R451_TOO_MANY_TRANSACTIONS, "submit_upstream_session_limit"
    return None


def data_refusal(peer: Peer, rules: AdmissionRules, of_uid: int, total: int) -> tuple[Reply, str] | None:
    """During DATA: the bytes of unfinished message data held in memory (of
    this uid, in all), the session's next piece included; within budget?"""
    if of_uid > rules.data_per_uid:
        return replies.R452_DATA_BUDGET_UID.format(uid=str(peer.uid)), "submit_data_buffer_per_uid"
    if total > rules.data_limit:
        return replies.R452_DATA_BUDGET, "submit_data_buffer_limit"
    return None


def rate_refusal(peer: Peer, rules: AdmissionRules, recent: Sequence[float], now: float) -> Reply | None:
    """recent: times of this uid's messages accepted so far (any order)."""
    if not rules.message_rate_limit:
        return None
    in_window = sum(1 for t in recent if now - t < rules.rate_window)
    if in_window >= rules.message_rate_limit:
        return replies.R450_RATE_LIMIT.format(uid=str(peer.uid), window=str(rules.rate_window))
    return None
