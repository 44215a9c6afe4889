"""sendgate-submitd's spool pass: every spool_retry_interval seconds, each
waiting entry of spool_directory (sendgate/spool.py, docs/spool.md) that
passes the checks is submitted again as its owner, the uid the kernel gives
as the file's owner, exactly as that uid's own connection would be: a
SubmitSMTP session on one end of a socketpair, whose credentials are the
owner's instead of SO_PEERCRED's, so every admission, sender and header
rule applies, and the MTA hears XCLIENT LOGIN=<owner's login>.

An entry is removed after the MTA's 250; a 4xx (or no MTA) makes it wait
spool_retry_interval times 2 per failure, at most MAX_WAIT; a 5xx sets it
aside as .refused.NAME; one that fails a check as .bad.NAME.  Each outcome
is one log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import socket

from sendgate import spool
from sendgate.submit_socket.protocol import SubmitSMTP
from sendgate.wiredata import data_pieces

log = logging.getLogger("sendgate/submit")
MAX_WAIT = 3600.0


class SpoolSMTP(SubmitSMTP):
    """A session for one spool entry: the entry's owner is the peer."""

    def __init__(self, settings, timeout, registry, uid: int, gid: int):
        super().__init__(settings, timeout, registry)
        self.owner = (0, uid, gid)

    def credentials(self, transport) -> tuple[int, int, int]:
        return self.owner


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    lines = []
    while True:
        line = (await reader.readline()).rstrip(b"\r\n").decode("utf-8", "replace")
        if not line:
            return 0, "connection closed"
        lines.append(line[4:])
        if line[3:4] != "-":
            return (int(line[:3]) if line[:3].isdigit() else 0), " ".join(lines)


async def submit(service, registry, uid: int, envelope, message: bytes) -> tuple[int, str]:
    """One SMTP transaction as uid; the last reply (code, text)."""
    try:
        gid = pwd.getpwuid(uid).pw_gid
    except KeyError:
        gid = -1
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    loop = asyncio.get_running_loop()
    await loop.connect_accepted_socket(lambda: SpoolSMTP(service.settings, service.timeout, registry, uid, gid),
                                       sock=theirs)
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    try:
        code, text = await _reply(reader)
        mail = " ".join([f"MAIL FROM:<{envelope.sender}>", *envelope.mail_params])
        rcpt = "".join(" " + p for p in envelope.rcpt_params)
        for line in ["EHLO localhost", mail, *(f"RCPT TO:<{r}>{rcpt}" for r in envelope.recipients), "DATA"]:
            if code >= 400:
                return code, text
            writer.write(line.encode("utf-8", "surrogateescape") + b"\r\n")
            code, text = await _reply(reader)
        if code != 354:
            return code, text
        for piece in data_pieces(message):
            writer.write(piece)
        code, text = await _reply(reader)
        writer.write(b"QUIT\r\n")
        return code, text
    finally:
        writer.close()


class Retry:
    """The spool pass and each entry's backoff (name -> failures, next try)."""

    def __init__(self, service, registry):
        self.service, self.registry = service, registry
        self.backoff: dict[str, tuple[int, float]] = {}

    async def run(self) -> None:
        while True:
            await self.scan()
            await asyncio.sleep(self.service.cfg.spool_retry_interval)

    async def scan(self) -> None:
        cfg = self.service.cfg
        try:
            dfd = os.open(cfg.spool_directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return   # no spool on this host: the sendmail command uses ~/dead.letter
        try:
            names = spool.waiting(cfg.spool_directory)
            self.backoff = {n: b for n, b in self.backoff.items() if n in names}
            used: dict[int, int] = {}
            for name in names:
                if self.registry.closing:
                    return
                failures, due = self.backoff.get(name, (0, 0.0))
                if due > asyncio.get_running_loop().time():
                    continue
                try:
                    await self.one(dfd, name, failures, used)
                except OSError as err:   # renamed or removed by its owner meanwhile, a full disk
                    log.warning("spool: %s: %s", name, err.strerror or err)
        finally:
            os.close(dfd)

    async def one(self, dfd: int, name: str, failures: int, used: dict[int, int]) -> None:
        cfg = self.service.cfg
        limit = cfg.spool_user_size_limit
        try:
            found = spool.read_entry(dfd, name, limit)
        except spool.Refused as why:
            log.warning("spool: %s: refused, set aside as %s%s: %s", name, spool.BAD, name, why)
            spool.set_aside(dfd, name, spool.BAD)
            return
        if found is None:
            return
        fd, uid, envelope, message = found
        try:
            size = os.fstat(fd).st_size
            if used.get(uid, 0) + size > limit:
                log.info("spool: %s: uid=%d: waits for the next pass (spool_user_size_limit)", name, uid)
                return
            used[uid] = used.get(uid, 0) + size
            code, text = await submit(self.service, self.registry, uid, envelope, message)
            if code == 250:
                os.unlink(name, dir_fd=dfd)
                self.backoff.pop(name, None)
                log.info("spool: %s: uid=%d from=<%s>: sent: 250 %s", name, uid, envelope.sender, text)
            elif code >= 500:
                spool.set_aside(dfd, name, spool.REFUSED)
                log.warning("spool: %s: uid=%d from=<%s>: refused, set aside as %s%s: %d %s",
                            name, uid, envelope.sender, spool.REFUSED, name, code, text)
            else:
                wait = min(cfg.spool_retry_interval * 2 ** failures, MAX_WAIT)
                self.backoff[name] = (failures + 1, asyncio.get_running_loop().time() + wait)
                log.info("spool: %s: uid=%d from=<%s>: deferred, next try in %ds: %d %s",
                         name, uid, envelope.sender, wait, code, text)
        finally:
            os.close(fd)
