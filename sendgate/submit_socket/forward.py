"""Forwarding one client session to the MTA (Forwarder), on top of Upstream.

An MTA session is had from the pool (pool.py) at MAIL, or for an RCPTHDR
transaction at its end of data, and given back when the transaction ends:
a client holds none before MAIL or between transactions.  The greeting
waits only for the MTA's capabilities (UpstreamPool.ready), so a client of
a dead MTA gets 421 at once.  MAIL, RCPT and RSET go on as they come and the
MTA's own replies come back, so the client's 250 for a message is the
MTA's "queued as".  A transaction opened with MAIL FROM:<..> RCPTHDR is held
until the end of data; its recipients are then taken from the header
(sendgate.policy.transaction.check_message) and the whole transaction is
replayed.  The login goes to the MTA as XCLIENT LOGIN= (Postfix, when the
session is opened: upstream.py) or, with submit_upstream_protocol "header"
(Sendmail, which has no XCLIENT), as an X-Sendgate-Login: field on top of
the message (sendgate.policy.handoff.with_identity_field).

Every method may raise UpstreamError; the caller (protocol.py) answers the
client.  The MTA side only: nothing here knows aiosmtpd.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sendgate.daemon import quote
from sendgate.policy.handoff import with_identity_field
from sendgate.policy.message import delete_fields
from sendgate.policy.refusals import replayed_recipient_refusal
from sendgate.policy.transaction import Mail, Recipient, check_message, replay_mail
from sendgate.replies import Reply
from sendgate.submit_socket.pool import CacheLimits
from sendgate.submit_socket.registry import Registry
from sendgate.submit_socket.settings import SubmitSettings
from sendgate.submit_socket.upstream import Capabilities, Upstream, UpstreamError

log = logging.getLogger("sendgate/submit")


@dataclass
class Transaction:
    """One transaction, from MAIL to the end of data."""
    mail: Mail
    recipients: list[str] = field(default_factory=list)              # from RCPT, qualified
    rcpt_params: list[tuple[str, ...]] = field(default_factory=list)  # each one's parameters

    @property
    def rcpthdr(self) -> bool:
        return self.mail.rcpthdr


@dataclass(frozen=True)
class Delivery:
    """The end of data: the client's reply, and for the log line the
    recipient count and the size of the message as it was sent."""
    reply: Reply
    nrcpt: int
    size: int


def mail_command(mail: Mail) -> str:
    return " ".join([f"MAIL FROM:<{mail.sender}>", *mail.params])


def rcpt_command(address: str, params: tuple[str, ...]) -> str:
    return " ".join([f"RCPT TO:<{address}>", *params])


class Forwarder:
    """The MTA side of one client session.  who: how its log lines name the
    session ("SID: uid=N login=L")."""

    def __init__(self, settings: SubmitSettings, registry: Registry, login: str, who: str) -> None:
        self.settings, self.registry, self.login, self.who = settings, registry, login, who
        self.upstream: Upstream | None = None
        self.capabilities = Capabilities()   # the MTA's, as ready() found them (for EHLO)

    @property
    def _limit(self) -> int:
        return self.settings.admission.upstream_session_limit

    async def ready(self) -> None:
        """Before the greeting: the MTA's capabilities known (for EHLO), a
        session had only when they are not.  Raises as open()."""
        how = await self.registry.upstreams.ready(self.settings.route, self.login, self.settings.cache, self._limit)
        if how is not None:
            self.registry.metrics.upstream_session(how)
        self.capabilities = self.registry.upstreams.capabilities or self.capabilities

    async def open(self) -> Upstream:
        """The transaction's MTA session, kept or new (once per transaction).
        Raises UpstreamRefused (the MTA refused the session) or UpstreamError."""
        if self.upstream is None:
            self.upstream, how = await self.registry.upstreams.acquire(self.settings.route, self.login, self._limit)
            self.registry.metrics.upstream_session(how)
        return self.upstream

    def release(self, clean: bool) -> None:
        """The transaction ended (or the client went): its MTA session goes
        back to the pool when no MTA transaction is open (clean; the pool
        checks the rest), else it ends."""
        up, self.upstream = self.upstream, None
        if up is None:
            return
        pool = self.registry.upstreams
        if clean and not self.registry.closing:
            pool.release(up, self.settings.cache, self._limit)
        else:
            pool.release(up, CacheLimits(size=0))

    def close(self) -> None:
        """The MTA session broke: end it, it goes back to no pool."""
        up, self.upstream = self.upstream, None
        if up is not None:
            self.registry.upstreams.drop(up)

    async def mail(self, mail: Mail) -> Reply:
        """MAIL to the MTA.  The first command on a kept MTA session is where
        a session the MTA dropped while it waited shows (closed, a 421 for
        its idle timeout, a 4xx from a milter connection that died with its
        milter): then MAIL goes once more, on a new session, before the
        client hears anything."""
        line = mail_command(mail)
        up = await self.open()
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
        log.info("%s: kept MTA session failed (%s); trying a new one", self.who, why)
        self.close()
        self.upstream = await self.registry.upstreams.open(self.settings.route, self.login, self._limit)
        self.registry.metrics.upstream_session("new")
        return await self.upstream.command(line)

    async def rcpt(self, recipient: Recipient) -> Reply:
        return await self.upstream.command(rcpt_command(recipient.address, recipient.params))

    async def reset(self) -> Reply:
        return await self.upstream.command("RSET")

    async def deliver(self, txn: Transaction, content: bytes) -> Delivery:
        """The message at the end of data: checked, then sent (for RCPTHDR
        after the envelope's replay) with the MTA's verdict as the reply."""
        s = self.settings
        verdict = check_message(content, txn.rcpthdr, txn.recipients, s.rules.domain, s.recipient_limit)
        if verdict.refusal is not None:
            if not txn.rcpthdr:
                await self.reset()  # the MTA's transaction was already open
            return Delivery(verdict.refusal, verdict.nrcpt, len(content))
        if txn.rcpthdr:
            content = delete_fields(content, verdict.remove)
            refusal = await self._replay(txn, verdict.recipients)
            if refusal is not None:
                return Delivery(refusal, verdict.nrcpt, len(content))
        if s.protocol == "header":
            content = with_identity_field(content, self.login)
        loop = asyncio.get_running_loop()
        started = loop.time()
        reply = await self.upstream.transfer(content)  # self.upstream: replaced, maybe, by mail()
        self.registry.metrics.upstream_time(loop.time() - started)
        return Delivery(reply, verdict.nrcpt, len(content))

    async def _replay(self, txn: Transaction, recipients: tuple[str, ...]) -> Reply | None:
        """MAIL (with SMTPUTF8 when the header's recipients need it) and one
        RCPT per recipient for an RCPTHDR transaction; a refused recipient
        fails the whole message
        (sendgate.policy.refusals.replayed_recipient_refusal)."""
        up = await self.open()
        reply = await self.mail(replay_mail(txn.mail, recipients, up.capabilities.smtputf8))
        if not reply.positive:
            return reply
        up = self.upstream
        params = dict(zip(txn.recipients, txn.rcpt_params))
        for rcpt in recipients:
            reply = await up.command(rcpt_command(rcpt, params.get(rcpt, ())))
            if reply.positive:
                continue
            await up.command("RSET")
            return replayed_recipient_refusal(rcpt, reply)
        return None
