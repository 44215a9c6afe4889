"""Loopback TCP clients: identified by the kernel, refused, or relayed.

A program on the host that speaks SMTP to 127.0.0.1:25 or [::1]:25 is a
local user like one running the sendmail command, and must not be a way to
send as someone else.  The milter (sendgate/milter/loopback.py) finds the
uid owning the client's socket; this module decides what the session is,
by the milter_loopback_clients setting:

  identify  the owner's login is the session's login: the submission policy
            applies as for the sendmail command (fix-ups, sender ownership,
            rate limits).  Root, the postfix and the sendgate users are
            identified like anyone else, as themselves (the sendmail command
            does the same for root).  A client that cannot be identified
            (closed before the lookup, in another network namespace, a uid
            without a login) is refused with a 4xx reply: the lookup failing
            is sendgate's limit, not proof of abuse, so a genuine client
            keeps the message queued and tries again, while a forger gains
            nothing by retrying.
  refuse    loopback TCP is not a submission channel: 550 5.7.1.
  relay     as before sendgate 0.x: passed on as relay, no fix-ups.

A session that already has a login (SASL, or the submit daemon's service)
is not judged here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sendgate import replies
from sendgate.replies import Reply


class LoopbackMode(enum.Enum):
    IDENTIFY = "identify"
    REFUSE = "refuse"
    RELAY = "relay"


@dataclass(frozen=True)
class LoopbackVerdict:
    login: str | None        # the session's login; None: not a submission
    refusal: Reply | None    # refuse the message with this, when set
    source: str              # for the log: "kernel", "unidentified", "refused", "relay"


def decide(mode: LoopbackMode, owner_login: str | None) -> LoopbackVerdict:
    """The verdict for a loopback TCP client whose socket the kernel says is
    owned by owner_login (None: not found, or a uid without a login)."""
    if mode is LoopbackMode.RELAY:
        return LoopbackVerdict(None, None, "relay")
    if mode is LoopbackMode.REFUSE:
        return LoopbackVerdict(None, replies.R550_LOOPBACK_REFUSED, "refused")
    if not owner_login:
        return LoopbackVerdict(None, replies.R451_LOOPBACK_UNIDENTIFIED, "unidentified")
    return LoopbackVerdict(owner_login, None, "kernel")
