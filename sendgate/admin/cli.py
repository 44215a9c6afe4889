"""NAME
    sendgate - administer sendgate

SYNOPSIS
    sendgate stack up --dir DIR [--mta postfix|sendmail] [--domain DOMAIN] [--mail-owner USER] [--dkim] [--set KEY=VALUE]...
    sendgate stack adduser --dir DIR LOGIN PASSWORD
    sendgate stack down --dir DIR
    sendgate check-config [--no-mta] [FILE]
    sendgate status [--dir DIR] [--config FILE]
    sendgate config-doc
    sendgate man-pages DIR
    sendgate setup-postfix [--root DIR] [--domain DOMAIN] [--submission] [--undo]
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
                  --dkim adds a private OpenDKIM (Debian's opendkim) as a
                  second milter after sendgate-milter, on either MTA,
                  signing mail of DOMAIN with selector test and a key made
                  at stack up; it prints dkim_record= (the public key as a
                  TXT record), dkim_config= and dkim_log= (docs/dkim.md).
                  DIR must then not be below a directory other users may
                  write, such as /tmp: OpenDKIM refuses its files there.
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
                  existing one is kept) with Postfix's myhostname and
                  myorigin (--domain overrides myorigin) and no
                  sender_login_maps entries, the systemd units, and in Postfix
                  the submit daemon's service and the milter, failing closed,
                  as that sendgate.yaml names them (submit_upstream,
                  milter_socket, milter_local_daemon_name), with the
                  milter socket's directory only Postfix's group may
                  enter (mode 2750).  --submission
                  adds the port 587 service (STARTTLS, then SASL AUTH, the
                  milter's policy for the authenticated user).  --undo
                  takes it all out again.  Starts nothing; see the README's install guide
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
    One page per sub-command: sendgate-stack(8), sendgate-check-config(8),
    sendgate-status(8), sendgate-config-doc(8), sendgate-setup-postfix(8),
    sendgate-man-pages(8), sendgate-resubmit(8), sendgate-install-shim(8),
    sendgate-uninstall-shim(8) (`sendgate COMMAND --help` prints the same).
    sendgate-submitd(8), sendgate-milter(8), sendgate-sendmail(1), sendgate.yaml(5)
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from sendgate import config
from sendgate.daemon import EX_CONFIG


def command_text(name: str) -> str:
    """What the DESCRIPTION section above says of sub-command name ("stack up",
    "setup-postfix", ...): one paragraph, the sub-command's --help and the
    DESCRIPTION of its manual page (sendgate-NAME(8))."""
    body = __doc__.split("\nDESCRIPTION\n", 1)[1].split("\n\n    To send", 1)[0].splitlines()
    starts = [i for i, line in enumerate(body) if line[4:5].strip()]
    for at, start in enumerate(starts):
        if body[start][4:].startswith(name + " "):
            end = starts[at + 1] if at + 1 < len(starts) else len(body)
            words = body[start][4 + len(name):].split() + [w for line in body[start + 1:end] for w in line.split()]
            return textwrap.fill(" ".join(words), 76)
    raise KeyError(name)


def _formatter(prog: str) -> argparse.HelpFormatter:
    """A fixed width, so that --help and the manual pages do not depend on
    the terminal."""
    return argparse.RawDescriptionHelpFormatter(prog, width=80)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sendgate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(group, name: str, summary: str, full: str | None = None) -> argparse.ArgumentParser:
        return group.add_parser(name, help=summary, description=command_text(full or name),
                                formatter_class=_formatter)
    stack = command(commands, "stack", "a private Postfix or Sendmail + sendgate stack", "stack up")
    stack.description = "\n\n".join(textwrap.fill(f"stack {a}: " + " ".join(command_text(f"stack {a}").split()), 76)
                                    for a in ("up", "adduser", "down"))
    actions = stack.add_subparsers(dest="action", required=True)
    up = command(actions, "up", "build and start a stack", "stack up")
    up.add_argument("--dir", required=True, help="the stack's directory (created; everything it runs lives there)")
    up.add_argument("--mta", choices=("postfix", "sendmail"), default="postfix",
                    help="the MTA the stack runs (default: postfix)")
    up.add_argument("--domain", default="example.org",
                    help="the domain local users send as, the stack's myorigin (default: example.org)")
    up.add_argument("--mail-owner", default=None, metavar="USER",
                    help="the user owning DIR/mail/Maildir (default: the sudo user, else sendgate; Postfix only)")
    up.add_argument("--dkim", action="store_true",
                    help="also run a private OpenDKIM, signing for DOMAIN, after sendgate-milter")
    up.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                    help="put KEY: VALUE (YAML) into the stack's sendgate.yaml; may be repeated")
    adduser = command(actions, "adduser", "create a SASL account on a stack", "stack adduser")
    adduser.add_argument("--dir", required=True, help="the stack's directory")
    adduser.add_argument("login", help="the SASL login (a local user's name, to send as that user)")
    adduser.add_argument("password", help="its password")
    down = command(actions, "down", "stop a stack", "stack down")
    down.add_argument("--dir", required=True, help="the stack's directory")
    check = command(commands, "check-config", "validate a configuration file")
    check.add_argument("--no-mta", action="store_true", help="check the file only, not the MTA")
    check.add_argument("file", nargs="?", default=os.environ.get("SENDGATE_CONFIG", config.DEFAULT_PATH),
                       help="the configuration file (default: $SENDGATE_CONFIG, else /etc/sendgate/sendgate.yaml)")
    status = command(commands, "status", "daemons, sockets and MTA settings")
    status.add_argument("--dir", help="a stack started with `stack up` instead of the installed configuration")
    status.add_argument("--config", default=os.environ.get("SENDGATE_CONFIG", config.DEFAULT_PATH),
                        help="the configuration file (default: $SENDGATE_CONFIG, else /etc/sendgate/sendgate.yaml)")
    command(commands, "config-doc", "print the configuration reference")
    setup = command(commands, "setup-postfix", "wire sendgate into Postfix")
    setup.add_argument("--root", default="/", metavar="DIR",
                       help="the root of the tree to change (default: /); its etc/postfix is the Postfix configured")
    setup.add_argument("--domain", default=None,
                       help="myorigin for a new configuration file (default: Postfix's myorigin)")
    setup.add_argument("--submission", action="store_true",
                       help="also add the submission service (port 587: STARTTLS with main.cf's certificate, then "
                            "SASL AUTH with main.cf's SASL server; the README says what to set)")
    setup.add_argument("--undo", action="store_true", help="take out what setup-postfix put in, --submission's "
                       "service included")
    man = command(commands, "man-pages", "write the manual pages")
    man.add_argument("dir", help="the directory to write them into (created)")
    resubmit = command(commands, "resubmit", "send saved dead letters again")
    resubmit.add_argument("-v", "--verbose", action="store_true", help="print the SMTP dialogue")
    resubmit.add_argument("--list", action="store_true", help="list the saved messages, send nothing")
    resubmit.add_argument("file", nargs="?", default=None,
                          help="a dead-letter file to send from (default: the spool and ~/dead.letter)")
    for name in ("install-shim", "uninstall-shim"):
        shim = command(commands, name, f"{name.split('-')[0]} the sendmail command as /usr/sbin/sendmail")
        shim.add_argument("--root", default="/", metavar="DIR", help="the root of the tree to change (default: /)")
    return parser


def subcommands(parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.ArgumentParser]:
    """Every sub-command's parser by name ("stack", "setup-postfix", ...)."""
    parser = parser or build_parser()
    (group,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(group.choices)


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
    from sendgate.stack import common, opendkim, postfix, sendmail
    if args.action == "up":
        mta = {"postfix": postfix, "sendmail": sendmail}[args.mta]
        extra = {"dkim": True} if args.dkim else {}
        facts = mta.up(args.dir, domain=args.domain, mail_owner=args.mail_owner,
                       settings=parse_settings(args.settings), **extra)
        for key, value in facts.items():
            print(f"{key}={value}")
    elif args.action == "adduser":
        postfix.adduser(args.dir, args.login, args.password)  # SASL: the Postfix stack's submission service
    else:
        for stopped in common.down(args.dir, postfix.stop_mta, sendmail.stop_mta, opendkim.stop):
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
                steps = hostsetup.setup(args.root, args.domain, args.submission)
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
