"""NAME
    sendgate-submitd - SMTP submission on a unix socket, identity from the kernel

SYNOPSIS
    sendgate-submitd [--config FILE]

DESCRIPTION
    Listens on submit_socket for SMTP from local programs (normally the
    sendgate-sendmail command).  For each connection it learns the client's
    uid from the kernel (SO_PEERCRED), opens one session to the MTA's
    dedicated service submit_upstream, passes the uid's login with XCLIENT
    LOGIN= (Postfix) or in an X-Sendgate-Login: field on top of each message
    (Sendmail; submit_upstream_protocol: header), and relays MAIL, RCPT and
    DATA with the MTA's own replies.  The
    RCPTHDR extension (MAIL FROM:<..> RCPTHDR) takes the recipients from the
    message header, as sendmail -t does.  There is no queue of its own: a
    client hears 250 for its message only after the MTA said 250.

SECURITY
    The login comes from the kernel only, never from HELO, MAIL FROM or AUTH
    (AUTH= parameters are refused).  Started as root, the daemon binds its
    socket (mode submit_socket_mode), drops to submit_user with that user's
    groups, checks getresuid(), and only then accepts connections.  It
    refuses to run as root.  submit_upstream must be reachable by
    submit_user alone (Postfix: the public/ directory, group postdrop;
    Sendmail: a Family=local daemon socket in a directory of group sendgate),
    because anyone who can reach it can claim any login with XCLIENT or the
    X-Sendgate-Login: field.  Fields of that name written by the client are
    removed before ours is added.

CONFIGURATION
    submit_socket, submit_socket_mode, submit_user, submit_upstream,
    submit_upstream_protocol,
    submit_upstream_timeout, submit_timeout, submit_message_size_limit,
    submit_recipient_limit, myhostname, myorigin, sender_login_maps,
    sender_trusted_users, log_destination.  See docs/configuration.md.

DIAGNOSTICS
    Log lines, program name sendgate/submit, one per decision:
      SID: connect uid=1000 pid=4242 login=alice
      SID: uid=1000 login=alice from=<alice@example.org> nrcpt=1 size=812: accepted: 250 2.0.0 Ok: queued as 4Xyz
      SID: reject: MAIL from uid=1000 login=alice: 553 5.7.1 <x@y>: Sender address rejected: not owned by user alice
      SID: uid=1000 login=alice: mail system unavailable: connect to ...: No such file or directory
    Exit status 78 for a configuration error, 71 when the socket cannot be
    made, 77 when privileges cannot be dropped.

SEE ALSO
    sendgate-sendmail(1), sendgate-milter(8), sendgate.yaml(5)
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import sys

from sendgate import daemon
from sendgate.policy.sender import SenderRules
from sendgate.submit_socket.server import SubmitSettings, SubmitSMTP

PROGRAM = "sendgate/submit"


def settings_from(cfg) -> SubmitSettings:
    return SubmitSettings(
        hostname=cfg.hostname,
        upstream_path=cfg.submit_upstream.removeprefix("unix:"),
        upstream_timeout=cfg.submit_upstream_timeout,
        size_limit=cfg.submit_message_size_limit,
        recipient_limit=cfg.submit_recipient_limit,
        protocol=cfg.submit_upstream_protocol,
        rules=SenderRules(domain=cfg.domain, login_maps=cfg.sender_login_maps,
                          trusted=frozenset(cfg.sender_trusted_users)),
    )


def bind_socket(path: str, mode: int, log) -> socket.socket:
    """Bind path, replacing a stale socket file but never a live one."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            log.critical("%s exists and is not a socket: not touching it", path)
            raise SystemExit(daemon.EX_OSERR)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
            log.info("removed stale socket %s", path)
        else:
            log.critical("%s is in use by another running daemon", path)
            raise SystemExit(daemon.EX_OSERR)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as err:
        log.critical("cannot bind %s: %s", path, err.strerror)
        raise SystemExit(daemon.EX_OSERR) from None
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(sock: socket.socket, cfg, log) -> None:
    settings = settings_from(cfg)
    # Our idle timer must outlast the MTA's slowest answer, end of data
    # included, or a slow milter would cut the client off mid-reply.
    timeout = max(cfg.submit_timeout, cfg.submit_upstream_timeout + 30)
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(lambda: SubmitSMTP(settings, timeout), sock=sock)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening on %s, forwarding to %s", cfg.submit_socket, cfg.submit_upstream)
    await stop.wait()
    log.info("stopping")
    server.close()


def main(argv: list[str] | None = None) -> int:
    args = daemon.argument_parser("sendgate-submitd", __doc__).parse_args(argv)
    cfg = daemon.load_config_or_exit("sendgate-submitd", args.config)
    log = daemon.setup_logging(PROGRAM, cfg.log_destination)
    # Privilege steps: bind, drop, verify, then serve.
    sock = bind_socket(cfg.submit_socket, cfg.submit_socket_mode, log)
    daemon.drop_privileges(cfg.submit_user, log)
    asyncio.run(serve(sock, cfg, log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
