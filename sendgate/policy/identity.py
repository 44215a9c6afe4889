"""Who is submitting, and whether a message is a submission or a relay.

The principal is established outside the policy engine: from the kernel
(SO_PEERCRED on the submit socket, passed to the MTA as XCLIENT LOGIN or an
X-Sendgate-Login: field) or by the MTA's SASL authentication, and
sendgate.policy.handoff.resolve says which login the milter may trust.  The
policy engine only receives the login and never learns it from message
content that a client wrote.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Mode(enum.Enum):
    SUBMISSION = "submission"   # an authenticated user's new mail: fix-ups apply
    RELAY = "relay"             # anything else: passed on as it is


@dataclass(frozen=True)
class Principal:
    login: str
    address: str              # the address the login sends as by default
    display_name: str = ""    # the user's full name (GECOS), for a From: we add


def mode_for(login: str | None) -> Mode:
    """Submission exactly when handoff.resolve found a login: the MTA's
    {auth_authen} (SASL, or XCLIENT LOGIN on the submit socket's service) or
    the submit daemon's field on its own service; no client can set either
    by anything it writes in the message or in MAIL FROM."""
    return Mode.SUBMISSION if login else Mode.RELAY


def local_login(login: str, realms: tuple[str, ...]) -> str:
    """A SASL login as the local login it stands for: "user@realm" is "user"
    when realm is one of realms (sasl_realms; compared case-insensitively,
    like domains), so that it owns user@myorigin and counts against user's
    limits.  Any other login is returned as it is, realm included."""
    user, at, realm = login.rpartition("@")
    if at and user and realm.lower() in {r.lower() for r in realms}:
        return user
    return login
