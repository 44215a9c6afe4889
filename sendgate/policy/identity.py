"""Who is submitting, and whether a message is a submission or a relay.

The principal is established outside the policy engine: from the kernel
(SO_PEERCRED on the submit socket, passed to the MTA as XCLIENT LOGIN) or by
the MTA's SASL authentication.  The policy engine only receives the login and
never learns it from message content.
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


def mode_for(auth_login: str | None) -> Mode:
    """Submission exactly when the MTA says the session is authenticated.

    The MTA sets {auth_authen} only after SASL authentication or an
    authorized XCLIENT LOGIN (the submit socket's service); no client can set
    it by anything it writes in the message or in MAIL FROM.
    """
    return Mode.SUBMISSION if auth_login else Mode.RELAY


def session_login(auth_login: str | None, auth_type: str | None, daemon_name: str | None,
                  local_daemon_name: str) -> str | None:
    """The login a session may be trusted with, or None.

    An XCLIENT login is the submit socket's way of passing on the kernel's
    word, and only its dedicated MTA service (local_daemon_name) accepts
    XCLIENT.  Should an XCLIENT login show up on any other service, XCLIENT
    has been allowed there by mistake and a network client may have named
    itself: the login is ignored and the mail is relayed.
    """
    if not auth_login:
        return None
    if (auth_type or "").upper() == "XCLIENT" and daemon_name != local_daemon_name:
        return None
    return auth_login
