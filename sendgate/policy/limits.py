"""Rate limits per principal: messages and recipients per time window.

The window is fixed: time is cut into slices of `window` seconds, and a
principal's counters start again at zero in each slice.  The caller (the
milter) keeps the counters in a store shared by every path into the MTA, adds
the message it is deciding on, and asks check_rate whether the totals, this
message included, stay within the limits.  A refused message is taken off the
counters again, so retrying after a refusal does not push the principal
further over.  A limit of 0 means no limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from sendgate import replies
from sendgate.replies import Reply


@dataclass(frozen=True)
class RateLimits:
    window: int = 3600       # seconds
    messages: int = 0        # most messages per window; 0: no limit
    recipients: int = 0      # most recipients per window, summed over messages; 0: no limit

    @property
    def active(self) -> bool:
        return bool(self.messages or self.recipients)


@dataclass(frozen=True)
class Usage:
    """What a principal has sent in the current window, this message included."""

    messages: int
    recipients: int


def window_start(now: float, window: int) -> int:
    """The first second of the window that holds now."""
    return int(now // window) * window


def check_rate(login: str, usage: Usage, limits: RateLimits) -> Reply | None:
    """None when usage is within the limits, else the temporary refusal."""
    if limits.messages and usage.messages > limits.messages:
        return replies.R451_MESSAGE_RATE.format(login=login, limit=str(limits.messages),
                                                window=str(limits.window))
    if limits.recipients and usage.recipients > limits.recipients:
        return replies.R451_RECIPIENT_RATE.format(login=login, limit=str(limits.recipients),
                                                  window=str(limits.window))
    return None
