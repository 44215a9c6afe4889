"""The user database lookups the daemons make for every session or message.

A lookup goes through NSS (nsswitch.conf, then /etc/passwd or a directory
service) every time.  The milter names each submission's user in Sender:
with the account's full name, so under load the same answer is fetched
hundreds of times a second (bench/): full names are kept for TTL seconds,
as nscd would keep them (nscd: 600).  The cache is bounded and thread-safe
(the milter calls it from libmilter's threads).

The login of a uid is the identity of everything the submit daemon passes
on, so it is never remembered: a uid given to a new account is that
account's from its first connection.
"""

from __future__ import annotations

import pwd
import threading
import time

TTL = 10.0
SIZE = 4096


class _Remembered:
    def __init__(self, lookup, clock=time.monotonic):
        self.lookup, self.clock = lookup, clock
        self.answers: dict = {}
        self.lock = threading.Lock()

    def __call__(self, key):
        now = self.clock()
        hit = self.answers.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = self.lookup(key)
        with self.lock:
            if len(self.answers) >= SIZE:
                self.answers.clear()
            self.answers[key] = (now + TTL, value)
        return value


def _full_name(login: str) -> str:
    try:
        gecos = pwd.getpwnam(login).pw_gecos
    except KeyError:
        return ""
    return gecos.split(",", 1)[0].replace("&", login.capitalize())


def login_of(uid: int) -> str:
    """The login of uid ('' when the user database has none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


full_name = _Remembered(_full_name)
full_name.__doc__ = "The GECOS full name of a local login ('' for SASL-only users)."
