"""The submit daemon's checks of one SMTP transaction, each a pure verdict.

check_mail: MAIL FROM's parameters, then the envelope sender
(sender.envelope_verdict), then the message rate (admission.rate_refusal).
check_rcpt: RCPT TO's parameters, then the recipient limit.
check_message, at the end of data: the header (submission.header_problem),
a NUL byte anywhere, and for an RCPTHDR transaction the recipients the
header names (envelope.recipients_from_header), within the recipient limit.

The caller (sendgate/submit_socket/protocol.py, forward.py) has parsed the
command's syntax (sendgate.smtpwire), supplies the facts and applies the
verdict: a Refusal, or what to send on to the MTA.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from sendgate import replies
from sendgate.policy.admission import AdmissionRules, Peer, rate_refusal
from sendgate.policy.envelope import HeaderError, recipients_from_header
from sendgate.policy.message import split_message
from sendgate.policy.sender import SenderRules, envelope_verdict, qualify
from sendgate.policy.submission import header_problem
from sendgate.replies import Reply, shown

# MAIL parameters passed on to the MTA, and the one we implement ourselves.
# AUTH= is refused: the identity comes from the kernel, never from the client.
MAIL_PARAMETERS = frozenset({"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID"})
RCPT_PARAMETERS = frozenset({"NOTIFY", "ORCPT"})
RCPTHDR = "RCPTHDR"


@dataclass(frozen=True)
class Refusal:
    """A command refused with reply.  log: what the log line says after
    "reject: MAIL from uid=N login=L: " when a rule refused (the sender, the
    rate limit); None for a refusal of syntax or parameters, not logged."""
    reply: Reply
    log: str | None = None


@dataclass(frozen=True)
class Mail:
    """MAIL FROM, accepted: what goes on to the MTA."""
    sender: str                  # qualified (RFC 6409 §4.2)
    params: tuple[str, ...]      # as the client wrote them, RCPTHDR left out
    rcpthdr: bool                # the recipients come from the message header


@dataclass(frozen=True)
class Recipient:
    """RCPT TO, accepted: what goes on to the MTA."""
    address: str                 # qualified
    params: tuple[str, ...]      # as the client wrote them


@dataclass(frozen=True)
class Message:
    """The verdict at the end of data.  recipients: for RCPTHDR, the
    envelope to replay (RCPT's first, then the header's); remove: the header
    fields (0-based) to delete before forwarding; nrcpt: the recipient count
    for the log line."""
    refusal: Reply | None
    nrcpt: int
    recipients: tuple[str, ...] = ()
    remove: tuple[int, ...] = ()


def param_name(param: str) -> str:
    """An ESMTP parameter's keyword, upper-cased: "size=10" -> "SIZE"."""
    return param.split("=", 1)[0].upper()


def param_value(param: str) -> str | None:
    """Its value; None when it has no "=" (not the same as "SIZE=")."""
    _, eq, value = param.partition("=")
    return value if eq else None


def mail_parameter_refusal(params: Sequence[str], size_limit: int) -> Reply | None:
    for p in params:
        name, value = param_name(p), param_value(p)
        if name not in MAIL_PARAMETERS and name != RCPTHDR:
            return replies.R555_UNSUPPORTED_PARAMETER.format(param=shown(p, 64))
        if name == "SIZE":
            if not (value or "").isdigit():
                return replies.R501_BAD_PARAMETER.format(param="SIZE")
            if int(value) > size_limit:
                return replies.R552_TOO_BIG
        elif name in ("SMTPUTF8", RCPTHDR) and value is not None:
            return replies.R501_BAD_PARAMETER.format(param=name)
        elif name == "BODY" and (value or "").upper() not in ("7BIT", "8BITMIME"):
            return replies.R501_BAD_PARAMETER.format(param="BODY")
    return None


def check_mail(path: str, params: Sequence[str], peer: Peer, rules: SenderRules, admission: AdmissionRules,
               size_limit: int, recent: Sequence[float], now: float) -> Mail | Refusal:
    """MAIL FROM:<path> params from peer.  recent: the times of the uid's
    messages accepted so far, for the rate limit at now.  The sender is
    refused here only when sender_mismatch_action is reject; otherwise the
    milter rewrites it or names the user in Sender:, as for network mail."""
    refusal = mail_parameter_refusal(params, size_limit)
    if refusal is not None:
        return Refusal(refusal)
    sender = qualify(path, rules.domain)
    refusal, _ = envelope_verdict(peer.login, sender, rules)
    if refusal is not None:
        return Refusal(refusal, f"{refusal}; from=<{shown(sender, 200)}>")
    refusal = rate_refusal(peer, admission, recent, now)
    if refusal is not None:
        return Refusal(refusal, f"{refusal} (submit_message_rate_limit)")
    rcpthdr = any(param_name(p) == RCPTHDR for p in params)
    return Mail(sender, tuple(p for p in params if param_name(p) != RCPTHDR), rcpthdr)


def recipient_limit_refusal(count: int, limit: int) -> Reply | None:
    """count recipients, the new ones included, against submit_recipient_limit."""
    return replies.R452_TOO_MANY_RECIPIENTS if count > limit else None


def check_rcpt(path: str, params: Sequence[str], count: int, limit: int, domain: str) -> Recipient | Refusal:
    """RCPT TO:<path> params, after count recipients accepted before it."""
    for p in params:
        if param_name(p) not in RCPT_PARAMETERS:
            return Refusal(replies.R555_UNSUPPORTED_PARAMETER.format(param=shown(p, 64)))
    refusal = recipient_limit_refusal(count + 1, limit)
    if refusal is not None:
        return Refusal(refusal)
    return Recipient(qualify(path, domain), tuple(params))


def check_message(content: bytes, rcpthdr: bool, given: Sequence[str], domain: str, limit: int) -> Message:
    """The message as the client sent it; given: the recipients of its RCPT
    commands (qualified)."""
    header, _ = split_message(content)
    problem = header_problem(header)
    if problem is None and b"\x00" in content:
        problem = replies.R554_NUL_IN_MESSAGE  # RFC 5322 §2.3; MTAs mangle it
    if problem is not None:
        return Message(problem, len(given))
    if not rcpthdr:
        return Message(None, len(given), tuple(given))
    try:
        found = recipients_from_header(header, domain, given)
    except HeaderError as err:
        return Message(replies.R554_HEADER.format(detail=shown(str(err), 200)), 0)
    nrcpt = len(found.recipients)
    return Message(recipient_limit_refusal(nrcpt, limit), nrcpt, found.recipients, found.remove)


def replay_mail(mail: Mail, recipients: Sequence[str], mta_smtputf8: bool) -> Mail:
    """The MAIL of an RCPTHDR replay.  The client could not declare SMTPUTF8
    for recipients it had not named: it is added when the sender or a header
    recipient is not ASCII (RFC 6531 §3.4), as Postfix's sendmail detects it
    for its own envelope, and the MTA offers it.  An MTA without SMTPUTF8
    (the Sendmail build) gets the envelope as it did before: Sendmail takes
    8-bit addresses without it."""
    declared = any(param_name(p) == "SMTPUTF8" for p in mail.params)
    if declared or not mta_smtputf8 or all(address.isascii() for address in (mail.sender, *recipients)):
        return mail
    return replace(mail, params=(*mail.params, "SMTPUTF8"))
