"""What the milter does at end of message, as data: the plan.

The policy (sendgate/policy/submission.py) returns header Edits and maybe a
new envelope sender, or a refusal; the hand-off (sendgate/policy/handoff.py)
says which X-Sendgate-Login: fields go.  This module turns those into the
libmilter calls that carry them out, in order, and the disposition to return
(continue, reject, tempfail).  The adapter (sendgate/milter/adapter.py) makes
the calls and nothing else.  Pure: no pymilter, no I/O.

Actions, one tuple per libmilter call, named after it:
  ("addheader", name, value)          smfi_addheader: append a field
  ("insheader", index, name, value)   smfi_insheader: insert a field at index
  ("chgheader", name, index, value)   smfi_chgheader: change the index-th
                                      field of that name (1-based); "" deletes it
  ("chgfrom", sender, parameters)     smfi_chgfrom: set the envelope sender
  ("setreply", code, enhanced, text)  smfi_setreply: the reply to a refusal
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sendgate.policy.handoff import IDENTITY_FIELD
from sendgate.policy.message import AddHeader, Edit, Field
from sendgate.policy.submission import Decision
from sendgate.replies import Reply

Action = tuple


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]    # the libmilter calls, in order
    disposition: str = "continue"  # then: "continue", "reject" or "tempfail"


def refuse(reply: Reply) -> Plan:
    """The refusal: the reply, then tempfail (4xx) or reject (5xx).  libmilter
    takes the text as a format, so a literal % is doubled."""
    action = ("setreply", str(reply.code), reply.enhanced, reply.text.replace("%", "%%"))
    return Plan((action,), "tempfail" if reply.temporary else "reject")


def identity_removal(remove: Sequence[int]) -> list[Action]:
    """Delete those occurrences of the identity field (highest first, from
    handoff.resolve, so that the numbers stay valid)."""
    return [("chgheader", IDENTITY_FIELD, occurrence, "") for occurrence in remove]


def relay(remove: Sequence[int]) -> Plan:
    """Relayed mail: passed on as it is, but for the identity fields."""
    return Plan(tuple(identity_removal(remove)))


def header_actions(edits: Sequence[Edit], header: Sequence[Field]) -> list[Action]:
    """The Edits as libmilter calls; header is the message's header as the
    milter received it."""
    actions: list[Action] = []
    inserted = 0
    for position, edit in enumerate(edits):
        if isinstance(edit, AddHeader) and edit.index is None:
            actions.append(("addheader", edit.name, edit.value))
        elif isinstance(edit, AddHeader):
            # The policy's index is a 0-based position among the fields the
            # milter saw.  Postfix and Sendmail count insert positions after
            # their own Received: (index 0 would go above it, 1 just below
            # it), so position p is index p + 1; each field inserted moves
            # the next one down, keeping the policy's order.
            inserted += 1
            actions.append(("insheader", edit.index + inserted, edit.name, edit.value))
            # Sendmail's header templates (Date:, From:, Message-Id: and their
            # Resent- variants) stay beside an inserted field, where an
            # appended one replaces them.  Deleting the occurrence after the
            # last one the message has removes that default (a no-op on
            # Postfix, which has none).
            have = sum(1 for f in header if f.is_(edit.name))
            have += sum(1 for e in edits[:position + 1]
                        if isinstance(e, AddHeader) and e.name.lower() == edit.name.lower())
            actions.append(("chgheader", edit.name, have + 1, ""))
        else:
            actions.append(("chgheader", edit.name, edit.occurrence, edit.value))
    return actions


def accept(remove: Sequence[int], decision: Decision, header: Sequence[Field]) -> Plan:
    """An accepted submission: the identity fields out first (the policy
    counted positions without them, as the MTA will), the envelope sender,
    then the header edits."""
    actions = identity_removal(remove)
    if decision.new_sender is not None:
        # No ESMTP parameters, sent as an empty string: the 8.14 protocol
        # allows leaving them out, but some MTA-side decoders want both.
        actions.append(("chgfrom", f"<{decision.new_sender}>", ""))
    actions.extend(header_actions(decision.edits, header))
    return Plan(tuple(actions))


def changes(decision: Decision) -> str:
    """The fix-ups for the log line: +Name added, ~Name changed, -Name
    deleted, sender=<new> for the envelope; "none" when there are none."""
    out = [f"+{e.name}" if isinstance(e, AddHeader) else (f"~{e.name}" if e.value else f"-{e.name}")
           for e in decision.edits]
    if decision.new_sender is not None:
        out.append(f"sender=<{decision.new_sender}>")
    return ",".join(out) or "none"


def fixup_counts(decision: Decision) -> tuple[tuple[str, str], ...]:
    """(action, what) for the fix-up counter of sendgate/metrics.py."""
    out = [("add" if isinstance(e, AddHeader) else ("change" if e.value else "delete"), e.name)
           for e in decision.edits]
    if decision.new_sender is not None:
        out.append(("rewrite", "envelope-sender"))
    return tuple(out)
