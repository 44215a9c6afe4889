"""User database answers are remembered for userdb.TTL seconds, no longer,
and the cache stays bounded."""

from __future__ import annotations

import os
import pwd

from sendgate import userdb


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_answer_is_kept_for_ttl_then_asked_again():
    clock, asked, answers = Clock(), [], {1000: "alice"}
    lookup = userdb._Remembered(lambda uid: asked.append(uid) or answers.get(uid, ""), clock)
    assert lookup(1000) == "alice"
    answers[1000] = "bob"                       # the account was renamed
    clock.now += userdb.TTL - 0.1
    assert lookup(1000) == "alice"
    clock.now += 0.2
    assert lookup(1000) == "bob"
    assert asked == [1000, 1000]


def test_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(userdb, "SIZE", 3)
    lookup = userdb._Remembered(str, Clock())
    for key in range(10):
        lookup(key)
    assert len(lookup.answers) <= 3


def test_real_lookups():
    me = pwd.getpwuid(os.getuid())
    assert userdb.login_of(os.getuid()) == me.pw_name
    assert userdb.login_of(2**31 - 2) == ""
    assert userdb.full_name("no-such-login-here") == ""


def test_login_of_a_uid_is_never_remembered(monkeypatch):
    """The login is the identity the submit daemon passes on: a uid given to
    a new account is that account's at once."""
    owners = iter(["alice", "bob"])
    monkeypatch.setattr(userdb.pwd, "getpwuid", lambda uid: pwd.struct_passwd((next(owners),) + ("",) * 6))
    assert [userdb.login_of(1000), userdb.login_of(1000)] == ["alice", "bob"]
