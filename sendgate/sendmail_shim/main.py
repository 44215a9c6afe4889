"""NAME
    sendgate-sendmail - the sendmail(1) command as an unprivileged submission client

SYNOPSIS
    sendmail [options] [--] [recipient ...]
    sendmail -t [options] [recipient ...]
    sendmail -bs | -bv recipient ... | -bp | -bi | -q
    mailq | newaliases | send-mail (by the name it is called under)

DESCRIPTION
    Reads a message on standard input and submits it over SMTP to the
    sendgate submit socket, which knows who is calling from the kernel and
    passes the message to the MTA.  The exit status is 0 only after the MTA
    accepted the message.

    -t          Recipients from the To:, Cc: and Bcc: header (Resent-* when
                re-sending); the server extracts them (RCPTHDR) and removes
                Bcc:.  Recipients on the command line are added.
    -i, -oi     A line holding only "." does not end the input.  Without it
                such a line ends the input, as in Postfix and Sendmail.
    -f SENDER   Envelope sender (also -r); the server decides whether this
                user may use it.  -f '<>' or -f '' is the null sender.
    -F NAME     Full name: when the message has no From:, this command adds
                "From: NAME <sender>" (the -f address, else the user's).
    -N DSN      Delivery notifications: never, or a comma list of success,
                delay, failure (RCPT NOTIFY=).  With -t this command finds
                the header's recipients too, to give each one NOTIFY.
    -R RET      full or hdrs: what a bounce returns (MAIL RET=).
    -V ENVID    Envelope id for DSNs (MAIL ENVID=).
    -B TYPE     7BIT or 8BITMIME (MAIL BODY=).
    -U          Ask for SMTPUTF8 (MAIL SMTPUTF8); asked anyway when the
                sender or a command-line recipient is not ASCII.
    -bm         Read the message and send it (the default).
    -bs         Speak SMTP on standard input and output, relayed to the
                submit socket (Symfony Mailer, Nextcloud, Alpine use this).
    -bv         Do not send: ask the server about each recipient and print
                one line per address, "<addr>... deliverable: REPLY" or
                "<addr>... undeliverable: REPLY".
    -bp         List the mail queue (also as mailq): runs
                sendmail_mailq_command.
    -bi, -I     Rebuild the aliases database (also as newaliases): runs
                sendmail_newaliases_command.
    -q[...]     Deliver the queued mail now: runs sendmail_flush_command.
    -v          Print the SMTP dialogue on standard error.
    Accepted and ignored, as real callers pass them: -A -C -D -G -L -M -O
    -Q -X -c -d -h -m -n -p -s -x, -e* and -o* (other than -oi), so -odi,
    -odb, -oem, -oep, -om, -oA...
    Options may be clustered (-ti) and take their argument joined or as the
    next word; options after recipients count, except after "--".  A
    command-line recipient may be a comma list and may use Name <addr>; a
    bare login is qualified by the server.

SECURITY
    Runs as its caller, with no set-uid or set-gid bit and no privilege.
    Identity is established by the server from the socket's peer
    credentials; nothing this command sends can change it.

CONFIGURATION
    The socket is $SENDGATE_SOCKET, else submit_socket from the file named
    by $SENDGATE_CONFIG (default /etc/sendgate/sendgate.yaml), else
    /run/sendgate/submit.sock.  This command reads only plain `key: value`
    lines of that file, for the keys submit_socket, spool_directory, myorigin, myhostname,
    sendmail_mailq_command, sendmail_newaliases_command and
    sendmail_flush_command, so that it does not load a YAML parser.

    A queue command that names this very program (Postfix's newaliases is a
    link to sendmail, which `sendgate install-shim` replaces) runs the MTA's
    own sendmail that install-shim kept, /usr/sbin/sendmail.sendgate-orig,
    with -bp, -bi or -q instead; a command that comes back here anyway
    fails with status 78.

DIAGNOSTICS
    One line on standard error: "sendmail: <what>: <why>".  Exit status
    (sysexits): 0 accepted by the MTA; 64 usage error; 65 malformed message;
    67 unknown recipient; 69 refused for another permanent reason; 75
    temporary failure, try again (listener or MTA down, 4xx); 77 refused by
    policy; 78 configuration error.

SAVED MESSAGES
    When sending fails after the message was read, the message is saved
    with its envelope, and a Date: of that moment when it had none, as one
    file of the caller's in spool_directory (default
    /var/spool/sendgate/deferred; docs/spool.md), and the path is printed;
    the exit status stays that of the failure.  sendgate-submitd sends it
    again, as its owner, once the MTA answers.  When the spool cannot be
    written, the message is appended to ~/dead.letter (mbox, mode 0600,
    never through a symlink, never overwritten) instead.  `sendgate
    resubmit` sends the user's saved messages again and removes each one
    only after the MTA accepted it; `sendgate resubmit --list` lists them.

SEE ALSO
    sendgate(8), sendgate-submitd(8), sendgate.yaml(5), sendmail(1) of
    Postfix and Sendmail
"""

# Start-up time is part of every cron job and PHP mail(): the send path
# (-bm, the default) loads this file, options.py, client.py and
# sendgate/wiredata.py, and no asyncio, email, yaml, argparse, re, socket
# or enum (tests/test_sendmail_modes.py checks it on a real send).
# modes.py is imported for the other modes, deadletter.py when a send
# failed, fullname.py for -F, sendgate.policy only for -t with -N.
import _socket
import os
import sys

from sendgate.sendmail_shim.client import (EX_IOERR, EX_OK, EX_TEMPFAIL, Failure, login_name, read_settings, send,
                                           socket_path)
from sendgate.sendmail_shim.options import envelope_for, parse_args, split_recipients, usage


def read_message(stream, ignore_dots: bool) -> bytes:
    """Standard input as the message: a leading mbox `From ` line dropped,
    and, without -i, cut at a line holding only a dot."""
    data = stream.read()
    if data.startswith(b"From "):
        data = data[data.find(b"\n") + 1:] if b"\n" in data else b""
    return data if ignore_dots else cut_at_dot(data)


def cut_at_dot(data: bytes) -> bytes:
    """Everything before the first line that is "." (with LF or CRLF)."""
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        stop = len(data) if end < 0 else end
        if data[pos:stop].rstrip(b"\r") == b".":
            return data[:pos]
        pos = stop + 1
    return data


# domain_of and qualified repeat the server's rule (Settings.domain in
# sendgate/config.py, qualify in sendgate/policy/sender.py): those modules
# load yaml, enum and sendgate.replies, which the send path does without.
def domain_of(settings: dict[str, str]) -> str:
    """The domain for unqualified addresses, as the server computes it."""
    return settings.get("myorigin") or settings.get("myhostname") or _socket.gethostname()


def qualified(address: str, settings: dict[str, str]) -> str:
    return address if "@" in address or not address else f"{address}@{domain_of(settings)}"


def header_recipients(message: bytes, settings: dict[str, str]) -> list[str]:
    """-t with -N: the header's recipients, found here too so that each gets
    an RCPT carrying NOTIFY (the server merges them with its own RCPTHDR
    extraction, duplicates collapsed).  A header the server will refuse
    adds none here; the server's 554 names the problem."""
    from sendgate.policy.envelope import HeaderError, recipients_from_header
    from sendgate.policy.message import split_message
    try:
        return list(recipients_from_header(split_message(message)[0], domain_of(settings)).recipients)
    except HeaderError:
        return []


def run(argv: list[str]) -> int:
    if argv[1:2] == ["--help"]:
        sys.stdout.write(__doc__)
        return EX_OK
    opts = parse_args(argv)
    settings = read_settings()
    if opts.mode != "m":
        from sendgate.sendmail_shim.modes import run_mode
        return run_mode(opts, settings)
    path = socket_path(settings)
    recipients = split_recipients(opts.recipients)
    if not recipients and not opts.extract:
        raise usage("no recipients given (use -t to take them from the header)")
    message = read_message(sys.stdin.buffer, opts.ignore_dots)
    if opts.extract and opts.notify:
        recipients = recipients + header_recipients(message, settings)
    envelope = envelope_for(opts, recipients)
    if opts.full_name is not None:
        from sendgate.sendmail_shim.fullname import with_from
        message = with_from(message, opts.full_name, qualified(envelope.sender or login_name(), settings))
    try:
        send(envelope, path, message, opts.verbose)
    except Failure as failure:
        from sendgate.sendmail_shim.deadletter import keep
        saved = keep(message, envelope, settings)
        note = f"; message saved in {saved}" if saved else "; the message could not be saved"
        raise Failure(failure.status, failure.what, failure.why + note) from None
    return EX_OK


def main() -> int:
    try:
        return run(sys.argv)
    except Failure as failure:
        complain(f"sendmail: {failure}\n")
        return failure.status
    except KeyboardInterrupt:
        complain("sendmail: interrupted\n")
        return EX_TEMPFAIL
    except OSError as err:  # standard input or output failing (EIO, a full disk)
        complain(f"sendmail: {err.strerror or err}\n")
        return EX_IOERR


def complain(text: str) -> None:
    """text on standard error, when there is one: cron and daemons may run
    the command with it closed, and the exit status must still be ours."""
    if sys.stderr is not None:
        try:
            sys.stderr.write(text)
        except Exception:  # noqa: BLE001 - nowhere left to say it
            pass


def leave(status: int) -> None:
    """Exit with status at once, without the interpreter's teardown (1-2 ms,
    a seventh of a run: bench/).  Nothing is lost: standard output and error
    are flushed here, and every file the command opens (the dead letter) is
    closed before main() returns.  A stream that was closed when the command
    started (cron, daemons: `>&-`) is None; output that cannot be written
    makes an otherwise successful run EX_IOERR, as Python's teardown would
    have failed it."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a full disk, a reader gone, a closed stream
            status = status or EX_IOERR
    os._exit(status)


def command() -> None:
    """The program: the launchers of install-shim and the pip entry point."""
    leave(main())


if __name__ == "__main__":
    command()
