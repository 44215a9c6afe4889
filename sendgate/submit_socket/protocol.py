"""The submit socket's SMTP side (SubmitSMTP): aiosmtpd on AF_UNIX, one
client session each, verbs kept short: check (sendgate.smtpwire for the
syntax, sendgate.policy for the rest), then proceed (forward.py).

The client's identity comes from the kernel (peer.py) when it connects.
aiosmtpd supplies command parsing and the idle timer.  This subclass
replaces MAIL, RCPT, EHLO, DATA and the commands we do not offer, because
stock aiosmtpd upper-cases and refuses the parameters a submission client
needs, and gives every reply it makes itself an enhanced status code
(sendgate.replies.with_enhanced_code).  Its DATA reader (which ends data
only at CRLF.CRLF) keeps the message in one buffer and within the data
budget of sendgate.policy.admission.

What a client holds (docs/threat-model.md, "Denial of service"): before
MAIL and between transactions, its socket and the bytes read ahead
(READ_AHEAD), with submit_idle_timeout; in a transaction, one of its
uid's submit_transactions_per_uid, an MTA session (forward.py) and its
message data, with submit_timeout.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from typing import Awaitable

from aiosmtpd.smtp import SMTP, Session, login_always_fail

from sendgate import replies
from sendgate.daemon import quote
from sendgate.policy.admission import Peer, data_refusal, may_submit, session_refusal, transaction_refusal
from sendgate.policy.refusals import outcome
from sendgate.policy.transaction import RCPTHDR, Refusal, check_mail, check_rcpt
from sendgate.replies import Reply
from sendgate.policy.message import valid_utf8
from sendgate.smtpwire import SyntaxProblem, parse_path_argument, valid_helo
from sendgate.submit_socket.forward import Forwarder, Transaction
from sendgate.submit_socket.peer import identify, peer_credentials
from sendgate.submit_socket.registry import Registry
from sendgate.submit_socket.settings import SubmitSettings
from sendgate.submit_socket.upstream import UpstreamError, UpstreamRefused

log = logging.getLogger("sendgate/submit")
# aiosmtpd logs every command line (message data included) at INFO.
logging.getLogger("mail.log").setLevel(logging.WARNING)


class SubmitSession(Session):
    def __init__(self, loop):
        super().__init__(loop)
        self.sid = secrets.token_hex(5).upper()
        self.pid = self.gid = -1
        self.who = Peer(-1, "", frozenset())
        self.forward: Forwarder | None = None
        self.txn: Transaction | None = None
        self.in_data = False
        self.slot = False   # one of the uid's transactions in progress is this session's (Registry.begin)

    @property
    def uid(self) -> int:
        return self.who.uid

    @property
    def login(self) -> str:
        return self.who.login


class _Delegate:
    """aiosmtpd wants a handler object.  Every command is handled in
    SubmitSMTP; DATA comes back here only because aiosmtpd's DATA reader
    calls the handler's handle_DATA with the finished message."""

    async def handle_DATA(self, server: "SubmitSMTP", session, envelope) -> str:
        return await server.message_received()


_DELEGATE = _Delegate()


# Bytes read from a client before the daemon asks for them: beyond it the
# socket is not read until the buffer is below it again (asyncio's own
# threshold is twice the line limit, 2 MiB).  A line is read whole while
# it is awaited, up to the reader's limit: submit_command_length_limit (at
# least READ_AHEAD) for commands, SubmitSMTP.line_length_limit in DATA.
READ_AHEAD = 1 << 16
# Unfinished message data is counted in the data budget in steps of this.
DATA_STEP = 1 << 16


class _ClientInput(asyncio.StreamReader):
    """The client's side of a session.  At its end of input (a close or a
    half-close after the last command) the command loop ends only once
    every complete line before it has been read and acted on: aiosmtpd
    cancels the loop as soon as EOF arrives instead, which drops the
    commands still buffered and, with them, a pipelined message
    (SubmitSMTP.eof_received).  Ending it is a cancel, as aiosmtpd's own
    end of a session is; an unfinished line or message is discarded.
    Reading ahead stops at READ_AHEAD bytes."""

    async def readuntil(self, separator=b"\n"):
        try:
            return await super().readuntil(separator)
        except asyncio.IncompleteReadError:
            raise asyncio.CancelledError from None

    def feed_data(self, data: bytes) -> None:
        super().feed_data(data)
        if self._transport is not None and not self._paused and len(self._buffer) > READ_AHEAD:
            try:
                self._transport.pause_reading()
            except NotImplementedError:
                self._transport = None
            else:
                self._paused = True

    def _maybe_resume_transport(self) -> None:
        if self._paused and len(self._buffer) <= READ_AHEAD:
            self._paused = False
            self._transport.resume_reading()


class SubmitSMTP(SMTP):
    # Message lines longer than 1 MiB are answered "500 5.5.2 line too long"
    # (command lines beyond the reader's limit too: _command_limit).
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
        self._idle_timer = False   # the timer running is submit_idle_timeout's
        self._lost = False

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
        tests/test_submit_adapter.py holds this to aiosmtpd's own result."""
        self.__ident__ = "ESMTP sendgate"
        self.loop = asyncio.get_running_loop()
        self._command_limit = max(READ_AHEAD, settings.command_length_limit + 2)
        asyncio.StreamReaderProtocol.__init__(
            self, _ClientInput(loop=self.loop, limit=self._command_limit),
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
    def s(self) -> SubmitSession:
        return self.session  # type: ignore[return-value]

    @property
    def uid(self) -> int:
        return self.s.uid

    @property
    def idle(self) -> bool:
        """Between transactions: nothing is lost by ending the session now."""
        return self.s.txn is None and not self.s.in_data

    # --- the end of a session ---------------------------------------------

    def close_for_shutdown(self) -> None:
        self._say_and_close(replies.R421_SHUTDOWN.format(host=self.hostname))

    def _session_expired(self) -> None:
        log.info("%s: uid=%d login=%s: session time limit (submit_session_timeout) exceeded",
                 self.s.sid, self.s.uid, self.s.login)
        self._say_and_close(replies.R421_SESSION_TIME.format(host=self.hostname))

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timer, armed at each command: submit_idle_timeout
        outside a transaction, submit_timeout in one (or duration)."""
        if self._lost:
            return
        self._idle_timer = duration is None and self.idle and self.settings.idle_timeout < self._timeout_duration
        super()._reset_timeout(self.settings.idle_timeout if self._idle_timer else duration)

    def _timeout_cb(self) -> None:
        """aiosmtpd's idle timer ran out: as Postfix's smtpd does, say so
        before the close."""
        key = "submit_idle_timeout" if self._idle_timer else "submit_timeout"
        log.info("%s: uid=%d login=%s: timeout exceeded (%s)", self.s.sid, self.s.uid, self.s.login, key)
        self._say_and_close(replies.R421_TIMEOUT.format(host=self.hostname))

    def _say_and_close(self, reply: Reply) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(str(reply).encode() + b"\r\n")
            self.transport.close()

    # --- connection ------------------------------------------------------

    def _create_session(self) -> SubmitSession:
        return SubmitSession(self.loop)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        s = self.s
        me = identify(self.credentials(transport), self.settings.admission)
        s.pid, s.gid, s.who = me.pid, me.gid, me.peer
        s.peer = f"uid={s.uid}"
        s.forward = Forwarder(self.settings, self.registry, s.login, f"{s.sid}: uid={s.uid} login={s.login}")

    def eof_received(self) -> bool:
        """The client will send no more: let the reader see the end after
        what it holds (_ClientInput), keep the connection open for the
        replies still to come."""
        return asyncio.StreamReaderProtocol.eof_received(self)

    def credentials(self, transport) -> tuple[int, int, int]:
        """pid, uid, gid of the peer: the kernel's (retry.py gives a spool entry's owner)."""
        return peer_credentials(transport)

    def connection_lost(self, error) -> None:
        self._lost = True
        self._end_transaction(self.idle)
        if self._session_timer is not None:
            self._session_timer.cancel()
        self.registry.remove(self)
        log.info("%s: disconnect uid=%d", self.s.sid, self.s.uid)
        super().connection_lost(error)

    def _admission(self) -> tuple[Reply, str] | None:
        if self.registry.closing:
            return replies.R421_SHUTDOWN.format(host=self.hostname), "shutting down"
        refusal = may_submit(self.s.who, self.settings.admission)
        if refusal is None:
            refusal = session_refusal(self.s.who, self.settings.admission, self.registry.per_uid[self.s.uid],
                                      len(self.registry.sessions), self.hostname)
        return refusal

    async def _handle_client(self) -> None:
        # Know the MTA's capabilities before greeting (a session only when
        # they are not known: UpstreamPool.ready), so that a dead MTA is a
        # 421 at once rather than after the client has sent its message.
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
            await s.forward.ready()
        except UpstreamRefused as err:
            log.warning("%s: uid=%d login=%s: mail system refused the session: %s",
                        s.sid, s.uid, s.login, quote(str(err.reply)))
            await self._unavailable()
            return
        except UpstreamError as err:
            log.warning("%s: uid=%d login=%s: mail system unavailable: %s", s.sid, s.uid, s.login, err)
            await self._unavailable()
            return
        await super()._handle_client()

    async def _unavailable(self) -> None:
        await self.reply(replies.R421_UNAVAILABLE.format(host=self.hostname))
        self.transport.close()

    async def push(self, status) -> None:
        if isinstance(status, str):
            status = replies.with_enhanced_code(status)
        await super().push(status)

    async def reply(self, reply: Reply) -> None:
        await self.push(str(reply))

    async def _from_upstream(self, call: Awaitable[Reply]) -> Reply | None:
        """The MTA's reply to call; None when the MTA was lost, and the
        client has had its 421."""
        try:
            return await call
        except UpstreamError as err:
            log.warning("%s: uid=%d login=%s: lost the mail system: %s", self.s.sid, self.s.uid, self.s.login, err)
            await self._unavailable()
            return None

    async def _refuse(self, verb: str, refusal: Refusal) -> None:
        self._log_refusal(verb, refusal)
        await self.reply(refusal.reply)

    def _log_refusal(self, verb: str, refusal: Refusal) -> None:
        if refusal.log is not None:
            s = self.s
            log.info("%s: reject: %s from uid=%d login=%s: %s", s.sid, verb, s.uid, s.login, refusal.log)
            self.registry.metrics.message("submit", "local", outcome(refusal.reply))

    # --- session commands ---------------------------------------------------

    async def smtp_EHLO(self, hostname: str) -> None:
        if not valid_helo(hostname):
            await self.reply(replies.R501_EHLO_SYNTAX)
            return
        await self._reset_transaction()
        self.s.host_name = hostname
        self.s.extended_smtp = True
        caps = self.s.forward.capabilities
        size = min(x for x in (self.settings.size_limit, caps.size) if x)
        lines = [self.hostname, "PIPELINING", f"SIZE {size}"]
        lines += ["8BITMIME"] if caps.eightbit else []
        lines += ["SMTPUTF8"] if caps.smtputf8 else []
        lines += ["DSN"] if caps.dsn else []
        lines += ["ENHANCEDSTATUSCODES", RCPTHDR]
        await self.reply(Reply(250, tuple(lines)))

    async def smtp_HELO(self, hostname: str) -> None:
        if not valid_helo(hostname):
            await self.reply(replies.R501_HELO_SYNTAX)
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
        self._end_transaction(self.idle)
        # As aiosmtpd's own QUIT: end this command loop, then the connection.
        self._handler_coroutine.cancel()
        self.transport.close()

    async def smtp_VRFY(self, arg: str) -> None:
        await self.reply(replies.R502_NOT_IMPLEMENTED)

    smtp_EXPN = smtp_AUTH = smtp_STARTTLS = smtp_HELP = smtp_VRFY

    async def _reset_transaction(self) -> None:
        txn, self.s.txn = self.s.txn, None
        if txn is not None and not txn.rcpthdr:
            if await self._from_upstream(self.s.forward.reset()) is None:
                self.s.forward.close()
        self._end_transaction()

    def _end_transaction(self, clean: bool = True) -> None:
        """No transaction in progress (any more): its MTA session back to
        the pool (clean: no MTA transaction open) or ended, its slot
        free, the idle timer for the next command."""
        s = self.s
        s.txn = None
        s.forward.release(clean)
        if s.slot:
            s.slot = False
            self.registry.end(s.uid)
        self._reset_timeout()

    # --- the transaction ----------------------------------------------------

    async def smtp_MAIL(self, arg: str | None) -> None:
        s = self.s
        if not s.host_name:
            return await self.reply(replies.R503_NEED_EHLO)
        if s.txn is not None:
            return await self.reply(replies.R503_NESTED_MAIL)
        try:
            path, params = parse_path_argument(arg or "", "FROM:")
        except SyntaxProblem:
            return await self.reply(replies.R501_MAIL_SYNTAX)
        if not valid_utf8(path):
            return await self.reply(replies.R501_BAD_SENDER)
        settings = self.settings
        verdict = check_mail(path, params, s.who, settings.rules, settings.admission, settings.size_limit,
                             self._recent(), self.loop.time())
        if isinstance(verdict, Refusal):
            return await self._refuse("MAIL", verdict)
        registry = self.registry
        refusal = transaction_refusal(s.who, settings.admission, registry.transactions[s.uid],
                                      sum(registry.transactions.values()))
        if refusal is not None:
            reply, rule = refusal
            return await self._refuse("MAIL", Refusal(reply, f"{reply} ({rule})"))
        registry.begin(s.uid)
        s.slot = True
        self._reset_timeout(self._timeout_duration)  # the MTA may be slow to give a session
        # RCPTHDR: the MTA hears of the transaction at the end of data.
        reply = replies.R250_RCPTHDR if verdict.rcpthdr else await self._from_upstream(s.forward.mail(verdict))
        if reply is None:
            s.forward.close()
            return self._end_transaction(clean=False)
        if reply.positive:
            s.txn = Transaction(verdict)
            self.envelope.mail_from = verdict.sender
            self._reset_timeout()
        else:
            self._end_transaction()
        await self.reply(reply)

    async def smtp_RCPT(self, arg: str | None) -> None:
        s = self.s
        txn = s.txn
        if txn is None:
            return await self.reply(replies.R503_NEED_MAIL)
        try:
            path, params = parse_path_argument(arg or "", "TO:")
        except SyntaxProblem:
            return await self.reply(replies.R501_RCPT_SYNTAX)
        if not path or not valid_utf8(path):
            return await self.reply(replies.R501_BAD_ADDRESS)
        verdict = check_rcpt(path, params, len(txn.recipients), self.settings.recipient_limit,
                             self.settings.rules.domain)
        if isinstance(verdict, Refusal):
            return await self._refuse("RCPT", verdict)
        reply = replies.R250_RECIPIENT_OK if txn.rcpthdr else await self._from_upstream(s.forward.rcpt(verdict))
        if reply is None:
            return
        if reply.positive:
            txn.recipients.append(verdict.address)
            txn.rcpt_params.append(verdict.params)
            self.envelope.rcpt_tos.append(verdict.address)
        await self.reply(reply)

    async def smtp_DATA(self, arg: str) -> None:
        s = self.s
        txn = s.txn
        if txn is None:
            return await self.reply(replies.R503_NEED_MAIL)
        if not txn.recipients and not txn.rcpthdr:
            return await self.reply(replies.R503_NEED_RCPT)
        if arg:
            return await self.push("501 Syntax: DATA")
        s.in_data = True
        held = 0
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            self.envelope.original_content, problem, held = await self._read_data()
            if problem is None:
                status = await self.message_received()
                self._set_post_data_state()
                self._end_transaction()
                await self.push(status)
                return
            self._set_post_data_state()
            # Too big, a line too long, or over the data budget: refused.
            await self.reply(problem)
            s.txn = None
            if not txn.rcpthdr:
                try:
                    await s.forward.reset()
                except UpstreamError as err:
                    log.warning("%s: RSET after a refused message: %s", s.sid, err)
            self._end_transaction()
        finally:
            s.in_data = False
            self._free(held)
            if self.registry.closing:
                # Shutting down: this message was the last; the reply to it
                # is already written, the 421 follows it.
                self.loop.call_soon(self.close_for_shutdown)

    async def _read_data(self) -> tuple[bytes, Reply | None, int]:
        """The message after 354, to CRLF.CRLF, without the transparency
        dots, in one buffer counted in the data budget (DATA_STEP at a
        time): (the message, None, bytes counted) or, when it is too big,
        has a line too long or goes beyond the budget, (b"", the reply,
        0): the rest is read and dropped, as aiosmtpd's reader does."""
        s, reader, registry = self.s, self._reader, self.registry
        reader._limit = self.line_length_limit
        data = bytearray()
        size = held = 0
        problem: Reply | None = None
        fragment = False   # the line read is the tail of one too long
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\r\n")
                    tail, fragment = fragment, False
                except asyncio.LimitOverrunError as err:
                    line, tail, fragment = await reader.read(err.consumed), True, True
                    problem = problem or replies.R500_LINE_TOO_LONG
                if not tail and line == b".\r\n":
                    break
                size += len(line)
                if problem is None and size > self.data_size_limit:
                    problem = replies.R552_TOO_BIG
                elif problem is None and len(line) > self.line_length_limit:  # its CRLF beyond the limit
                    problem = replies.R500_LINE_TOO_LONG
                if problem is not None:
                    if data:
                        data, held = bytearray(), self._free(held)
                    continue
                data += line[1:] if line[:1] == b"." else line
                if len(data) > held:
                    step = max(DATA_STEP, len(data) - held)
                    refusal = data_refusal(s.who, self.settings.admission, registry.data_held[s.uid] + step,
                                           sum(registry.data_held.values()) + step)
                    if refusal is None:
                        registry.hold(s.uid, step)
                        held += step
                    else:
                        reply, rule = refusal
                        self._log_refusal("DATA", Refusal(reply, f"{reply} ({rule}); size={size}"))
                        problem = reply
                        data, held = bytearray(), self._free(held)
        except BaseException:
            self._free(held)
            raise
        finally:
            reader._limit = self._command_limit
        return (bytes(data), None, held) if problem is None else (b"", problem, 0)

    def _free(self, held: int) -> int:
        """Give back held bytes of the data budget; what is held now (0)."""
        self.registry.free(self.s.uid, held)
        return 0

    async def message_received(self) -> str:
        s = self.s
        txn, s.txn = s.txn, None
        try:
            done = await s.forward.deliver(txn, self.envelope.original_content)
        except UpstreamError as err:
            log.warning("%s: uid=%d login=%s from=<%s>: lost the mail system during DATA: %s",
                        s.sid, s.uid, s.login, quote(txn.mail.sender), err)
            s.forward.close()
            self.loop.call_soon(self.transport.close)
            self.registry.metrics.message("submit", "local", "tempfail")
            return str(replies.R451_UPSTREAM_LOST)
        finally:
            self.envelope.original_content = self.envelope.content = None
        said = outcome(done.reply)
        log.info("%s: uid=%d login=%s from=<%s> nrcpt=%d size=%d%s: %s: %s",
                 s.sid, s.uid, s.login, quote(txn.mail.sender), done.nrcpt, done.size,
                 " rcpthdr" if txn.rcpthdr else "", said, quote(str(done.reply)))
        if done.reply.positive:
            self._recent().append(self.loop.time())
        self.registry.metrics.message("submit", "local", said)
        return str(done.reply)

    def _recent(self) -> collections.deque[float]:
        return self.registry.message_times(self.s.uid, self.settings.admission.rate_window, self.loop.time())


SubmitSMTP._COMMANDS = tuple(sorted(name[5:] for name in dir(SubmitSMTP) if name.startswith("smtp_")))
