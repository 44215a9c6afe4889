"""NAME
    sendgate-submitd - SMTP submission on a unix socket, identity from the kernel

SYNOPSIS
    sendgate-submitd [--config FILE]

DESCRIPTION
    Listens on submit_socket for SMTP from local programs (normally the
    sendgate-sendmail command).  For each connection it learns the client's
    uid from the kernel (SO_PEERCRED), gives each of its transactions (MAIL
    to the end of data) a session with the MTA's dedicated service
    submit_upstream, passes the uid's login with XCLIENT LOGIN= (Postfix) or
    in an X-Sendgate-Login: field on top of each message (Sendmail;
    submit_upstream_protocol: header), and relays MAIL, RCPT and DATA with
    the MTA's own replies.  The
    RCPTHDR extension (MAIL FROM:<..> RCPTHDR) takes the recipients from the
    message header, as sendmail -t does.  There is no queue of its own: a
    client hears 250 for its message only after the MTA said 250.

    A client holds an MTA session only inside a transaction: the greeting
    and EHLO come from the MTA's capabilities, learned from its EHLO and
    remembered (a session is opened before the greeting only when none is
    open or was had in the last minute, so a dead MTA is still a 421 at
    once).  One uid may have submit_transactions_per_uid transactions in
    progress, and the daemon holds at most submit_upstream_session_limit MTA
    sessions (in use and kept; setup-postfix gives the MTA's service that
    many processes); a MAIL beyond either gets 451 4.3.2.  Unfinished
    message data is held within submit_data_buffer_per_uid bytes per uid
    and submit_data_buffer_limit in all; a session beyond it gets 452 4.3.1
    at its end of data.  A client silent for submit_idle_timeout seconds
    outside a transaction gets 421 4.4.2 (submit_timeout inside one).

    MTA sessions are kept for the next transaction, as Postfix's SMTP client
    keeps its connections (submit_upstream_cache_size, default 16): when a
    transaction has ended with every command answered, no reply of 400 or
    more and no MTA transaction open, its MTA session waits up to
    submit_upstream_cache_time_limit seconds.  The next client of the same
    login takes it as it is; another login's takes it after a new XCLIENT
    LOGIN=, which restarts the MTA's session.  A session carries at most
    submit_upstream_reuse_count_limit messages and is not reused after
    submit_upstream_reuse_time_limit seconds.  A kept session whose first
    MAIL fails (closed, 4xx) is replaced by a new one for that MAIL.  With
    Sendmail (header) the login travels in each message, so any client may
    take it.

    Under systemd socket activation (LISTEN_FDS=1) it serves the socket it
    is given instead of binding submit_socket.

    On SIGHUP it reads its configuration again and ends the kept MTA
    sessions: new sessions use the new settings (and new MTA sessions),
    sessions in progress finish with the old ones.  A file that
    does not pass the check is logged and ignored.  submit_socket,
    submit_socket_mode, submit_socket_group, submit_user and log_destination
    take effect only at a restart.

    On SIGTERM it stops accepting connections, ends idle sessions with 421,
    lets sessions in the middle of a message finish (up to
    submit_shutdown_timeout) and exits.

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
    submit_socket, submit_socket_mode, submit_socket_group, submit_user,
    submit_upstream, submit_upstream_protocol, submit_upstream_timeout,
    submit_upstream_cache_size, submit_upstream_cache_time_limit,
    submit_upstream_reuse_count_limit, submit_upstream_reuse_time_limit, submit_timeout,
    submit_idle_timeout, submit_session_timeout, submit_shutdown_timeout, submit_message_size_limit,
    submit_recipient_limit, submit_command_length_limit, submit_allow_users,
    submit_allow_groups, submit_deny_users, submit_deny_groups,
    submit_sessions_per_uid, submit_session_limit, submit_transactions_per_uid,
    submit_upstream_session_limit, submit_data_buffer_per_uid, submit_data_buffer_limit,
    submit_message_rate_limit,
    submit_rate_window, submit_metrics_listen, myhostname, myorigin, sender_login_maps,
    sender_trusted_users, sender_mismatch_action, sender_allow_null,
    log_destination.  See docs/configuration.md.

DIAGNOSTICS
    Log lines, program name sendgate/submit, one per decision:
      SID: connect uid=1000 pid=4242 login=alice
      SID: uid=1000 login=alice from=<alice@example.org> nrcpt=1 size=812: accepted: 250 2.0.0 Ok: 836 bytes queued as 4Xyz
      SID: reject: MAIL from uid=1000 login=alice: 553 5.7.1 <x@y>: Sender address rejected: not owned by user alice
      SID: uid=1000 login=alice: mail system unavailable: connect to ...: No such file or directory
      SID: reject: connect from uid=65534 login=nobody: 554 5.7.1 Error: user nobody is not allowed to submit mail (submit_deny_users)
      SID: reject: MAIL from uid=1000 login=alice: 450 4.7.1 Error: too many messages from uid 1000 in 60 seconds, try again later (submit_message_rate_limit)
      SID: reject: MAIL from uid=1000 login=alice: 451 4.3.2 Error: too many transactions in progress for uid 1000, try again later (submit_transactions_per_uid)
      SID: reject: DATA from uid=1000 login=alice: 452 4.3.1 Error: insufficient system storage: too much unfinished message data for uid 1000, try again later (submit_data_buffer_per_uid); size=20512345
      SID: uid=1000 login=alice: timeout exceeded (submit_idle_timeout)
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

from sendgate import config, daemon
from sendgate.metrics import Metrics
from sendgate.submit_socket.pool import CacheLimits
from sendgate.submit_socket.protocol import SubmitSMTP
from sendgate.submit_socket.registry import Registry
from sendgate.submit_socket.retry import Retry
from sendgate.submit_socket.settings import SubmitSettings

PROGRAM = "sendgate/submit"


def settings_from(cfg) -> SubmitSettings:
    return SubmitSettings(
        hostname=cfg.hostname,
        upstream_path=cfg.submit_upstream.removeprefix("unix:"),
        upstream_timeout=cfg.submit_upstream_timeout,
        size_limit=cfg.submit_message_size_limit,
        recipient_limit=cfg.submit_recipient_limit,
        protocol=cfg.submit_upstream_protocol,
        rules=cfg.sender_rules(),
        admission=cfg.admission_rules(),
        command_length_limit=cfg.submit_command_length_limit,
        session_timeout=cfg.submit_session_timeout,
        idle_timeout=cfg.submit_idle_timeout,
        cache=CacheLimits(size=cfg.submit_upstream_cache_size, idle_time=cfg.submit_upstream_cache_time_limit,
                          reuse_count=cfg.submit_upstream_reuse_count_limit,
                          reuse_time=cfg.submit_upstream_reuse_time_limit),
    )


SD_LISTEN_FDS_START = 3


def inherited_socket(log) -> socket.socket | None:
    """The listening socket systemd passed (socket activation), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count != 1:
        log.critical("socket activation passed %d sockets; sendgate-submitd takes exactly one", count)
        raise SystemExit(daemon.EX_CONFIG)
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        log.critical("socket activation passed a socket that is not a unix stream socket")
        raise SystemExit(daemon.EX_CONFIG)
    sock.setblocking(False)
    return sock


def bind_socket(path: str, mode: int, group: str, log) -> socket.socket:
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
    if group:
        os.chown(path, -1, daemon.group_id(group, log))
    os.chmod(path, mode)
    sock.listen(socket.SOMAXCONN)
    sock.setblocking(False)
    return sock


# Settings that a reload cannot change: they were used before privileges
# were dropped, or name the daemon's own socket.
RESTART_ONLY = ("submit_socket", "submit_socket_mode", "submit_socket_group", "submit_user", "log_destination",
                "submit_metrics_listen")


class Service:
    """The running daemon's configuration, replaced whole on SIGHUP; new
    sessions take the current one, sessions in progress keep theirs."""

    def __init__(self, cfg, path: str, log):
        self.cfg, self.path, self.log = cfg, path, log
        self.settings = settings_from(cfg)

    @property
    def timeout(self) -> float:
        # Our idle timer must outlast the MTA's slowest answer, end of data
        # included, or a slow milter would cut the client off mid-reply.
        return max(self.cfg.submit_timeout, self.cfg.submit_upstream_timeout + 30)

    def reload(self) -> None:
        try:
            cfg = config.load(self.path)
        except config.ConfigError as err:
            self.log.error("reload failed, keeping the running configuration: %s", err)
            return
        ignored = [k for k in RESTART_ONLY if getattr(cfg, k) != getattr(self.cfg, k)]
        if ignored:
            self.log.warning("reload: %s changed; these take effect at the next restart", ", ".join(ignored))
        self.cfg, self.settings = cfg, settings_from(cfg)
        self.log.info("reloaded %s", self.path)


async def serve(sock: socket.socket, service: Service, inherited: bool) -> None:
    cfg, log = service.cfg, service.log
    registry = Registry(Metrics.start(cfg.submit_metrics_listen, log))
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(
        lambda: SubmitSMTP(service.settings, service.timeout, registry), sock=sock)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: (service.reload(), registry.upstreams.flush()))
    where = "the socket passed by systemd" if inherited else cfg.submit_socket
    log.info("listening on %s, forwarding to %s (event loop: %s)", where, cfg.submit_upstream,
             type(loop).__module__.split(".")[0])
    retrying = asyncio.create_task(Retry(service, registry).run())   # the spool: retry.py
    await stop.wait()
    retrying.cancel()
    # Stop accepting, end idle sessions, give busy ones time to finish.
    server.close()
    registry.shut_down()
    grace = service.cfg.submit_shutdown_timeout
    log.info("stopping: %d session(s) still busy, waiting up to %ds", len(registry.sessions), grace)
    try:
        await asyncio.wait_for(registry.empty.wait(), grace)
    except asyncio.TimeoutError:
        log.warning("stopping: %d session(s) cut off after submit_shutdown_timeout", len(registry.sessions))
        for session in list(registry.sessions):
            session.close_for_shutdown()
    log.info("stopped")


def event_loop_factory():
    """uvloop's event loop when it is installed, else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = daemon.argument_parser("sendgate-submitd", __doc__).parse_args(argv)
    cfg = daemon.load_config_or_exit("sendgate-submitd", args.config)
    log = daemon.setup_logging(PROGRAM, cfg.log_destination, cfg.syslog_socket)
    # Privilege steps: bind (or take systemd's socket), drop, verify, serve.
    sock = inherited_socket(log)
    inherited = sock is not None
    if sock is None:
        sock = bind_socket(cfg.submit_socket, cfg.submit_socket_mode, cfg.submit_socket_group, log)
    daemon.drop_privileges(cfg.submit_user, log, cfg.submit_groups)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve(sock, Service(cfg, args.config, log), inherited))
    return 0


if __name__ == "__main__":
    sys.exit(main())
