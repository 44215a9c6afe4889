"""Every SMTP reply sendgate itself emits, named after its code.

Replies relayed from the MTA are passed through as the MTA wrote them; the
ones below are sendgate's own.  Each carries an RFC 3463 enhanced status code
and, where one exists, Postfix's wording, so an administrator reading a
bounce or a log line sees familiar text.  Tests assert against these
constants, so a wording change is one edit here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    def format(self, **values: str) -> "Reply":
        return Reply(self.code, self.enhanced, self.text.format(**values))

    @property
    def ok(self) -> bool:
        return self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500


R221_BYE = Reply(221, "2.0.0", "Bye")
R250_OK = Reply(250, "2.0.0", "Ok")
R250_SENDER_OK = Reply(250, "2.1.0", "Ok")
R250_RCPTHDR = Reply(250, "2.1.0", "Ok: recipients will be taken from the message header")
R250_RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
R252_VRFY = Reply(252, "2.0.0", "Send some mail, I'll try my best")

R421_UNAVAILABLE = Reply(421, "4.3.0", "{host} Service not available: the mail system is not reachable, try again later")
R421_TIMEOUT = Reply(421, "4.4.2", "{host} Error: timeout exceeded")
R421_SHUTDOWN = Reply(421, "4.3.2", "{host} Service shutting down, try again later")
R421_SESSION_TIME = Reply(421, "4.4.2", "{host} Error: session time limit exceeded")
R421_TOO_MANY_SESSIONS = Reply(421, "4.7.0", "{host} Error: too many sessions, try again later")
R421_TOO_MANY_SESSIONS_UID = Reply(421, "4.7.0", "{host} Error: too many sessions from uid {uid}, try again later")
R450_RATE_LIMIT = Reply(450, "4.7.1", "Error: too many messages from uid {uid} in {window} seconds, try again later")
R451_UPSTREAM_LOST = Reply(451, "4.4.2", "Error: lost connection with the mail system; message not accepted, try again later")
R451_RECIPIENT_DEFERRED = Reply(451, "4.3.0", "<{address}>: Recipient address temporarily refused, message not accepted: {detail}")
R451_NO_IDENTITY = Reply(451, "4.3.5", "Error: no sendgate login on the local submission service; check submit_upstream_protocol")
R451_CONFIG = Reply(451, "4.3.5", "Error: server configuration problem, try again later")
R451_MESSAGE_RATE = Reply(451, "4.7.1", "Error: too many messages from user {login}: at most {limit} per {window} seconds, try again later")
R451_RECIPIENT_RATE = Reply(451, "4.7.1", "Error: too many recipients from user {login}: at most {limit} per {window} seconds, try again later")
R451_POLICY_ERROR = Reply(451, "4.3.0", "Error: the mail policy could not be applied, try again later")
R452_TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Error: too many recipients")

R500_SYNTAX = Reply(500, "5.5.2", "Error: bad syntax")
R500_UNKNOWN_COMMAND = Reply(500, "5.5.2", "Error: command not recognized")
R500_LINE_TOO_LONG = Reply(500, "5.5.2", "Error: line too long")
R501_MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
R501_RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
R501_BAD_ADDRESS = Reply(501, "5.1.3", "Bad recipient address syntax")
R501_BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
R501_BAD_PARAMETER = Reply(501, "5.5.4", "Bad {param} parameter syntax")
R502_NOT_IMPLEMENTED = Reply(502, "5.5.1", "Error: command not implemented")
R503_NEED_EHLO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
R503_NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
R503_NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
R503_NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
R550_FROM_NOT_OWNED = Reply(550, "5.7.1", "<{address}>: From address rejected: not owned by user {login}")
R552_TOO_BIG = Reply(552, "5.3.4", "Error: message file too big")
R553_SENDER_NOT_OWNED = Reply(553, "5.7.1", "<{address}>: Sender address rejected: not owned by user {login}")
R553_NULL_SENDER = Reply(553, "5.7.1", "<>: Sender address rejected: null sender not allowed for user {login}")
R554_HEADER = Reply(554, "5.6.0", "{detail}")
R554_NUL_IN_MESSAGE = Reply(554, "5.6.0", "Error: message contains a NUL character, not accepted")
R554_HEADER_NUL = Reply(554, "5.6.0", "{field}: NUL character in header field")
R554_HEADER_REPEATED = Reply(554, "5.6.0", "{field}: header field appears more than once")
R554_RECIPIENT_REJECTED = Reply(554, "5.1.0", "<{address}>: Recipient address rejected, message not accepted: {detail}")
R554_IDENTITY_FORGED = Reply(554, "5.7.1", "Error: message carries an X-Sendgate-Login field of its own")
R554_NOT_AUTHORIZED = Reply(554, "5.7.1", "Error: user {login} is not allowed to submit mail")
R555_UNSUPPORTED_PARAMETER = Reply(555, "5.5.4", "Unsupported option: {param}")
