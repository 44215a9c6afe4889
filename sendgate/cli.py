"""NAME
    sendgate - administer sendgate

SYNOPSIS
    sendgate stack up --dir DIR [--mta postfix|sendmail] [--domain DOMAIN] [--mail-owner USER]
    sendgate stack down --dir DIR
    sendgate check-config [FILE]
    sendgate config-doc

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
                  --mta sendmail builds the same stack on the real Sendmail
                  8.17 instead (fetched from Debian into /opt/sendgate/sendmail
                  on first use; see "Using sendgate with Sendmail" in the
                  README): it prints sendmail_config= instead of
                  postfix_config=, delivers as Sendmail's account smmta and
                  takes no --mail-owner.
    stack down    Stop everything stack up started under DIR.
    check-config  Validate FILE (default $SENDGATE_CONFIG or
                  /etc/sendgate/sendgate.yaml); prints nothing and exits 0
                  when it is valid.
    config-doc    Print the configuration reference (Markdown).

    To send through a stack:  SENDGATE_CONFIG=DIR/sendgate.yaml sendgate-sendmail -t -i < message

DIAGNOSTICS
    Exit status 0 on success, 64 for a usage error, 78 for a configuration
    error (the message names file, line and key), 1 when the stack cannot
    be started or stopped, with the reason on standard error.

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
    stack = commands.add_parser("stack", help="a private Postfix or Sendmail + sendgate stack")
    actions = stack.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="build and start a stack")
    up.add_argument("--dir", required=True)
    up.add_argument("--mta", choices=("postfix", "sendmail"), default="postfix")
    up.add_argument("--domain", default="example.org")
    up.add_argument("--mail-owner", default=None)
    down = actions.add_parser("down", help="stop a stack")
    down.add_argument("--dir", required=True)
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", nargs="?", default=os.environ.get("SENDGATE_CONFIG", config.DEFAULT_PATH))
    commands.add_parser("config-doc", help="print the configuration reference")
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
    from sendgate import stack
    try:
        if args.action == "up":
            facts = stack.up(args.dir, domain=args.domain, mail_owner=args.mail_owner, mta=args.mta)
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
