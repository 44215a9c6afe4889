"""NAME
    sendgate-milter - the sendgate policy milter for Postfix and Sendmail

SYNOPSIS
    sendgate-milter [--config FILE]

DESCRIPTION
    Serves the milter protocol on milter_socket.  For each message that the
    MTA marks as authenticated ({auth_authen}: SASL on port 587, or XCLIENT
    LOGIN from sendgate-submitd) it applies the RFC 6409 submission fix-ups
    (Date:, Message-ID:, From: when missing, Sender: when the user is not the
    author) and checks that the user may use the envelope sender.  Other
    mail is relayed untouched.  A login that arrived by XCLIENT counts only
    on milter_local_daemon_name, the submit daemon's own service.  On
    Sendmail, which has no XCLIENT, the login comes from the
    X-Sendgate-Login: field that sendgate-submitd adds, trusted only on that
    same daemon ({daemon_name}); the field is removed from every message,
    whatever its source.

    Rate limits: each authenticated user may send rate_message_limit
    messages to rate_recipient_limit recipients in total per rate_window
    seconds, over every path into the MTA; further mail is tempfailed.  The
    counters live in this process (rate_store: memory) or in Redis
    (rate_store: redis, shared by several milters and MTA hosts).  Redis is
    connected on first use; while it does not answer, submitted mail is
    tempfailed.

    Configuration changes take effect without a restart: on each new MTA
    connection the milter looks at the configuration file (at most once a
    second) and reads it again when it changed.  An edit that does not pass
    the check is logged and ignored.  (libmilter owns SIGHUP, SIGTERM and
    SIGINT: HUP and TERM stop the milter, so do not send HUP to reload.)

SECURITY
    It creates its socket (mode 0660) in a directory that only milter_user
    and the MTA's group, milter_socket_group, may enter: mode 2750, set-gid
    so that the socket gets that group without a chown (sendgate
    setup-postfix makes it; the milter refuses to start, exit 78, when the
    directory is open to others or has another group).  Started as root it
    then drops to milter_user and checks getresuid(); started as
    milter_user (the systemd unit) it needs no privilege and no
    supplementary group.  Only then does it talk to the MTA.  It refuses to
    run as root.  Configure the MTA to fail
    closed when the milter is away (Postfix: milter_default_action =
    tempfail; Sendmail: F=T in INPUT_MAIL_FILTER), or mail would pass
    without policy.

CONFIGURATION
    milter_socket, milter_socket_group, milter_user, myhostname, myorigin,
    fixup_date, fixup_message_id, fixup_from, fixup_sender, fixup_qualify,
    fixup_bcc, sender_login_maps, sender_trusted_users,
    sender_mismatch_action, from_mismatch_action, sender_allow_null,
    milter_local_daemon_name, rate_window, rate_message_limit,
    rate_recipient_limit, rate_store, rate_redis_url, rate_redis_password_file,
    milter_metrics_listen,
    log_destination, syslog_socket.  A reload applies every key but milter_socket,
    milter_socket_group, milter_user, rate_store, rate_redis_url and
    rate_redis_password_file, which
    need a restart.
    See docs/configuration.md.

DIAGNOSTICS
    One log line per message, program name sendgate/milter:
      QUEUEID: submission: login=alice from=<...> nrcpt=1 fixups=+Date,+Sender: accepted
      QUEUEID: reject: login=alice from=<...> nrcpt=1: 553 5.7.1 ...
      QUEUEID: relay: from=<...> nrcpt=1: no fix-ups
      QUEUEID: defer: login=alice from=<...> nrcpt=1: 451 4.7.1 Error: too many messages ...
      QUEUEID: error in end-of-message: StoreError: redis: ...: tempfail
    Any exception in a callback, and a rate store that does not answer,
    make the MTA tempfail the message (451 4.3.0).
    Exit status 78 for a configuration error, 71 when the socket cannot be made.

SEE ALSO
    sendgate-submitd(8), sendgate-sendmail(1), sendgate.yaml(5)
"""

from __future__ import annotations

import os
import sys

import Milter
import milter as libmilter

from sendgate import config, daemon
from sendgate.metrics import Metrics
from sendgate.milter.adapter import ACTIONS, PolicyMilter
from sendgate.milter.ratestore import StoreError, open_store
from sendgate.milter.settings import SettingsSource, settings_from

PROGRAM = "sendgate/milter"


def register() -> None:
    """Install the callbacks (what Milter.runmilter does, minus serving)."""
    Milter.factory = PolicyMilter
    Milter.set_flags(ACTIONS)
    libmilter.set_connect_callback(Milter.connect_callback)
    libmilter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    libmilter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    libmilter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    libmilter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    libmilter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    libmilter.set_close_callback(Milter.close_callback)
    libmilter.set_exception_policy(Milter.TEMPFAIL)
    libmilter.register("sendgate", negotiate=Milter.negotiate_callback)


def main(argv: list[str] | None = None) -> int:
    args = daemon.argument_parser("sendgate-milter", __doc__).parse_args(argv)
    cfg = daemon.load_config_or_exit("sendgate-milter", args.config)
    log = daemon.setup_logging(PROGRAM, cfg.log_destination, cfg.syslog_socket, threads=True)
    path = cfg.milter_socket.removeprefix("unix:")
    problem = daemon.socket_directory_problem(path, cfg.milter_user, cfg.milter_socket_group)
    if problem:
        log.critical("milter_socket %s: %s", cfg.milter_socket, problem)
        return daemon.EX_CONFIG

    # Privilege steps: bind (the set-gid directory gives the socket the
    # MTA's group; mode 0660 from the umask), drop, verify.
    register()
    libmilter.setconn(cfg.milter_socket)
    old_umask = os.umask(0o117)
    try:
        libmilter.opensocket(True)
    except libmilter.error as err:
        log.critical("cannot listen on %s: %s", cfg.milter_socket, err)
        return daemon.EX_OSERR
    os.umask(old_umask)
    daemon.drop_privileges(cfg.milter_user, log)
    try:
        store = open_store(cfg.rate_store, cfg.rate_redis_url, cfg.rate_redis_password_file)
    except StoreError as err:
        log.critical("%s", err)
        return daemon.EX_CONFIG
    PolicyMilter.source = SettingsSource(args.config, settings_from(cfg, store),
                                         lambda path: settings_from(config.load(path), store))

    PolicyMilter.metrics = Metrics.start(cfg.milter_metrics_listen, log)
    log.info("listening on %s (rate counters: %s)", cfg.milter_socket, cfg.rate_store)
    try:
        libmilter.main()
    except libmilter.error as err:
        log.critical("milter stopped: %s", err)
        return daemon.EX_SOFTWARE
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
