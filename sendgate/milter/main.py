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
    mail is relayed untouched.  On Sendmail, which has no XCLIENT, the login
    comes from the X-Sendgate-Login: field that sendgate-submitd adds, trusted
    only on the daemon named milter_local_daemon_name ({daemon_name}); the
    field is removed from every message, whatever its source.

SECURITY
    Started as root, it creates its socket, gives it to milter_socket_group
    (mode 0660), drops to milter_user, checks getresuid(), and only then
    talks to the MTA.  It refuses to run as root.  Configure the MTA to fail
    closed when the milter is away (Postfix: milter_default_action =
    tempfail; Sendmail: F=T in INPUT_MAIL_FILTER), or mail would pass
    without policy.

CONFIGURATION
    milter_socket, milter_socket_group, milter_user, milter_local_daemon_name,
    myhostname, myorigin,
    fixup_date, fixup_message_id, fixup_from, fixup_sender,
    sender_login_maps, sender_trusted_users, log_destination.
    See docs/configuration.md.

DIAGNOSTICS
    One log line per message, program name sendgate/milter:
      QUEUEID: submission: login=alice from=<...> nrcpt=1 fixups=+Date,+Sender: accepted
      QUEUEID: reject: login=alice from=<...> nrcpt=1: 553 5.7.1 ...
      QUEUEID: relay: from=<...> nrcpt=1: no fix-ups
    An exception inside a callback makes the MTA tempfail the message.
    Exit status 78 for a configuration error, 71 when the socket cannot be made.

SEE ALSO
    sendgate-submitd(8), sendgate-sendmail(1), sendgate.yaml(5)
"""

from __future__ import annotations

import os
import sys

import Milter
import milter as libmilter

from sendgate import daemon
from sendgate.milter.adapter import MilterSettings, PolicyMilter
from sendgate.policy.fixups import FixupSettings
from sendgate.policy.sender import SenderRules

PROGRAM = "sendgate/milter"


def settings_from(cfg) -> MilterSettings:
    return MilterSettings(
        fixups=FixupSettings(hostname=cfg.hostname, add_date=cfg.fixup_date,
                             add_message_id=cfg.fixup_message_id, add_from=cfg.fixup_from,
                             set_sender=cfg.fixup_sender),
        rules=SenderRules(domain=cfg.domain, login_maps=cfg.sender_login_maps,
                          trusted=frozenset(cfg.sender_trusted_users)),
        local_daemon_name=cfg.milter_local_daemon_name,
    )


def register() -> None:
    """Install the callbacks (what Milter.runmilter does, minus serving)."""
    Milter.factory = PolicyMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGFROM)
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
    log = daemon.setup_logging(PROGRAM, cfg.log_destination)
    PolicyMilter.settings = settings_from(cfg)
    path = cfg.milter_socket.removeprefix("unix:")
    gid = daemon.group_id(cfg.milter_socket_group, log)

    # Privilege steps: bind, hand the socket to the MTA's group, drop, verify.
    register()
    libmilter.setconn(cfg.milter_socket)
    old_umask = os.umask(0o077)
    try:
        libmilter.opensocket(True)
    except libmilter.error as err:
        log.critical("cannot listen on %s: %s", cfg.milter_socket, err)
        return daemon.EX_OSERR
    os.umask(old_umask)
    if os.geteuid() == 0:
        os.chown(path, daemon.user_id(cfg.milter_user, log), gid)
    os.chmod(path, 0o660)
    daemon.drop_privileges(cfg.milter_user, log)

    log.info("listening on %s", cfg.milter_socket)
    try:
        libmilter.main()
    except libmilter.error as err:
        log.critical("milter stopped: %s", err)
        return daemon.EX_SOFTWARE
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
