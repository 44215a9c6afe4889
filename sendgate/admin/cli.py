"""NAME
    sendgate - administer sendgate

SYNOPSIS
    sendgate stack up --dir DIR [--mta postfix|sendmail] [--domain DOMAIN] [--mail-owner USER] [--set KEY=VALUE]...
    sendgate stack adduser --dir DIR LOGIN PASSWORD
    sendgate stack down --dir DIR
    sendgate check-config [--no-mta] [FILE]
    sendgate status [--dir DIR] [--config FILE]
    sendgate config-doc
    sendgate man-pages DIR
    sendgate setup-postfix [--root DIR] [--domain DOMAIN] [--undo]
    sendgate resubmit [-v] [--list] [FILE]
    sendgate install-shim [--root DIR]
    sendgate uninstall-shim [--root DIR]

DESCRIPTION
    stack up      Build and start a private stack under DIR: a Postfix
                  instance of its own (unix sockets and one loopback port
                  only), sendgate-milter attached to it, and sendgate-submitd
                  forwarding to it with XCLIENT LOGIN.  Every message it
                  accepts is delivered to DIR/mail/Maildir.  Prints one
                  key=value per line (socket=, maildir=, config=,
                  postfix_config=, log=, inbound=, submission=) once the
                  stack accepts mail.  inbound= is a port-25-style service
                  (no AUTH, no XCLIENT); submission= requires STARTTLS and
                  then SASL AUTH (a test certificate is made at stack up).
                  Needs root; DOMAIN (default example.org) is the domain
                  local users send as; USER owns the Maildir (default: the
                  sudo user, else sendgate).  --set puts KEY: VALUE (YAML)
                  into the stack's sendgate.yaml.
                  --mta sendmail builds the same stack on the real Sendmail
                  8.17 instead (fetched from Debian into /opt/sendgate/sendmail
                  on first use; see "Using sendgate with Sendmail" in the
                  README): it prints sendmail_config= instead of
                  postfix_config=, delivers as Sendmail's account smmta and
                  takes no --mail-owner.
    stack adduser Create a SASL account LOGIN with PASSWORD for the stack's
                  submission service (or change its password).
    stack down    Stop everything stack up started under DIR.
    check-config  Validate FILE (default $SENDGATE_CONFIG or
                  /etc/sendgate/sendgate.yaml), then check the MTA side as
                  postconf reports it (milter attached and failing closed,
                  XCLIENT allowed on the sendgate service only, its socket
                  directory closed to users, authorized_submit_users = root);
                  --no-mta skips that part.  With rate_store: redis it
                  also flags a store other users could write: TCP without
                  a password, a unix socket open to every user, or a
                  password in the URL of a file every user can read.
                  Prints one line per problem; exit 0 when there is none.
    status        Daemons up or down, sessions open, sockets and their
                  permissions, and the MTA checks of check-config, for the
                  installed configuration or the stack under DIR.  Exit 1
                  when a problem is found, each on a "problem:" line.
    config-doc    Print the configuration reference (Markdown).
    setup-postfix Wire sendgate into this host's Postfix (or the tree under
                  --root): /etc/sendgate/sendgate.yaml from the example (an
                  existing one is kept), the systemd units, and in Postfix
                  the submit daemon's service and the milter, failing closed,
                  as that sendgate.yaml names them (submit_upstream,
                  milter_socket, milter_local_daemon_name).  --undo takes it
                  out again.  Starts nothing; see the README's install guide
                  for the rest.
    man-pages     Write the manual pages, built from each command's --help
                  and from the configuration schema, into DIR.
    resubmit      Send the messages the sendmail command saved for the user
                  who runs it in the spool and ~/dead.letter (or FILE only)
                  again, as that user; --list lists them instead;
                  each is removed only after the MTA accepted it, the rest
                  of the file is kept as it was.  -v prints the dialogue.
    install-shim  Put the sendmail command in place of /usr/sbin/sendmail,
                  /usr/bin/mailq and /usr/bin/newaliases, keeping the MTA's
                  programs as PATH.sendgate-orig (dpkg-divert on Debian).
                  DIR (default /) is the root of the tree to change.
    uninstall-shim  Remove them and put the MTA's programs back.

    To send through a stack:  SENDGATE_CONFIG=DIR/sendgate.yaml sendgate-sendmail -t -i < message

DIAGNOSTICS
    Exit status 0 on success, 64 for a usage error, 78 for a configuration
    error (the message names file, line and key), 1 when the stack cannot
    be started or stopped or the shim installed or removed, with the reason
    on standard error.  resubmit exits as sendgate-sendmail would for the
    first message that failed again (75: try later), 0 when all went.

SEE ALSO
    sendgate-submitd(8), sendgate-milter(8), sendgate-sendmail(1), sendgate.yaml(5)
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from sendgate import config
from sendgate.daemon import EX_CONFIG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sendgate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    stack = commands.add_parser("stack", help="a private Postfix or Sendmail + sendgate stack")
    actions = stack.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="build and start a stack")
    up.add_argument("--dir", required=True)
    up.add_argument("--mta", choices=("postfix", "sendmail"), default="postfix")
    up.add_argument("--domain", default="example.org")
    up.add_argument("--mail-owner", default=None)
    up.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings")
    adduser = actions.add_parser("adduser", help="create a SASL account on a stack")
    adduser.add_argument("--dir", required=True)
    adduser.add_argument("login")
    adduser.add_argument("password")
    down = actions.add_parser("down", help="stop a stack")
    down.add_argument("--dir", required=True)
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("--no-mta", action="store_true", help="check the file only, not the MTA")
    check.add_argument("file", nargs="?", default=os.environ.get("SENDGATE_CONFIG", config.DEFAULT_PATH))
    status = commands.add_parser("status", help="daemons, sockets and MTA settings")
    status.add_argument("--dir", help="a stack started with `stack up`")
    status.add_argument("--config", default=os.environ.get("SENDGATE_CONFIG", config.DEFAULT_PATH))
    commands.add_parser("config-doc", help="print the configuration reference")
    setup = commands.add_parser("setup-postfix", help="wire sendgate into Postfix")
    setup.add_argument("--root", default="/")
    setup.add_argument("--domain", default=None, help="myorigin for a new configuration file")
    setup.add_argument("--undo", action="store_true")
    man = commands.add_parser("man-pages", help="write the manual pages")
    man.add_argument("dir")
    resubmit = commands.add_parser("resubmit", help="send saved dead letters again")
    resubmit.add_argument("-v", "--verbose", action="store_true")
    resubmit.add_argument("--list", action="store_true", help="list the saved messages, send nothing")
    resubmit.add_argument("file", nargs="?", default=None)
    for name in ("install-shim", "uninstall-shim"):
        shim = commands.add_parser(name, help=f"{name.split('-')[0]} the sendmail command as /usr/sbin/sendmail")
        shim.add_argument("--root", default="/")
    return parser


def parse_settings(items: list[str]) -> dict:
    """--set KEY=VALUE words as a mapping; values are YAML scalars, and
    config.load checks them against the schema like any other key."""
    import yaml
    settings = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise config.ConfigError("--set", None, None, f"expected KEY=VALUE, got {item!r}")
        if key not in config.KEYS:
            raise config.ConfigError("--set", None, key, "unknown key")
        settings[key] = yaml.safe_load(value)
    return settings


def stack_command(args: argparse.Namespace) -> None:
    """stack up, adduser, down: the MTA module of --mta builds the stack;
    down asks each MTA module to stop what it finds of its own."""
    from sendgate.stack import common, postfix, sendmail
    if args.action == "up":
        mta = {"postfix": postfix, "sendmail": sendmail}[args.mta]
        facts = mta.up(args.dir, domain=args.domain, mail_owner=args.mail_owner,
                       settings=parse_settings(args.settings))
        for key, value in facts.items():
            print(f"{key}={value}")
    elif args.action == "adduser":
        postfix.adduser(args.dir, args.login, args.password)  # SASL: the Postfix stack's submission service
    else:
        for stopped in common.down(args.dir, postfix.stop_mta, sendmail.stop_mta):
            print(f"stopped={stopped}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("check-config", "status"):
        path = args.file if args.command == "check-config" else (
            os.path.join(args.dir, "sendgate.yaml") if args.dir else args.config)
        try:
            cfg = config.load(path)
        except config.ConfigError as err:
            print(f"sendgate: {err}", file=sys.stderr)
            return EX_CONFIG
        from sendgate.admin import status
        if args.command == "check-config":
            findings = status.rate_store(cfg) + ([] if args.no_mta else status.postfix(cfg))
            problems = [f for f in findings if f.problem]
            for finding in problems:
                print(f"sendgate: {path}: {finding.text}", file=sys.stderr)
            return EX_CONFIG if problems else 0
        findings = status.submit_daemon(cfg) + status.spool_queue(cfg) + status.milter_daemon(cfg) + status.rate_store(cfg) + status.postfix(cfg)
        for finding in findings:
            print(finding)
        return 1 if any(f.problem for f in findings) else 0
    if args.command == "config-doc":
        sys.stdout.write(config.reference_markdown())
        return 0
    if args.command == "setup-postfix":
        from sendgate.admin import hostsetup
        try:
            if args.undo:
                steps = hostsetup.undo(args.root)
            else:
                steps = hostsetup.setup(args.root, args.domain or socket.getfqdn())
        except hostsetup.SetupError as err:
            print(f"sendgate: setup-postfix: {err}", file=sys.stderr)
            return 1
        except config.ConfigError as err:
            print(f"sendgate: {err}", file=sys.stderr)
            return EX_CONFIG
        for step in steps:
            print(step)
        return 0
    if args.command == "man-pages":
        from sendgate.admin import manpages
        for path in manpages.write(args.dir):
            print(path)
        return 0
    if args.command == "resubmit":
        from sendgate.sendmail_shim import deadletter
        return deadletter.command(args.file, args.verbose, args.list)
    if args.command in ("install-shim", "uninstall-shim"):
        from sendgate.admin import install
        try:
            done = (install.install if args.command == "install-shim" else install.uninstall)(args.root)
        except (install.InstallError, OSError) as err:
            print(f"sendgate: {args.command}: {err}", file=sys.stderr)
            return 1
        print("\n".join(done or ["nothing to do"]))
        return 0
    from sendgate.stack.common import StackError
    try:
        stack_command(args)
    except StackError as err:
        print(f"sendgate: stack {args.action}: {err}", file=sys.stderr)
        return 1
    except config.ConfigError as err:
        print(f"sendgate: {err}", file=sys.stderr)
        return EX_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
