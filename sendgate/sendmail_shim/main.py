"""NAME
    sendgate-sendmail - the sendmail(1) command as an unprivileged submission client

SYNOPSIS
    sendmail [options] [--] [recipient ...]
    sendmail -t [options] [recipient ...]
    sendmail -bs
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
    -F NAME     Full name for the From: the server adds when there is none.
    -N DSN      Delivery notifications: never, or a comma list of success,
                delay, failure (RCPT NOTIFY=).
    -R RET      full or hdrs: what a bounce returns (MAIL RET=).
    -V ENVID    Envelope id for DSNs (MAIL ENVID=).
    -B TYPE     7BIT or 8BITMIME (MAIL BODY=).
    -U          Ask for SMTPUTF8.
    -bm         Read the message and send it (the default).
    -bs         Speak SMTP on standard input and output, relayed to the
                submit socket (Symfony Mailer, Nextcloud, Alpine use this).
    -v          Print the SMTP dialogue on standard error.
    Accepted and ignored, as real callers pass them: -A -C -G -L -O -X -c
    -h -m -n -x -e* -o* (other than -oi) -od* -oe* -om -Ac -Am.
    Options may be clustered (-ti) and take their argument joined or as the
    next word; options after recipients count, except after "--".  A
    command-line recipient may be a comma list and may use Name <addr>.

SECURITY
    Runs as its caller, with no set-uid or set-gid bit and no privilege.
    Identity is established by the server from the socket's peer
    credentials; nothing this command sends can change it.

CONFIGURATION
    The socket is $SENDGATE_SOCKET, else submit_socket from the file named by
    $SENDGATE_CONFIG (default /etc/sendgate/sendgate.yaml), else
    /run/sendgate/submit.sock.  Only a plain `submit_socket: /path` line is
    read from that file, so that this command does not load a YAML parser.

DIAGNOSTICS
    One line on standard error: "sendmail: <what>: <why>".  Exit status
    (sysexits): 0 accepted by the MTA; 64 usage error; 65 malformed message;
    67 unknown recipient; 69 refused for another permanent reason; 75
    temporary failure, try again (listener or MTA down, 4xx); 77 refused by
    policy; 78 configuration error.  When sending fails after the message was
    read, the message is appended to ~/dead.letter (mbox, mode 0600) with its
    envelope, and the path is printed.

SEE ALSO
    sendgate-submitd(8), sendgate.yaml(5), sendmail(1) of Postfix and Sendmail
"""

# Start-up time is part of every cron job and PHP mail(): import only what
# the send path needs (no asyncio, email, yaml or argparse).
import os
import socket
import sys

from sendgate.smtpwire import dot_stuff, xtext

EX_OK, EX_USAGE, EX_DATAERR, EX_NOUSER, EX_UNAVAILABLE = 0, 64, 65, 67, 69
EX_SOFTWARE, EX_OSERR, EX_CANTCREAT, EX_TEMPFAIL, EX_NOPERM, EX_CONFIG = 70, 71, 73, 75, 77, 78

DEFAULT_CONFIG = "/etc/sendgate/sendgate.yaml"
DEFAULT_SOCKET = "/run/sendgate/submit.sock"
REPLY_TIMEOUT = 600  # seconds; the server's end-of-data wait is shorter

# Options that take an argument (joined or the next word), Sendmail's and
# Postfix's set together.  -b, -o and -e take theirs joined only.
WITH_ARGUMENT = set("ABCDFLMNOQRVXdfhpr")
FLAGS = set("GIUcimnstvx")


class Failure(Exception):
    """Ends the run: what failed, why, and the exit status."""

    def __init__(self, status: int, what: str, why: str):
        super().__init__(f"{what}: {why}")
        self.status, self.what, self.why = status, what, why


class Options:
    def __init__(self) -> None:
        self.mode = "m"
        self.extract = False
        self.ignore_dots = False
        self.sender = None
        self.full_name = None
        self.notify = None
        self.ret = None
        self.envid = None
        self.body = None
        self.smtputf8 = False
        self.verbose = False
        self.recipients: list[str] = []


def usage(why: str) -> Failure:
    return Failure(EX_USAGE, "usage", why)


def parse_args(argv: list[str]) -> Options:
    opts = Options()
    prog = os.path.basename(argv[0]) if argv else "sendmail"
    if prog == "mailq":
        opts.mode = "p"
    elif prog == "newaliases":
        opts.mode = "i"
    words = argv[1:]
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            opts.recipients.extend(words[i:])
            break
        if not word.startswith("-") or word == "-":
            opts.recipients.append(word)
            continue
        j = 1
        while j < len(word):
            letter = word[j]
            rest = word[j + 1:]
            if letter in "boe":
                if letter == "b" and not rest:
                    raise usage("-b needs a mode letter")
                take_joined(opts, letter, rest)
                break
            if letter == "q":
                opts.mode = "q"   # -q and -q<interval>: run the queue
                break
            if letter in WITH_ARGUMENT:
                if not rest:
                    if i >= len(words):
                        raise usage(f"option -{letter} needs an argument")
                    rest = words[i]
                    i += 1
                take_argument(opts, letter, rest)
                break
            if letter not in FLAGS:
                raise usage(f"unknown option -{letter}")
            take_flag(opts, letter)
            j += 1
    return opts


def take_joined(opts: Options, letter: str, rest: str) -> None:
    if letter == "b":
        if rest not in ("m", "s", "p", "i", "v"):
            raise usage(f"-b{rest} is not supported")
        opts.mode = rest
    elif letter == "o" and rest == "i":
        opts.ignore_dots = True
    # Any other -oX (-oem, -odi, -oA..., -om) and -eX: error and delivery
    # modes of Sendmail; the submit server always answers synchronously.


def take_argument(opts: Options, letter: str, value: str) -> None:
    if letter in "fr":
        opts.sender = "" if value in ("<>", "") else value.strip("<>")
    elif letter == "F":
        opts.full_name = value
    elif letter == "N":
        words = [w.strip().lower() for w in value.split(",")]
        if words != ["never"] and not all(w in ("success", "delay", "failure") for w in words):
            raise usage(f"bad -N value {value!r}: use never, or success,delay,failure")
        opts.notify = ",".join(w.upper() for w in words)
    elif letter == "R":
        if value.lower() not in ("full", "hdrs"):
            raise usage(f"bad -R value {value!r}: use full or hdrs")
        opts.ret = value.upper()
    elif letter == "V":
        opts.envid = value
    elif letter == "B":
        if value.upper() not in ("7BIT", "8BITMIME"):
            raise usage(f"bad -B value {value!r}: use 7BIT or 8BITMIME")
        opts.body = value.upper()
    # -A -C -D -L -M -O -Q -X -d -h -p: Sendmail configuration, logging and
    # debugging switches; accepted for compatibility and ignored.


def take_flag(opts: Options, letter: str) -> None:
    if letter == "t":
        opts.extract = True
    elif letter == "i":
        opts.ignore_dots = True
    elif letter == "U":
        opts.smtputf8 = True
    elif letter == "v":
        opts.verbose = True
    elif letter == "I":
        opts.mode = "i"
    # -G -c -m -n -s -x: gateway, connection caching, metoo, no aliasing:
    # accepted for compatibility and ignored.


def split_recipients(words: list[str]) -> list[str]:
    """argv words as addresses: comma lists split, `Name <addr>` reduced."""
    out = []
    for word in words:
        for part in split_commas(word):
            part = part.strip()
            if "<" in part and part.endswith(">"):
                part = part[part.rindex("<") + 1:-1]
            if part:
                out.append(part)
    return out


def split_commas(text: str) -> list[str]:
    parts, current, quoted, angle = [], [], False, 0
    for c in text:
        if c == '"':
            quoted = not quoted
        elif c == "<" and not quoted:
            angle += 1
        elif c == ">" and not quoted and angle:
            angle -= 1
        elif c == "," and not quoted and not angle:
            parts.append("".join(current))
            current = []
            continue
        current.append(c)
    parts.append("".join(current))
    return parts


def socket_path() -> str:
    path = os.environ.get("SENDGATE_SOCKET")
    if path:
        return path
    config = os.environ.get("SENDGATE_CONFIG") or DEFAULT_CONFIG
    try:
        with open(config, encoding="utf-8") as fp:
            for line in fp:
                if line.startswith("submit_socket:"):
                    value = line.split(":", 1)[1].split(" #", 1)[0].strip().strip("'\"")
                    if not value.startswith("/"):
                        raise Failure(EX_CONFIG, config, "submit_socket must be an absolute path")
                    return value
    except FileNotFoundError:
        if os.environ.get("SENDGATE_CONFIG"):
            raise Failure(EX_CONFIG, config, "no such file") from None
    except OSError as err:
        raise Failure(EX_CONFIG, config, err.strerror) from None
    return DEFAULT_SOCKET


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


class Client:
    """A lock-step SMTP client on the submit socket, with pipelining of the
    envelope (the server advertises PIPELINING)."""

    def __init__(self, path: str, verbose: bool):
        self.verbose = verbose
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(REPLY_TIMEOUT)
        try:
            self.sock.connect(path)
        except OSError as err:
            self.sock.close()
            raise Failure(EX_TEMPFAIL, f"cannot connect to {path}", err.strerror or str(err)) from None
        self.buffer = b""

    def send(self, data: bytes) -> None:
        if self.verbose:
            sys.stderr.write(data.decode("utf-8", "replace") if len(data) < 2048 else "(message)\n")
        try:
            self.sock.sendall(data)
        except OSError as err:
            raise Failure(EX_TEMPFAIL, "lost the submit server", err.strerror or str(err)) from None

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            while b"\n" not in self.buffer:
                try:
                    chunk = self.sock.recv(65536)
                except OSError as err:
                    raise Failure(EX_TEMPFAIL, "lost the submit server", err.strerror or "timed out") from None
                if not chunk:
                    raise Failure(EX_TEMPFAIL, "lost the submit server", "connection closed")
                self.buffer += chunk
            line, _, self.buffer = self.buffer.partition(b"\n")
            text = line.rstrip(b"\r").decode("utf-8", "replace")
            if self.verbose:
                sys.stderr.write(text + "\n")
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                code = int(text[:3]) if text[:3].isdigit() else 0
                return code, " ".join(lines)

    def close(self) -> None:
        try:
            self.send(b"QUIT\r\n")
            self.reply()
        except Failure:
            pass
        self.sock.close()


def status_for(code: int, text: str) -> int:
    """sysexits status for a refusal (DESIGN.md §4)."""
    if 400 <= code < 500 or code == 0:
        return EX_TEMPFAIL
    enhanced = text.split(" ", 1)[0]
    if enhanced.startswith("5.7."):
        return EX_NOPERM
    if enhanced.startswith("5.1."):
        return EX_NOUSER
    if enhanced.startswith(("5.6.", "5.3.4")):
        return EX_DATAERR
    return EX_UNAVAILABLE


def send(opts: Options, path: str, message: bytes, recipients: list[str]) -> str:
    client = Client(path, opts.verbose)
    try:
        code, text = client.reply()
        if code != 220:
            raise Failure(status_for(code, text), "submit server refused the session", f"{code} {text}")
        client.send(b"EHLO localhost\r\n")
        code, text = client.reply()
        if code != 250:
            raise Failure(status_for(code, text), "EHLO refused", f"{code} {text}")
        sender = opts.sender if opts.sender is not None else login_name()
        mail = [f"MAIL FROM:<{sender}>"]
        mail += ["RCPTHDR"] if opts.extract else []
        mail += [f"BODY={opts.body}"] if opts.body else []
        mail += [f"RET={opts.ret}"] if opts.ret else []
        mail += [f"ENVID={xtext(opts.envid)}"] if opts.envid else []
        mail += ["SMTPUTF8"] if opts.smtputf8 else []
        rcpt_params = f" NOTIFY={opts.notify}" if opts.notify else ""
        envelope = [" ".join(mail)] + [f"RCPT TO:<{r}>{rcpt_params}" for r in recipients] + ["DATA"]
        client.send("".join(line + "\r\n" for line in envelope).encode("utf-8", "surrogateescape"))
        for line in envelope:
            code, text = client.reply()
            if line == "DATA":
                if code != 354:
                    raise Failure(status_for(code, text), "message refused", f"{code} {text}")
            elif code >= 400:
                what = "sender refused" if line.startswith("MAIL") else f"recipient <{line[9:].split('>')[0]}> refused"
                # Drain the remaining pipelined replies before giving up.
                for _ in envelope[envelope.index(line) + 1:]:
                    client.reply()
                raise Failure(status_for(code, text), what, f"{code} {text}")
        client.send(dot_stuff(message) + b".\r\n")
        code, text = client.reply()
        if code != 250:
            raise Failure(status_for(code, text), "message refused", f"{code} {text}")
        return text
    finally:
        client.close()


def login_name() -> str:
    import pwd
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        raise Failure(EX_NOPERM, "who are you", f"uid {os.getuid()} has no login name") from None


def save_dead_letter(message: bytes, opts: Options, recipients: list[str]) -> str | None:
    """Append the message and its envelope to ~/dead.letter as an mbox entry.

    Opened with O_NOFOLLOW and O_APPEND, created 0600: a symlink planted in
    the home directory is refused, an existing file is never overwritten.
    """
    import pwd
    import time
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return None
    path = os.path.join(home, "dead.letter")
    sender = opts.sender if opts.sender is not None else login_name()
    envelope = [f"X-Sendgate-Envelope-From: <{sender}>",
                "X-Sendgate-Envelope-To: " + (", ".join(f"<{r}>" for r in recipients) or "(none)"),
                "X-Sendgate-Extract: " + ("yes" if opts.extract else "no")]
    body = message.replace(b"\r\n", b"\n")
    quoted = b"\n".join(b">" + line if line.lstrip(b">").startswith(b"From ") else line
                        for line in body.split(b"\n"))
    entry = (f"From {sender or 'MAILER-DAEMON'} {time.asctime()}\n" + "\n".join(envelope) + "\n").encode(
        "utf-8", "surrogateescape") + quoted.rstrip(b"\n") + b"\n\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None
    try:
        os.write(fd, entry)
    finally:
        os.close(fd)
    return path


def relay_smtp(path: str) -> int:
    """-bs: copy standard input to the socket and the socket to standard output."""
    import select
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
    except OSError as err:
        sys.stdout.buffer.write(b"421 4.3.0 sendmail: submit server unavailable\r\n")
        sys.stdout.flush()
        raise Failure(EX_TEMPFAIL, f"cannot connect to {path}", err.strerror or str(err)) from None
    stdin, stdout = sys.stdin.buffer.fileno(), sys.stdout.buffer.fileno()
    open_in = True
    while True:
        readable, _, _ = select.select([sock] + ([stdin] if open_in else []), [], [])
        if sock in readable:
            data = sock.recv(65536)
            if not data:
                return EX_OK
            os.write(stdout, data)
        if open_in and stdin in readable:
            data = os.read(stdin, 65536)
            if data:
                sock.sendall(data)
            else:
                open_in = False
                sock.shutdown(socket.SHUT_WR)


def run(argv: list[str]) -> int:
    if "--help" in argv[1:2] or "-h" == argv[1:2]:
        print(__doc__)
        return EX_OK
    opts = parse_args(argv)
    if opts.mode == "s":
        return relay_smtp(socket_path())
    if opts.mode in ("p", "i", "q", "v"):
        raise Failure(EX_USAGE, f"-b{opts.mode}" if opts.mode != "q" else "-q",
                      "not available in this version of sendgate")
    recipients = split_recipients(opts.recipients)
    if not recipients and not opts.extract:
        raise usage("no recipients given (use -t to take them from the header)")
    path = socket_path()
    message = read_message(sys.stdin.buffer, opts.ignore_dots)
    try:
        send(opts, path, message, recipients)
    except Failure as failure:
        saved = save_dead_letter(message, opts, recipients)
        note = f"; message saved in {saved}" if saved else "; the message could not be saved"
        raise Failure(failure.status, failure.what, failure.why + note) from None
    return EX_OK


def main() -> int:
    try:
        return run(sys.argv)
    except Failure as failure:
        sys.stderr.write(f"sendmail: {failure}\n")
        return failure.status
    except KeyboardInterrupt:
        sys.stderr.write("sendmail: interrupted\n")
        return EX_TEMPFAIL


if __name__ == "__main__":
    sys.exit(main())
