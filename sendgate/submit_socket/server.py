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

import asyncio
import collections
import grp
import logging
import os
import pwd
import re
import secrets
import socket
import struct
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Session, login_always_fail

from sendgate import replies
from sendgate.daemon import quote
from sendgate.metrics import Metrics
from sendgate.policy.admission import AdmissionRules, Peer, may_submit, rate_refusal, session_refusal
from sendgate.policy.envelope import HeaderError, recipients_from_header
from sendgate.policy.handoff import IDENTITY_FIELD
from sendgate.policy.message import delete_fields, find, split_message
from sendgate.policy.submission import header_problem
from sendgate.policy.sender import Mismatch, SenderRules, check_envelope_sender, qualify
from sendgate.replies import Reply
from sendgate.smtpwire import SyntaxProblem, param_name, param_value, parse_path_argument, xtext
from sendgate.submit_socket.upstream import CacheLimits, Route, Upstream, UpstreamError, UpstreamPool, UpstreamRefused
from sendgate.userdb import login_of

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
    admission: AdmissionRules = AdmissionRules()
    command_length_limit: int = 2048
    session_timeout: float = 3600
    protocol: str = "xclient"   # submit_upstream_protocol: xclient | header
    cache: CacheLimits = CacheLimits()

    @property
    def route(self) -> Route:
        return Route(self.upstream_path, self.upstream_timeout, self.hostname, self.protocol)


class Registry:
    """The sessions of one daemon: counts for the limits, message times for
    the rate limit, and the shutdown state.  Shared by every connection."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        self.sessions: set["SubmitSMTP"] = set()
        self.per_uid: collections.Counter[int] = collections.Counter()
        self.recent: dict[int, collections.deque[float]] = collections.defaultdict(collections.deque)
        self.closing = False
        self.empty = asyncio.Event()
        self.empty.set()
        self.upstreams = UpstreamPool()

    def add(self, server: "SubmitSMTP") -> None:
        self.sessions.add(server)
        self.per_uid[server.s.uid] += 1
        self.metrics.sessions(+1)
        self.empty.clear()

    def remove(self, server: "SubmitSMTP") -> None:
        if server in self.sessions:
            self.sessions.discard(server)
            self.metrics.sessions(-1)
            self.per_uid[server.s.uid] -= 1
            if self.per_uid[server.s.uid] <= 0:
                del self.per_uid[server.s.uid]
        if not self.sessions:
            self.empty.set()

    def message_times(self, uid: int, window: float, now: float) -> collections.deque[float]:
        times = self.recent[uid]
        while times and now - times[0] >= window:
            times.popleft()
        return times

    def shut_down(self) -> None:
        """Refuse new sessions; end idle ones now, busy ones after their message."""
        self.closing = True
        self.upstreams.close()
        for server in list(self.sessions):
            if server.idle:
                server.close_for_shutdown()


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
        self.in_data = False
        self.who = Peer(-1, "", frozenset())


def outcome_of(reply) -> str:
    return "accepted" if reply.ok else ("tempfail" if reply.code < 500 else "rejected")


def valid_helo(name: str | None) -> bool:
    """A HELO/EHLO argument: present, printable (so valid UTF-8 too: the
    bytes that are not come in as unprintable surrogates)."""
    return bool(name) and name.isprintable()


def valid_utf8(path: str) -> bool:
    return not any("\udc80" <= c <= "\udcff" for c in path)


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


def groups_of(login: str, gid: int) -> frozenset[str]:
    """The peer's groups: its process gid (from SO_PEERCRED, which carries no
    supplementary groups) and the login's groups in the user database."""
    if not login:
        return frozenset()
    names = set()
    for g in {*os.getgrouplist(login, pwd.getpwnam(login).pw_gid), gid}:
        try:
            names.add(grp.getgrgid(g).gr_name)
        except KeyError:
            continue
    return frozenset(names)


class _Delegate:
    """aiosmtpd wants a handler object.  Every command is handled in
    SubmitSMTP; DATA comes back here only because aiosmtpd's DATA reader
    calls the handler's handle_DATA with the finished message."""

    async def handle_DATA(self, server: "SubmitSMTP", session, envelope) -> str:
        return await server.message_received()


_DELEGATE = _Delegate()


class SubmitSMTP(SMTP):
    # aiosmtpd sizes its StreamReader from this class attribute: lines longer
    # than 1 MiB (command or data) are answered "500 5.5.2 line too long".
    line_length_limit = 1 << 20

    def __init__(self, settings: SubmitSettings, timeout: float, registry: Registry | None = None):
        self.settings = settings
        self.registry = registry if registry is not None else Registry()
        self._init_protocol(settings, timeout)
        # aiosmtpd keeps command_size_limits at class level, shared by every
        # connection; give each session its own.
        limit = settings.command_length_limit
        self.command_size_limit = limit
        self.command_size_limits = collections.defaultdict(lambda: limit)
        self._session_timer: asyncio.TimerHandle | None = None

    # Our commands, found once (after the class): aiosmtpd's own __init__
    # finds them (and its AUTH mechanisms and the handler's hooks) with dir()
    # and inspect.getmembers() for every connection, a seventh of this
    # daemon's work per session (bench/).
    _COMMANDS: tuple[str, ...] = ()

    def _init_protocol(self, settings: SubmitSettings, timeout: float) -> None:
        """What SMTP.__init__(_DELEGATE, hostname=, ident=, data_size_limit=,
        enable_SMTPUTF8=True, decode_data=False, timeout=) sets, without its
        per-connection introspection: no TLS, no AUTH (smtp_AUTH refuses),
        no proxy protocol, no call limits, one hook (DATA).
        tests/test_submit_daemon.py holds this to aiosmtpd's own result."""
        self.__ident__ = "ESMTP sendgate"
        self.loop = asyncio.get_running_loop()
        asyncio.StreamReaderProtocol.__init__(
            self, asyncio.StreamReader(loop=self.loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected, loop=self.loop)
        self.event_handler = _DELEGATE
        self.data_size_limit = settings.size_limit
        self.enable_SMTPUTF8 = True
        self._decode_data = False
        self.hostname = settings.hostname
        self.tls_context = None
        self.require_starttls = None
        self._timeout_duration = timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = True
        self._proxy_timeout = None
        self._auth_callback = login_always_fail
        self._authenticator = None
        self._auth_required = False
        self._auth_methods = {}
        self._handle_hooks = {"DATA": _DELEGATE.handle_DATA}
        self._ehlo_hook_ver = None
        self._smtp_methods = {name: getattr(self, "smtp_" + name) for name in self._COMMANDS}
        self._enforce_call_limit = False

    @property
    def idle(self) -> bool:
        """Between transactions: nothing is lost by ending the session now."""
        return self.s.txn is None and not self.s.in_data

    def close_for_shutdown(self) -> None:
        self._say_and_close(replies.R421_SHUTDOWN.format(host=self.hostname))

    def _session_expired(self) -> None:
        log.info("%s: uid=%d login=%s: session time limit (submit_session_timeout) exceeded",
                 self.s.sid, self.s.uid, self.s.login)
        self._say_and_close(replies.R421_SESSION_TIME.format(host=self.hostname))

    def _say_and_close(self, reply: Reply) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(str(reply).encode() + b"\r\n")
            self.transport.close()

    # --- connection ------------------------------------------------------

    def _create_session(self) -> SubmitSession:
        return SubmitSession(self.loop)

    @property
    def s(self) -> SubmitSession:
        return self.session  # type: ignore[return-value]

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        s = self.s
        s.pid, s.uid, s.gid = self.credentials(transport)
        s.login = login_of(s.uid)
        admission = self.settings.admission
        # The user database's groups are looked up only when a rule names groups.
        groups = groups_of(s.login, s.gid) if admission.allow_groups or admission.deny_groups else frozenset()
        s.who = Peer(s.uid, s.login, groups)
        s.peer = f"uid={s.uid}"

    def credentials(self, transport) -> tuple[int, int, int]:
        """pid, uid, gid of the peer: the kernel's (retry.py gives a spool entry's owner)."""
        return peer_credentials(transport)

    def connection_lost(self, error) -> None:
        self._release_upstream()
        if self._session_timer is not None:
            self._session_timer.cancel()
        self.registry.remove(self)
        log.info("%s: disconnect uid=%d", self.s.sid, self.s.uid)
        super().connection_lost(error)

    def _admission(self) -> tuple[Reply, str] | None:
        s = self.s
        if self.registry.closing:
            return replies.R421_SHUTDOWN.format(host=self.hostname), "shutting down"
        peer = self.peer()
        refusal = may_submit(peer, self.settings.admission)
        if refusal is None:
            refusal = session_refusal(peer, self.settings.admission, self.registry.per_uid[s.uid],
                                      len(self.registry.sessions), self.hostname)
        return refusal

    def peer(self) -> Peer:
        return self.s.who

    async def _handle_client(self) -> None:
        # Open the MTA session before greeting, so that a dead MTA is a 421
        # at once rather than after the client has sent its message.
        s = self.s
        log.info("%s: connect uid=%d pid=%d login=%s", s.sid, s.uid, s.pid, quote(s.login) or "?")
        refusal = self._admission()
        if refusal is not None:
            reply, rule = refusal
            log.info("%s: reject: connect from uid=%d login=%s: %s (%s)", s.sid, s.uid, s.login or "?", reply, rule)
            await self.push(str(reply))
            self.transport.close()
            return
        self.registry.add(self)
        self._session_timer = self.loop.call_later(self.settings.session_timeout, self._session_expired)
        try:
            upstream, how = await self.registry.upstreams.acquire(self.settings.route, s.login)
        except UpstreamRefused as err:
            log.warning("%s: uid=%d login=%s: mail system refused the session: %s",
                        s.sid, s.uid, s.login, quote(str(err.reply)))
            await self.push(str(replies.R421_UNAVAILABLE.format(host=self.hostname)))
            self.transport.close()
            return
        except UpstreamError as err:
            log.warning("%s: uid=%d login=%s: mail system unavailable: %s", s.sid, s.uid, s.login, err)
            await self.push(str(replies.R421_UNAVAILABLE.format(host=self.hostname)))
            self.transport.close()
            return
        self.registry.metrics.upstream_session(how)
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
        if not valid_helo(hostname):
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
        if not valid_helo(hostname):
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
        self._release_upstream()
        # As aiosmtpd's own QUIT: end this command loop, then the connection.
        self._handler_coroutine.cancel()
        self.transport.close()

    def _release_upstream(self) -> None:
        """The client is gone: its MTA session goes back to the pool when no
        transaction is open (the pool checks the rest), else it ends."""
        up, self.s.upstream = self.s.upstream, None
        if up is None:
            return
        if self.idle and not self.registry.closing:
            self.registry.upstreams.release(up, self.settings.cache)
        else:
            up.quit()

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
        if not valid_utf8(path):
            await self.reply(replies.R501_BAD_SENDER)
            return
        refusal = self._check_mail_params(params)
        if refusal is not None:
            await self.reply(refusal)
            return
        rcpthdr = any(param_name(p) == RCPTHDR for p in params)
        params = [p for p in params if param_name(p) != RCPTHDR]
        sender = qualify(path, self.settings.rules.domain)
        # Refused here only when the action is reject; otherwise the milter
        # rewrites the sender or names the user in Sender:, as for network mail.
        refusal = check_envelope_sender(s.login, sender, self.settings.rules)
        if refusal is not None and self.settings.rules.envelope_mismatch is Mismatch.REJECT:
            log.info("%s: reject: MAIL from uid=%d login=%s: %s; from=<%s>",
                     s.sid, s.uid, s.login, refusal, quote(sender))
            self.registry.metrics.message("submit", "local", "rejected")
            await self.reply(refusal)
            return
        refusal = rate_refusal(self.peer(), self.settings.admission, self._recent(), self.loop.time())
        if refusal is not None:
            log.info("%s: reject: MAIL from uid=%d login=%s: %s (submit_message_rate_limit)",
                     s.sid, s.uid, s.login, refusal)
            self.registry.metrics.message("submit", "local", "tempfail")
            await self.reply(refusal)
            return
        txn = Transaction(sender, params, rcpthdr)
        if rcpthdr:
            s.txn = txn
            self.envelope.mail_from = sender
            await self.reply(replies.R250_RCPTHDR)
            return
        try:
            reply = await self.mail_upstream(" ".join([f"MAIL FROM:<{sender}>", *params]))
        except UpstreamError as err:
            await self.upstream_lost(err)
            return
        if reply.ok:
            s.txn = txn
            self.envelope.mail_from = sender
        await self.push(str(reply))

    async def mail_upstream(self, line: str) -> Reply:
        """MAIL to the MTA.  The first command on a kept MTA session is where
        a session the MTA dropped while it waited shows (closed, a 421 for
        its idle timeout, a 4xx from a milter connection that died with its
        milter): then MAIL goes once more, on a new session, before the
        client hears anything.  Raises UpstreamError."""
        s = self.s
        up = s.upstream
        if not up.untried:
            return await up.command(line)
        up.untried = False
        try:
            reply = await up.command(line)
            if reply.code < 400:
                return reply
            why = quote(str(reply))
        except UpstreamError as err:
            why = str(err)
        log.info("%s: uid=%d login=%s: kept MTA session failed (%s); trying a new one", s.sid, s.uid, s.login, why)
        up.close()
        s.upstream = await self.registry.upstreams.open(self.settings.route, s.login)
        self.registry.metrics.upstream_session("new")
        return await s.upstream.command(line)

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
        if not path or not valid_utf8(path):
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
        self.s.in_data = True
        try:
            await super().smtp_DATA(arg)
        finally:
            self.s.in_data = False
            if self.registry.closing:
                # Shutting down: this message was the last; the reply to it
                # is already written, the 421 follows it.
                self.loop.call_soon(self.close_for_shutdown)
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
            self.registry.metrics.message("submit", "local", "tempfail")
            return str(replies.R451_UPSTREAM_LOST)
        outcome = outcome_of(reply)
        log.info("%s: uid=%d login=%s from=<%s> nrcpt=%d size=%d%s: %s: %s",
                 s.sid, s.uid, s.login, quote(txn.sender), nrcpt, len(content),
                 " rcpthdr" if txn.rcpthdr else "", outcome, quote(str(reply)))
        if reply.ok:
            self._recent().append(self.loop.time())
        self.registry.metrics.message("submit", "local", outcome)
        return str(reply)

    def _recent(self) -> collections.deque[float]:
        return self.registry.message_times(self.s.uid, self.settings.admission.rate_window, self.loop.time())

    async def _deliver(self, txn: Transaction, content: bytes):
        """Send the message upstream; return (reply, recipient count, content sent)."""
        header, _ = split_message(content)
        problem = header_problem(header)
        if problem is None and b"\x00" in content:
            problem = replies.R554_NUL_IN_MESSAGE  # RFC 5322 §2.3; MTAs mangle it
        if problem is not None:
            if not txn.rcpthdr:
                await self.s.upstream.command("RSET")  # the MTA's transaction was already open
            return problem, len(txn.recipients), content
        if txn.rcpthdr:
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
        started = self.loop.time()
        reply = await self.s.upstream.transfer(content)  # replaced, maybe, by mail_upstream()
        self.registry.metrics.upstream_time(self.loop.time() - started)
        return reply, nrcpt, content

    async def _replay_envelope(self, txn: Transaction, recipients: tuple[str, ...]) -> Reply | None:
        """MAIL and one RCPT per recipient for an RCPTHDR transaction.  The
        client never saw per-recipient replies, so one refused recipient
        fails the whole message: 5xx as 554, 4xx as 451 (DESIGN.md §6.7)."""
        reply = await self.mail_upstream(" ".join([f"MAIL FROM:<{txn.sender}>", *txn.params]))
        if not reply.ok:
            return reply
        up = self.s.upstream
        params = dict(zip(txn.recipients, txn.rcpt_params))
        for rcpt in recipients:
            reply = await up.command(" ".join([f"RCPT TO:<{rcpt}>", *params.get(rcpt, [])]))
            if reply.ok:
                continue
            await up.command("RSET")
            template = replies.R451_RECIPIENT_DEFERRED if reply.code < 500 else replies.R554_RECIPIENT_REJECTED
            return template.format(address=quote(rcpt, 100), detail=quote(reply.text, 200))
        return None


SubmitSMTP._COMMANDS = tuple(sorted(name[5:] for name in dir(SubmitSMTP) if name.startswith("smtp_")))
