"""NAME
    sendgate - administer sendgate

SYNOPSIS
    sendgate stack up --dir DIR [--domain DOMAIN] [--mail-owner USER]
    sendgate stack down --dir DIR
    sendgate check-config [FILE]
    sendgate config-doc
    sendgate resubmit [-v] [FILE]
    sendgate install-shim [--root DIR]
    sendgate uninstall-shim [--root DIR]

DESCRIPTION
    stack up      Build and start a private stack under DIR: a Postfix
                  instance of its own (unix sockets and one loopback port
                  only), sendgate-milter attached to it, and sendgate-submitd
                  forwarding to it with XCLIENT LOGIN.  Every message it
                  accepts is delivered to DIR/mail/Maildir.  Prints one
                  key=value per line (socket=, maildir=, config=,
                  postfix_config=, log=, inbound=) once the stack accepts
                  mail.  Needs root; DOMAIN (default example.org) is the
                  domain local users send as; USER owns the Maildir (default:
                  the sudo user, else sendgate).
    stack down    Stop everything stack up started under DIR.
    check-config  Validate FILE (default $SENDGATE_CONFIG or
                  /etc/sendgate/sendgate.yaml); prints nothing and exits 0
                  when it is valid.
    config-doc    Print the configuration reference (Markdown).
    resubmit      Send the messages the sendmail command saved in
                  ~/dead.letter (or FILE) again, as the user who runs it;
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
import sys

from sendgate import config
from sendgate.daemon import EX_CONFIG


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sendgate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    stack = commands.add_parser("stack", help="a private Postfix + sendgate stack")
    actions = stack.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="build and start a stack")
    up.add_argument("--dir", required=True)
    up.add_argument("--domain", default="example.org")
    up.add_argument("--mail-owner", default=None)
    down = actions.add_parser("down", help="stop a stack")
    down.add_argument("--dir", required=True)
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", nargs="?", default=os.environ.get("SENDGATE_CONFIG", config.DEFAULT_PATH))
    commands.add_parser("config-doc", help="print the configuration reference")
    resubmit = commands.add_parser("resubmit", help="send saved dead letters again")
    resubmit.add_argument("-v", "--verbose", action="store_true")
    resubmit.add_argument("file", nargs="?", default=None)
    for name in ("install-shim", "uninstall-shim"):
        shim = commands.add_parser(name, help=f"{name.split('-')[0]} the sendmail command as /usr/sbin/sendmail")
        shim.add_argument("--root", default="/")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        try:
            config.load(args.file)
        except config.ConfigError as err:
            print(f"sendgate: {err}", file=sys.stderr)
            return EX_CONFIG
        return 0
    if args.command == "config-doc":
        sys.stdout.write(config.reference_markdown())
        return 0
    if args.command == "resubmit":
        from sendgate.sendmail_shim import deadletter
        return deadletter.command(args.file, args.verbose)
    if args.command in ("install-shim", "uninstall-shim"):
        from sendgate import install
        try:
            done = (install.install if args.command == "install-shim" else install.uninstall)(args.root)
        except (install.InstallError, OSError) as err:
            print(f"sendgate: {args.command}: {err}", file=sys.stderr)
            return 1
        print("\n".join(done or ["nothing to do"]))
        return 0
    from sendgate import stack
    try:
        if args.action == "up":
            facts = stack.up(args.dir, domain=args.domain, mail_owner=args.mail_owner)
            for key, value in facts.items():
                print(f"{key}={value}")
        else:
            for stopped in stack.down(args.dir):
                print(f"stopped={stopped}")
    except stack.StackError as err:
        print(f"sendgate: stack {args.action}: {err}", file=sys.stderr)
        return 1
    except config.ConfigError as err:
        print(f"sendgate: {err}", file=sys.stderr)
        return EX_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main())
