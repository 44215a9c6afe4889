"""SMTP replies: the one Reply type, every reply sendgate itself emits (named
after its code), and the table that rewrites the replies aiosmtpd makes.

Replies relayed from the MTA are Reply values too, kept as the MTA wrote
them; the constants below are sendgate's own.  Each carries an RFC 3463
enhanced status code and, where one exists, Postfix's wording, so an
administrator reading a bounce or a log line sees familiar text.  Tests
assert against these constants, so a wording change is one edit here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# An RFC 3463 enhanced status code at the start of a reply line.
_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?: |$)")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: its code and its lines, each the text after "NNN "
    or "NNN-".  sendgate's own replies (Reply.own) are one line that starts
    with the enhanced code; a reply read from the MTA keeps every line as
    it was written, so that str() relays it exactly."""

    code: int
    lines: tuple[str, ...]

    @classmethod
    def own(cls, code: int, enhanced: str, text: str) -> "Reply":
        return cls(code, (f"{enhanced} {text}",))

    def __str__(self) -> str:
        """The reply as our client should see it (push() adds the last CRLF)."""
        last = len(self.lines) - 1
        return "\r\n".join(f"{self.code}{' ' if i == last else '-'}{line}" for i, line in enumerate(self.lines))

    def format(self, **values: str) -> "Reply":
        return Reply(self.code, tuple(line.format(**values) for line in self.lines))

    @property
    def one_line(self) -> str:
        """Every line joined with a space, the enhanced code included: how a
        log line, or a reply of ours that quotes the MTA, shows it."""
        return " ".join(self.lines)

    @property
    def enhanced(self) -> str:
        """The RFC 3463 code the reply starts with, "" when it has none."""
        found = _ENHANCED.match(self.lines[0]) if self.lines else None
        return found.group(1) if found else ""

    @property
    def text(self) -> str:
        """The reply without its codes (what a milter hands to setreply)."""
        found = _ENHANCED.match(self.one_line)
        return self.one_line[found.end():] if found else self.one_line

    @property
    def positive(self) -> bool:
        """2yz or 3yz (RFC 5321 §4.2.1): the command was accepted."""
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        """4yz: refused for now, the client should try again."""
        return 400 <= self.code < 500


def shown(value: str, limit: int) -> str:
    """An untrusted value as a reply may show it: printable ASCII, cut at
    limit characters (sendgate.daemon.quote uses it for log lines)."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return text.encode("ascii", "backslashreplace").decode("ascii").replace("\r", "\\r").replace("\n", "\\n")


R221_BYE = Reply.own(221, "2.0.0", "Bye")
R250_OK = Reply.own(250, "2.0.0", "Ok")
R250_RCPTHDR = Reply.own(250, "2.1.0", "Ok: recipients will be taken from the message header")
R250_RECIPIENT_OK = Reply.own(250, "2.1.5", "Ok")

R421_UNAVAILABLE = Reply.own(421, "4.3.0", "{host} Service not available: the mail system is not reachable, try again later")
R421_TIMEOUT = Reply.own(421, "4.4.2", "{host} Error: timeout exceeded")
R421_SHUTDOWN = Reply.own(421, "4.3.2", "{host} Service shutting down, try again later")
R421_SESSION_TIME = Reply.own(421, "4.4.2", "{host} Error: session time limit exceeded")
R421_TOO_MANY_SESSIONS = Reply.own(421, "4.7.0", "{host} Error: too many sessions, try again later")
R421_TOO_MANY_SESSIONS_UID = Reply.own(421, "4.7.0", "{host} Error: too many sessions from uid {uid}, try again later")
R450_RATE_LIMIT = Reply.own(450, "4.7.1", "Error: too many messages from uid {uid} in {window} seconds, try again later")
R451_UPSTREAM_LOST = Reply.own(451, "4.4.2", "Error: lost connection with the mail system; message not accepted, try again later")
R451_RECIPIENT_DEFERRED = Reply.own(451, "4.3.0", "<{address}>: Recipient address temporarily refused, message not accepted: {detail}")
R451_NO_IDENTITY = Reply.own(451, "4.3.5", "Error: no sendgate login on the local submission service; check submit_upstream_protocol")
R451_MESSAGE_RATE = Reply.own(451, "4.7.1", "Error: too many messages from user {login}: at most {limit} per {window} seconds, try again later")
R451_RECIPIENT_RATE = Reply.own(451, "4.7.1", "Error: too many recipients from user {login}: at most {limit} per {window} seconds, try again later")
R451_LOOPBACK_UNIDENTIFIED = Reply.own(451, "4.7.1", "Error: loopback client not identified: its socket owner was not found, try again later")
R451_TOO_MANY_TRANSACTIONS_UID = Reply.own(451, "4.3.2", "Error: too many transactions in progress for uid {uid}, try again later")
R451_TOO_MANY_TRANSACTIONS = Reply.own(451, "4.3.2", "Error: too many transactions in progress, try again later")
R451_POLICY_ERROR = Reply.own(451, "4.3.0", "Error: the mail policy could not be applied, try again later")
R452_DATA_BUDGET_UID = Reply.own(452, "4.3.1", "Error: insufficient system storage: too much unfinished message data for uid {uid}, try again later")
R452_DATA_BUDGET = Reply.own(452, "4.3.1", "Error: insufficient system storage: too much unfinished message data, try again later")
R452_TOO_MANY_RECIPIENTS = Reply.own(452, "4.5.3", "Error: too many recipients")

R500_SYNTAX = Reply.own(500, "5.5.2", "Error: bad syntax")
R500_UNKNOWN_COMMAND = Reply.own(500, "5.5.2", "Error: command not recognized")
R500_LINE_TOO_LONG = Reply.own(500, "5.5.2", "Error: line too long")
R501_HELO_SYNTAX = Reply.own(501, "5.5.4", "Syntax: HELO hostname")
R501_EHLO_SYNTAX = Reply.own(501, "5.5.4", "Syntax: EHLO hostname")
R501_MAIL_SYNTAX = Reply.own(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
R501_RCPT_SYNTAX = Reply.own(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
R501_BAD_ADDRESS = Reply.own(501, "5.1.3", "Bad recipient address syntax")
R501_BAD_SENDER = Reply.own(501, "5.1.7", "Bad sender address syntax")
R501_BAD_PARAMETER = Reply.own(501, "5.5.4", "Bad {param} parameter syntax")
R502_NOT_IMPLEMENTED = Reply.own(502, "5.5.1", "Error: command not implemented")
R503_NEED_EHLO = Reply.own(503, "5.5.1", "Error: send HELO/EHLO first")
R503_NEED_MAIL = Reply.own(503, "5.5.1", "Error: need MAIL command")
R503_NESTED_MAIL = Reply.own(503, "5.5.1", "Error: nested MAIL command")
R503_NEED_RCPT = Reply.own(503, "5.5.1", "Error: need RCPT command")
R550_FROM_NOT_OWNED = Reply.own(550, "5.7.1", "<{address}>: From address rejected: not owned by user {login}")
R550_LOOPBACK_REFUSED = Reply.own(550, "5.7.1", "Error: mail from loopback TCP clients is not accepted here; use the sendmail command")
R552_TOO_BIG = Reply.own(552, "5.3.4", "Error: message file too big")
R553_SENDER_NOT_OWNED = Reply.own(553, "5.7.1", "<{address}>: Sender address rejected: not owned by user {login}")
R553_NULL_SENDER = Reply.own(553, "5.7.1", "<>: Sender address rejected: null sender not allowed for user {login}")
R554_HEADER = Reply.own(554, "5.6.0", "{detail}")
R554_NUL_IN_MESSAGE = Reply.own(554, "5.6.0", "Error: message contains a NUL character, not accepted")
R554_HEADER_NUL = Reply.own(554, "5.6.0", "{field}: NUL character in header field")
R554_HEADER_REPEATED = Reply.own(554, "5.6.0", "{field}: header field appears more than once")
R554_RECIPIENT_REJECTED = Reply.own(554, "5.1.0", "<{address}>: Recipient address rejected, message not accepted: {detail}")
R554_IDENTITY_FORGED = Reply.own(554, "5.7.1", "Error: message carries an X-Sendgate-Login field of its own")
R554_NOT_AUTHORIZED = Reply.own(554, "5.7.1", "Error: user {login} is not allowed to submit mail")
R555_UNSUPPORTED_PARAMETER = Reply.own(555, "5.5.4", "Unsupported option: {param}")


# The replies aiosmtpd writes itself (its command loop and DATA reader; the
# commands it would answer are all replaced in submit_socket/protocol.py), by
# how they start, and ours for each: the enhanced code and the wording of the
# constants above.
AIOSMTPD_REPLIES = (
    ("500 Error: bad syntax", R500_SYNTAX),
    ('500 Error: command "', R500_UNKNOWN_COMMAND),
    ("500 Command line too long", R500_LINE_TOO_LONG),
    ("500 Line too long", R500_LINE_TOO_LONG),
    ("500 Error: strict ASCII mode", R500_SYNTAX),
    ("552 Error: Too much mail data", R552_TOO_BIG),
    ("503 Error: send ", R503_NEED_EHLO),
)


def with_enhanced_code(status: str) -> str:
    """A reply line about to be written to the client: every 2xx/4xx/5xx
    reply but the greeting gets an RFC 3463 code, aiosmtpd's own from
    AIOSMTPD_REPLIES (any other gets X.0.0); ours and multi-line replies
    (EHLO, or relayed from the MTA as it wrote them) pass as they are."""
    code = status[:3]
    if not code.isdigit() or code in ("220", "354") or code[0] not in "245":
        return status
    if status[3:4] != " " or "\n" in status:
        return status
    if _ENHANCED.match(status[4:]):
        return status
    for prefix, reply in AIOSMTPD_REPLIES:
        if status.startswith(prefix):
            return str(reply)
    return f"{code} {code[0]}.0.0 {status[4:]}"
