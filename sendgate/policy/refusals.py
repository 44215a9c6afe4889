"""What a negative reply means to the submit daemon's client, by its class
(RFC 5321 §4.2.1: 4yz transient, 5yz permanent), in one table: the outcome
the log line and the metrics record, and the reply the client of an RCPTHDR
transaction hears when the MTA refused one recipient of the replayed
envelope.  That client never saw per-recipient replies, so one refused
recipient fails the whole message (sendgate/submit_socket/forward.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from sendgate import replies
from sendgate.replies import Reply, shown


@dataclass(frozen=True)
class Meaning:
    outcome: str                 # "tempfail" or "rejected"
    replayed_recipient: Reply    # template: {address}, {detail} (the MTA's reply)


TRANSIENT, PERMANENT = "transient", "permanent"

MEANINGS = {
    TRANSIENT: Meaning("tempfail", replies.R451_RECIPIENT_DEFERRED),
    PERMANENT: Meaning("rejected", replies.R554_RECIPIENT_REJECTED),
}


def refusal_class(reply: Reply) -> str:
    """PERMANENT for 5yz and above, else TRANSIENT (a nonsense code below
    400 that is not positive included: trying again does no harm)."""
    return PERMANENT if reply.code >= 500 else TRANSIENT


def outcome(reply: Reply) -> str:
    """The final reply to a message (ours or the MTA's) as the log line and
    the metrics count it: "accepted", "tempfail" or "rejected"."""
    return "accepted" if reply.positive else MEANINGS[refusal_class(reply)].outcome


def replayed_recipient_refusal(address: str, reply: Reply) -> Reply:
    """The client's reply when the MTA answered RCPT TO:<address> of a
    replayed RCPTHDR envelope with reply (not positive)."""
    template = MEANINGS[refusal_class(reply)].replayed_recipient
    return template.format(address=shown(address, 100), detail=shown(reply.one_line, 200))
