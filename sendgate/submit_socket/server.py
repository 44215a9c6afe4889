"""The submit socket's SMTP server: aiosmtpd on AF_UNIX, one MTA session per client.

Identity: connection_made() reads the peer's uid from the kernel
(SO_PEERCRED) and maps it to a login with getpwuid().  Nothing the client
says (HELO, MAIL FROM, AUTH) changes it.  The login goes to the MTA on a
service only this daemon can reach, as XCLIENT LOGIN= (Postfix) or, with
submit_upstream_protocol "header" (Sendmail, which has no XCLIENT), as an
X-Sendgate-Login: field put on top of the message after every field of that
name the client wrote was removed; the milter trusts it only on that
service's {daemon_name} and removes it (sendgate.policy.handoff).

Forwarding: the MTA session is opened before our greeting, so a client of a
dead MTA gets 421 at once.  MAIL, RCPT and DATA are forwarded as they come
and the MTA's own replies are relayed, so the client's 250 for a message is
the MTA's "queued as".  A transaction opened with MAIL FROM:<..> RCPTHDR is
held until the end of data; its recipients are then taken from the header
(sendgate.policy.envelope) and the whole transaction is replayed upstream.

aiosmtpd supplies command parsing, the DATA reader (which ends data only at
CRLF.CRLF), size limits and the idle timer.  This subclass replaces MAIL,
RCPT, EHLO and the commands we do not offer, because stock aiosmtpd
upper-cases and refuses the parameters a submission client needs, and gives
every reply it makes itself an enhanced status code.
"""

from __future__ import annotations

import collections
import logging
import pwd
import re
import secrets
import socket
import struct
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Session

from sendgate import replies
from sendgate.daemon import quote
from sendgate.policy.envelope import HeaderError, recipients_from_header
from sendgate.policy.handoff import IDENTITY_FIELD
from sendgate.policy.message import delete_fields, find, split_message
from sendgate.policy.sender import SenderRules, check_envelope_sender, qualify
from sendgate.replies import Reply
from sendgate.smtpwire import SyntaxProblem, param_name, param_value, parse_path_argument, xtext
from sendgate.submit_socket.upstream import Upstream, UpstreamError

log = logging.getLogger("sendgate/submit")
# aiosmtpd logs every command line (message data included) at INFO.
logging.getLogger("mail.log").setLevel(logging.WARNING)

# MAIL parameters passed on to the MTA, and the one we implement ourselves.
# AUTH= is refused: the identity comes from the kernel, never from the client.
MAIL_PARAMETERS = {"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID"}
RCPT_PARAMETERS = {"NOTIFY", "ORCPT"}
RCPTHDR = "RCPTHDR"

# aiosmtpd's own replies, given the enhanced code and wording of ours.
_CANNED = (
    ("500 Error: bad syntax", replies.R500_SYNTAX),
    ('500 Error: command "', replies.R500_UNKNOWN_COMMAND),
    ("500 Command line too long", replies.R500_LINE_TOO_LONG),
    ("500 Line too long", replies.R500_LINE_TOO_LONG),
    ("500 Error: strict ASCII mode", replies.R500_SYNTAX),
    ("552 Error: Too much mail data", replies.R552_TOO_BIG),
    ("503 Error: send ", replies.R503_NEED_EHLO),
    ("501 Syntax: HELO", replies.Reply(501, "5.5.4", "Syntax: HELO hostname")),
    ("501 Syntax: EHLO", replies.Reply(501, "5.5.4", "Syntax: EHLO hostname")),
)
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}( |$)")


def with_enhanced_code(status: str) -> str:
    """Every 2xx/4xx/5xx reply but the greeting gets an RFC 3463 code."""
    code = status[:3]
    if not code.isdigit() or code in ("220", "354") or code[0] not in "245":
        return status
    if status[3:4] != " " or "\n" in status:
        return status  # multi-line: EHLO, or relayed from the MTA as it wrote it
    if _ENHANCED.match(status[4:]):
        return status
    for prefix, reply in _CANNED:
        if status.startswith(prefix):
            return str(reply)
    return f"{code} {code[0]}.0.0 {status[4:]}"


@dataclass(frozen=True)
class SubmitSettings:
    hostname: str
    upstream_path: str
    upstream_timeout: float
    size_limit: int
    recipient_limit: int
    rules: SenderRules
    protocol: str = "xclient"   # submit_upstream_protocol: xclient | header


@dataclass
class Transaction:
    sender: str
    params: list[str]
    rcpthdr: bool
    recipients: list[str] = field(default_factory=list)
    rcpt_params: list[list[str]] = field(default_factory=list)


class SubmitSession(Session):
    def __init__(self, loop):
        super().__init__(loop)
        self.sid = secrets.token_hex(5).upper()
        self.pid = self.uid = self.gid = -1
        self.login = ""
        self.upstream: Upstream | None = None
        self.txn: Transaction | None = None


def with_identity_field(content: bytes, login: str) -> bytes:
    """The Sendmail hand-off: the client's own X-Sendgate-Login: fields out,
    ours (the login as xtext) on top.  A message without header fields gets
    the empty line after ours, so that its first line, whatever it is (even
    white space, which would continue our field), stays body."""
    header, _ = split_message(content)
    content = delete_fields(content, find(header, IDENTITY_FIELD))
    field = f"{IDENTITY_FIELD}: {xtext(login)}\r\n".encode("ascii")
    if not header and not content.startswith((b"\r\n", b"\n")):
        field += b"\r\n"
    return field + content


def peer_credentials(transport) -> tuple[int, int, int]:
    sock = transport.get_extra_info("socket")
    fmt = "3i"
    return struct.unpack(fmt, sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt)))


def login_for(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


class _Delegate:
    """aiosmtpd wants a handler object.  Every command is handled in
    SubmitSMTP; DATA comes back here only because aiosmtpd's DATA reader
    calls the handler's handle_DATA with the finished message."""

    async def handle_DATA(self, server: "SubmitSMTP", session, envelope) -> str:
        return await server.message_received()


class SubmitSMTP(SMTP):
    # aiosmtpd sizes its StreamReader from this class attribute: lines longer
    # than 1 MiB (command or data) are answered "500 5.5.2 line too long".
    line_length_limit = 1 << 20

    def __init__(self, settings: SubmitSettings, timeout: float):
        self.settings = settings
        super().__init__(_Delegate(), hostname=settings.hostname, ident="ESMTP sendgate",
                         data_size_limit=settings.size_limit, enable_SMTPUTF8=True,
                         decode_data=False, timeout=timeout)
        # aiosmtpd keeps command_size_limits at class level, shared by every
        # connection; give each session its own.
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)
        self.command_size_limits.update(MAIL=2048, RCPT=2048)

    # --- connection ------------------------------------------------------

    def _create_session(self) -> SubmitSession:
        return SubmitSession(self.loop)

    @property
    def s(self) -> SubmitSession:
        return self.session  # type: ignore[return-value]

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.s.pid, self.s.uid, self.s.gid = peer_credentials(transport)
        self.s.login = login_for(self.s.uid)
        self.s.peer = f"uid={self.s.uid}"

    def connection_lost(self, error) -> None:
        if self.s.upstream is not None:
            self.s.upstream.close()
        log.info("%s: disconnect uid=%d", self.s.sid, self.s.uid)
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        # Open the MTA session before greeting, so that a dead MTA is a 421
        # at once rather than after the client has sent its message.
        s = self.s
        log.info("%s: connect uid=%d pid=%d login=%s", s.sid, s.uid, s.pid, quote(s.login) or "?")
        if not s.login:
            log.info("%s: reject: uid=%d has no login name", s.sid, s.uid)
            await self.push(str(replies.R554_NOT_AUTHORIZED.format(login=f"uid {s.uid}")))
            self.transport.close()
            return
        try:
            upstream = await Upstream.connect(self.settings.upstream_path, self.settings.upstream_timeout)
            refusal = await upstream.handshake(self.hostname, s.login, self.settings.protocol)
        except UpstreamError as err:
            log.warning("%s: uid=%d login=%s: mail system unavailable: %s", s.sid, s.uid, s.login, err)
            await self.push(str(replies.R421_UNAVAILABLE.format(host=self.hostname)))
            self.transport.close()
            return
        if refusal is not None:
            log.warning("%s: uid=%d login=%s: mail system refused the session: %s",
                        s.sid, s.uid, s.login, quote(str(refusal)))
            upstream.close()
            await self.push(str(replies.R421_UNAVAILABLE.format(host=self.hostname)))
            self.transport.close()
            return
        s.upstream = upstream
        await super()._handle_client()

    async def push(self, status) -> None:
        if isinstance(status, str):
            status = with_enhanced_code(status)
        await super().push(status)

    async def reply(self, reply: Reply) -> None:
        await self.push(str(reply))

    async def upstream_lost(self, err: UpstreamError) -> None:
        log.warning("%s: uid=%d login=%s: lost the mail system: %s", self.s.sid, self.s.uid, self.s.login, err)
        await self.reply(replies.R421_UNAVAILABLE.format(host=self.hostname))
        self.transport.close()

    # --- session commands ---------------------------------------------------

    async def smtp_EHLO(self, hostname: str) -> None:
        if not hostname:
            await self.push("501 Syntax: EHLO hostname")
            return
        await self._reset_transaction()
        self.s.host_name = hostname
        self.s.extended_smtp = True
        caps = self.s.upstream.capabilities
        size = min(x for x in (self.settings.size_limit, caps.size) if x)
        lines = [self.hostname, "PIPELINING", f"SIZE {size}"]
        lines += ["8BITMIME"] if caps.eightbit else []
        lines += ["SMTPUTF8"] if caps.smtputf8 else []
        lines += ["DSN"] if caps.dsn else []
        lines += ["ENHANCEDSTATUSCODES", RCPTHDR]
        await self.push("\r\n".join(f"250-{x}" for x in lines[:-1]) + f"\r\n250 {lines[-1]}")

    async def smtp_HELO(self, hostname: str) -> None:
        if not hostname:
            await self.push("501 Syntax: HELO hostname")
            return
        await self._reset_transaction()
        self.s.host_name = hostname
        self.s.extended_smtp = False
        await self.push(f"250 {self.hostname}")

    async def smtp_NOOP(self, arg: str) -> None:
        await self.reply(replies.R250_OK)

    async def smtp_RSET(self, arg: str) -> None:
        await self._reset_transaction()
        self._set_rset_state()
        await self.reply(replies.R250_OK)

    async def smtp_QUIT(self, arg: str) -> None:
        await self.reply(replies.R221_BYE)
        if self.s.upstream is not None:
            self.s.upstream.quit()
            self.s.upstream = None
        # As aiosmtpd's own QUIT: end this command loop, then the connection.
        self._handler_coroutine.cancel()
        self.transport.close()

    async def smtp_VRFY(self, arg: str) -> None:
        await self.reply(replies.R502_NOT_IMPLEMENTED)

    smtp_EXPN = smtp_AUTH = smtp_STARTTLS = smtp_HELP = smtp_VRFY

    async def _reset_transaction(self) -> None:
        txn, self.s.txn = self.s.txn, None
        if txn is not None and not txn.rcpthdr:
            try:
                await self.s.upstream.command("RSET")
            except UpstreamError as err:
                await self.upstream_lost(err)

    # --- the transaction ----------------------------------------------------

    async def smtp_MAIL(self, arg: str | None) -> None:
        s = self.s
        if not s.host_name:
            await self.reply(replies.R503_NEED_EHLO)
            return
        if s.txn is not None:
            await self.reply(replies.R503_NESTED_MAIL)
            return
        try:
            path, params = parse_path_argument(arg or "", "FROM:")
        except SyntaxProblem:
            await self.reply(replies.R501_MAIL_SYNTAX)
            return
        refusal = self._check_mail_params(params)
        if refusal is not None:
            await self.reply(refusal)
            return
        rcpthdr = any(param_name(p) == RCPTHDR for p in params)
        params = [p for p in params if param_name(p) != RCPTHDR]
        sender = qualify(path, self.settings.rules.domain)
        refusal = check_envelope_sender(s.login, sender, self.settings.rules)
        if refusal is not None:
            log.info("%s: reject: MAIL from uid=%d login=%s: %s; from=<%s>",
                     s.sid, s.uid, s.login, refusal, quote(sender))
            await self.reply(refusal)
            return
        txn = Transaction(sender, params, rcpthdr)
        if rcpthdr:
            s.txn = txn
            self.envelope.mail_from = sender
            await self.reply(replies.R250_RCPTHDR)
            return
        try:
            reply = await s.upstream.command(" ".join([f"MAIL FROM:<{sender}>", *params]))
        except UpstreamError as err:
            await self.upstream_lost(err)
            return
        if reply.ok:
            s.txn = txn
            self.envelope.mail_from = sender
        await self.push(str(reply))

    def _check_mail_params(self, params: list[str]) -> Reply | None:
        for p in params:
            name, value = param_name(p), param_value(p)
            if name not in MAIL_PARAMETERS and name != RCPTHDR:
                return replies.R555_UNSUPPORTED_PARAMETER.format(param=quote(p, 64))
            if name == "SIZE":
                if not (value or "").isdigit():
                    return replies.R501_BAD_PARAMETER.format(param="SIZE")
                if int(value) > self.settings.size_limit:
                    return replies.R552_TOO_BIG
            elif name in ("SMTPUTF8", RCPTHDR) and value is not None:
                return replies.R501_BAD_PARAMETER.format(param=name)
            elif name == "BODY" and (value or "").upper() not in ("7BIT", "8BITMIME"):
                return replies.R501_BAD_PARAMETER.format(param="BODY")
        return None

    async def smtp_RCPT(self, arg: str | None) -> None:
        s = self.s
        txn = s.txn
        if txn is None:
            await self.reply(replies.R503_NEED_MAIL)
            return
        try:
            path, params = parse_path_argument(arg or "", "TO:")
        except SyntaxProblem:
            await self.reply(replies.R501_RCPT_SYNTAX)
            return
        if not path:
            await self.reply(replies.R501_BAD_ADDRESS)
            return
        for p in params:
            if param_name(p) not in RCPT_PARAMETERS:
                await self.reply(replies.R555_UNSUPPORTED_PARAMETER.format(param=quote(p, 64)))
                return
        if len(txn.recipients) >= self.settings.recipient_limit:
            await self.reply(replies.R452_TOO_MANY_RECIPIENTS)
            return
        rcpt = qualify(path, self.settings.rules.domain)
        if txn.rcpthdr:
            reply_wire = str(replies.R250_RECIPIENT_OK)
        else:
            try:
                reply = await s.upstream.command(" ".join([f"RCPT TO:<{rcpt}>", *params]))
            except UpstreamError as err:
                await self.upstream_lost(err)
                return
            if not reply.ok:
                await self.push(str(reply))
                return
            reply_wire = str(reply)
        txn.recipients.append(rcpt)
        txn.rcpt_params.append(params)
        self.envelope.rcpt_tos.append(rcpt)
        await self.push(reply_wire)

    async def smtp_DATA(self, arg: str) -> None:
        txn = self.s.txn
        if txn is None:
            await self.reply(replies.R503_NEED_MAIL)
            return
        if not txn.recipients and not txn.rcpthdr:
            await self.reply(replies.R503_NEED_RCPT)
            return
        if txn.rcpthdr and not self.envelope.rcpt_tos:
            # aiosmtpd's DATA insists on a recipient; an RCPTHDR transaction
            # has none yet.  A placeholder lets its reader run; the recipients
            # used are txn.recipients plus the header's.
            self.envelope.rcpt_tos.append(RCPTHDR)
        await super().smtp_DATA(arg)
        if self.s.txn is txn:
            # aiosmtpd answered without calling us (line or size overflow).
            self.s.txn = None
            if not txn.rcpthdr:
                await self._abandon_upstream_transaction()

    async def _abandon_upstream_transaction(self) -> None:
        try:
            await self.s.upstream.command("RSET")
        except UpstreamError as err:
            log.warning("%s: RSET after a refused message: %s", self.s.sid, err)

    async def message_received(self) -> str:
        s = self.s
        txn, s.txn = s.txn, None
        content = self.envelope.original_content
        try:
            reply, nrcpt, content = await self._deliver(txn, content)
        except UpstreamError as err:
            log.warning("%s: uid=%d login=%s from=<%s>: lost the mail system during DATA: %s",
                        s.sid, s.uid, s.login, quote(txn.sender), err)
            s.upstream.close()
            self.loop.call_soon(self.transport.close)
            return str(replies.R451_UPSTREAM_LOST)
        log.info("%s: uid=%d login=%s from=<%s> nrcpt=%d size=%d%s: %s: %s",
                 s.sid, s.uid, s.login, quote(txn.sender), nrcpt, len(content),
                 " rcpthdr" if txn.rcpthdr else "", "accepted" if reply.ok else "rejected", quote(str(reply)))
        return str(reply)

    async def _deliver(self, txn: Transaction, content: bytes):
        """Send the message upstream; return (reply, recipient count, content sent)."""
        up = self.s.upstream
        if txn.rcpthdr:
            header, _ = split_message(content)
            try:
                found = recipients_from_header(header, self.settings.rules.domain, txn.recipients)
            except HeaderError as err:
                return replies.R554_HEADER.format(detail=quote(str(err))), 0, content
            if len(found.recipients) > self.settings.recipient_limit:
                return replies.R452_TOO_MANY_RECIPIENTS, len(found.recipients), content
            content = delete_fields(content, found.remove)
            refusal = await self._replay_envelope(txn, found.recipients)
            if refusal is not None:
                return refusal, len(found.recipients), content
            nrcpt = len(found.recipients)
        else:
            nrcpt = len(txn.recipients)
        if self.settings.protocol == "header":
            content = with_identity_field(content, self.s.login)
        reply = await up.command("DATA")
        if reply.code != 354:
            return reply, nrcpt, content
        return await up.message(content), nrcpt, content

    async def _replay_envelope(self, txn: Transaction, recipients: tuple[str, ...]) -> Reply | None:
        """MAIL and one RCPT per recipient for an RCPTHDR transaction.  The
        client never saw per-recipient replies, so one refused recipient
        fails the whole message: 5xx as 554, 4xx as 451 (DESIGN.md §6.7)."""
        up = self.s.upstream
        reply = await up.command(" ".join([f"MAIL FROM:<{txn.sender}>", *txn.params]))
        if not reply.ok:
            return reply
        params = dict(zip(txn.recipients, txn.rcpt_params))
        for rcpt in recipients:
            reply = await up.command(" ".join([f"RCPT TO:<{rcpt}>", *params.get(rcpt, [])]))
            if reply.ok:
                continue
            await up.command("RSET")
            template = replies.R451_RECIPIENT_DEFERRED if reply.code < 500 else replies.R554_RECIPIENT_REJECTED
            return template.format(address=quote(rcpt, 100), detail=quote(reply.text, 200))
        return None
