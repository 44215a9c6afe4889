"""Rate limits per principal: messages and recipients per time window.

The window is fixed: time is cut into slices of `window` seconds, and a
principal's counters start again at zero in each slice.  The milter keeps the
counters in a store shared by every path into the MTA
(sendgate/milter/ratestore.py).  For each submitted message it adds what
charge() says, and rate_verdict() decides on the totals that come back, this
message included: within the limits, or refused, in which case the verdict
also says what to take off the counters again, so that retrying after a
refusal does not push the principal further over.  A limit of 0 means no
limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from sendgate import replies
from sendgate.replies import Reply


@dataclass(frozen=True)
class RateLimits:
    """No defaults here: they are declared once, in the configuration schema
    (rate_window, rate_message_limit, rate_recipient_limit in sendgate/config.py)."""

    window: int              # seconds
    messages: int            # most messages per window; 0: no limit
    recipients: int          # most recipients per window, summed over messages; 0: no limit

    @property
    def active(self) -> bool:
        return bool(self.messages or self.recipients)


@dataclass(frozen=True)
class Usage:
    """What a principal has sent in the current window, this message included
    (or, as a charge or a refund, what to add to that)."""

    messages: int
    recipients: int


@dataclass(frozen=True)
class RateVerdict:
    refusal: Reply | None    # the temporary refusal, or None: within the limits
    refund: Usage | None     # add this to the counters again (the refused message's charge undone)


def window_start(now: float, window: int) -> int:
    """The first second of the window that holds now."""
    return int(now // window) * window


def charge(recipients: int) -> Usage:
    """What one message to that many recipients adds to the counters."""
    return Usage(1, recipients)


def check_rate(login: str, usage: Usage, limits: RateLimits) -> Reply | None:
    """None when usage is within the limits, else the temporary refusal."""
    if limits.messages and usage.messages > limits.messages:
        return replies.R451_MESSAGE_RATE.format(login=login, limit=str(limits.messages),
                                                window=str(limits.window))
    if limits.recipients and usage.recipients > limits.recipients:
        return replies.R451_RECIPIENT_RATE.format(login=login, limit=str(limits.recipients),
                                                  window=str(limits.window))
    return None


def rate_verdict(login: str, charged: Usage, totals: Usage, limits: RateLimits) -> RateVerdict:
    """The verdict on a message that was charged to the counters, given the
    totals after the charge; a refused message is not counted."""
    refusal = check_rate(login, totals, limits)
    if refusal is None:
        return RateVerdict(None, None)
    return RateVerdict(refusal, Usage(-charged.messages, -charged.recipients))
