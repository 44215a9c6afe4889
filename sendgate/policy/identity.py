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
