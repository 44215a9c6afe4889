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
    lines of that file, for the keys submit_socket, myorigin, myhostname,
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

DEAD LETTERS
    When sending fails after the message was read, the message is appended
    to ~/dead.letter (mbox, mode 0600, never through a symlink, never
    overwritten) with its envelope, and the path is printed.  `sendgate
    resubmit` sends the saved messages again, as the same user, and removes
    each one only after the MTA accepted it.

SEE ALSO
    sendgate(8), sendgate-submitd(8), sendgate.yaml(5), sendmail(1) of
    Postfix and Sendmail
"""

# Start-up time is part of every cron job and PHP mail(): import only what
# the send path needs.  No asyncio, email, yaml, argparse or re; _socket
# rather than socket, whose wrapper imports enum and selectors.
import _socket
import os
import sys

from sendgate.wiredata import data_pieces, xtext

EX_OK, EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_NOUSER, EX_UNAVAILABLE = 0, 64, 65, 66, 67, 69
EX_SOFTWARE, EX_OSERR, EX_CANTCREAT, EX_IOERR, EX_TEMPFAIL, EX_NOPERM, EX_CONFIG = 70, 71, 73, 74, 75, 77, 78

DEFAULT_CONFIG = "/etc/sendgate/sendgate.yaml"
DEFAULT_SOCKET = "/run/sendgate/submit.sock"
REPLY_TIMEOUT = 600  # seconds; the server's end-of-data wait is shorter

# Options that take an argument (joined or the next word), Sendmail's and
# Postfix's set together.  -b, -o and -e take theirs joined only.
WITH_ARGUMENT = set("ABCDFLMNOQRVXdfhpr")
FLAGS = set("GIUcimnstvx")

# The keys of sendgate.yaml this command reads (see CONFIGURATION above).
SETTINGS = ("submit_socket", "myorigin", "myhostname",
            "sendmail_mailq_command", "sendmail_newaliases_command", "sendmail_flush_command")

# -bp, -bi and -q run the MTA's own programs: (setting, default, the flag the
# MTA's original sendmail takes for the same job).  The defaults are
# Postfix's, and repeated in sendgate/config.py's SCHEMA.
DELEGATED = {
    "p": ("sendmail_mailq_command", "postqueue -p", "-bp"),
    "i": ("sendmail_newaliases_command", "newaliases", "-bi"),
    "q": ("sendmail_flush_command", "postqueue -f", "-q"),
}
# Set in the environment of a delegated command: if it leads back here, stop.
LOOP_GUARD = "SENDGATE_DELEGATED"
SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


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


class Envelope:
    """What the client sends around the message: MAIL and its parameters,
    the RCPT addresses and theirs.  Saved with a dead letter, so that a
    resubmission sends exactly the same."""

    def __init__(self, sender: str, recipients: list[str], extract: bool,
                 mail_params: list[str], rcpt_params: list[str]):
        self.sender, self.recipients, self.extract = sender, recipients, extract
        self.mail_params, self.rcpt_params = mail_params, rcpt_params

    @classmethod
    def from_options(cls, opts: Options, recipients: list[str]) -> "Envelope":
        mail = ["RCPTHDR"] if opts.extract else []
        mail += [f"BODY={opts.body}"] if opts.body else []
        mail += [f"RET={opts.ret}"] if opts.ret else []
        mail += [f"ENVID={xtext(opts.envid)}"] if opts.envid else []
        sender = opts.sender if opts.sender is not None else login_name()
        # An address that is not ASCII needs SMTPUTF8 whether or not -U asked.
        if opts.smtputf8 or not all(a.isascii() for a in [sender, *recipients]):
            mail.append("SMTPUTF8")
        rcpt = [f"NOTIFY={opts.notify}"] if opts.notify else []
        return cls(sender, recipients, opts.extract, mail, rcpt)


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
                opts.mode = "q"   # -q, -q<interval>, -qR..., -qI...: run the queue now
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
    elif letter == "o" and rest[:1] == "i":
        # -oi, and Sendmail's -oiTrue; Postfix, too, looks at the letter only.
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


def read_settings() -> dict[str, str]:
    """The SETTINGS keys found in the configuration file, as text."""
    config = os.environ.get("SENDGATE_CONFIG") or DEFAULT_CONFIG
    found = {}
    try:
        with open(config, encoding="utf-8") as fp:
            for line in fp:
                key, colon, value = line.partition(":")
                if colon and key in SETTINGS:
                    found[key] = value.split(" #", 1)[0].strip().strip("'\"")
    except FileNotFoundError:
        if os.environ.get("SENDGATE_CONFIG"):
            raise Failure(EX_CONFIG, config, "no such file") from None
    except OSError as err:
        raise Failure(EX_CONFIG, config, err.strerror) from None
    except UnicodeDecodeError:
        raise Failure(EX_CONFIG, config, "not valid UTF-8") from None
    if "submit_socket" in found and not found["submit_socket"].startswith("/"):
        raise Failure(EX_CONFIG, config, "submit_socket must be an absolute path")
    return found


def socket_path(settings: dict[str, str]) -> str:
    return os.environ.get("SENDGATE_SOCKET") or settings.get("submit_socket") or DEFAULT_SOCKET


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


def with_from(message: bytes, full_name: str, address: str) -> bytes:
    """-F: the message with `From: NAME <address>` added when it has no
    From: field; unchanged otherwise."""
    from sendgate.policy.fixups import format_mailbox
    from sendgate.policy.message import split_message
    fields, body = split_message(message)
    if any(f.is_("From") for f in fields):
        return message
    line = f"From: {format_mailbox(full_name, address)}\n".encode("utf-8", "surrogateescape")
    if not fields and len(body) == len(message):
        return line + b"\n" + message   # no header at all: the input is all body
    return line + message


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


class Client:
    """A lock-step SMTP client on the submit socket, with pipelining of the
    envelope (the server advertises PIPELINING)."""

    def __init__(self, path: str, verbose: bool):
        self.verbose = verbose
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
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

    def command(self, line: str) -> tuple[int, str]:
        self.send(line.encode("utf-8", "surrogateescape") + b"\r\n")
        return self.reply()

    def greet(self) -> None:
        code, text = self.reply()
        if code != 220:
            raise Failure(status_for(code, text), "submit server refused the session", f"{code} {text}")
        code, text = self.command("EHLO localhost")
        if code != 250:
            raise Failure(status_for(code, text), "EHLO refused", f"{code} {text}")

    def close(self) -> None:
        # The verdict is in; waiting for the 221 would only cost a round trip.
        try:
            self.send(b"QUIT\r\n")
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


def send(envelope: Envelope, path: str, message: bytes, verbose: bool = False) -> str:
    """Submit one message; return the server's 250 text or raise Failure."""
    client = Client(path, verbose)
    try:
        client.greet()
        mail = " ".join([f"MAIL FROM:<{envelope.sender}>", *envelope.mail_params])
        rcpt_params = "".join(" " + p for p in envelope.rcpt_params)
        commands = [mail] + [f"RCPT TO:<{r}>{rcpt_params}" for r in envelope.recipients] + ["DATA"]
        client.send("".join(line + "\r\n" for line in commands).encode("utf-8", "surrogateescape"))
        for n, line in enumerate(commands):
            code, text = client.reply()
            if line == "DATA":
                if code != 354:
                    raise Failure(status_for(code, text), "message refused", f"{code} {text}")
            elif code >= 400:
                what = "sender refused" if n == 0 else f"recipient <{envelope.recipients[n - 1]}> refused"
                # Drain the remaining pipelined replies before giving up.
                for _ in commands[n + 1:]:
                    client.reply()
                raise Failure(status_for(code, text), what, f"{code} {text}")
        for piece in data_pieces(message):
            client.send(piece)
        code, text = client.reply()
        if code != 250:
            raise Failure(status_for(code, text), "message refused", f"{code} {text}")
        return text
    finally:
        client.close()


def verify(opts: Options, path: str, recipients: list[str]) -> int:
    """-bv: one line per address saying whether the server accepts it."""
    if not recipients:
        raise usage("-bv needs recipients")
    if opts.extract:
        raise usage("-bv takes its recipients from the command line, not -t")
    client = Client(path, opts.verbose)
    worst, refused = EX_OK, 0
    try:
        client.greet()
        sender = opts.sender if opts.sender is not None else login_name()
        code, text = client.command(f"MAIL FROM:<{sender}>")
        if code != 250:
            raise Failure(status_for(code, text), "sender refused", f"{code} {text}")
        for rcpt in recipients:
            code, text = client.command(f"RCPT TO:<{rcpt}>")
            verdict = "deliverable" if 200 <= code < 300 else "undeliverable"
            sys.stdout.write(f"{rcpt}... {verdict}: {code} {text}\n")
            if verdict == "undeliverable":
                refused += 1
                # A permanent refusal of an address is "unknown recipient".
                worst = worst or (EX_TEMPFAIL if 400 <= code < 500 else EX_NOUSER)
        client.command("RSET")
    finally:
        client.close()
    sys.stdout.flush()
    if refused:
        raise Failure(worst, "-bv", f"{refused} of {len(recipients)} addresses undeliverable")
    return EX_OK


def login_name() -> str:
    import pwd
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        raise Failure(EX_NOPERM, "who are you", f"uid {os.getuid()} has no login name") from None


def relay_smtp(path: str) -> int:
    """-bs: copy standard input to the socket and the socket to standard output."""
    import select
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
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
            while data:
                data = data[os.write(stdout, data):]
        if open_in and stdin in readable:
            data = os.read(stdin, 65536)
            if data:
                sock.sendall(data)
            else:
                open_in = False
                sock.shutdown(_socket.SHUT_WR)


def find_program(name: str) -> str | None:
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    for directory in (os.environ.get("PATH", "") + ":" + SEARCH_PATH).split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def this_program(path: str) -> tuple[bool, str | None]:
    """Whether path is this command (the same file as our argv[0], a pip
    entry point of it, or a launcher of `sendgate install-shim`), and the
    MTA's original sendmail a launcher names."""
    real = os.path.realpath(path)
    try:
        with open(real, "rb") as fp:
            head = fp.read(1024)
    except OSError:
        head = b""
    ours = real == os.path.realpath(sys.argv[0]) or (head.startswith(b"#!") and b"sendgate.sendmail_shim" in head)
    mark = head.find(b"\n# mta-sendmail: ")
    original = head[mark + 17:].split(b"\n", 1)[0].decode("utf-8", "surrogateescape") if mark >= 0 else None
    return ours, original


def delegate(mode: str, settings: dict[str, str]) -> int:
    """-bp, -bi, -q: exec the configured MTA command (never returns on success)."""
    key, default, flag = DELEGATED[mode]
    what = {"p": "mailq", "i": "newaliases", "q": "-q"}[mode]
    if os.environ.get(LOOP_GUARD):
        raise Failure(EX_CONFIG, what, f"{key} leads back to sendmail (via {os.environ[LOOP_GUARD]})")
    argv = (settings.get(key) or default).split()
    program = find_program(argv[0])
    if program is None:
        raise Failure(EX_CONFIG, what, f"{argv[0]}: command not found (set {key})")
    ours, original = this_program(program)
    if ours:
        # Postfix's newaliases is its sendmail, which install-shim replaced:
        # run the MTA's own sendmail, kept aside, for the same job.
        if not original:
            raise Failure(EX_CONFIG, what, f"{key} ({argv[0]}) is this command; set it to the MTA's program")
        program, argv = original, [original, flag]
    os.environ[LOOP_GUARD] = program
    sys.stdout.flush()
    try:
        os.execv(program, [argv[0], *argv[1:]])
    except OSError as err:
        raise Failure(EX_CONFIG if ours else EX_UNAVAILABLE, what, f"cannot run {program}: {err.strerror}") from None
    return EX_SOFTWARE  # not reached: execv replaced this process


def run(argv: list[str]) -> int:
    if argv[1:2] == ["--help"]:
        sys.stdout.write(__doc__)
        return EX_OK
    opts = parse_args(argv)
    settings = read_settings()
    if opts.mode in DELEGATED:
        return delegate(opts.mode, settings)
    path = socket_path(settings)
    if opts.mode == "s":
        return relay_smtp(path)
    recipients = split_recipients(opts.recipients)
    if opts.mode == "v":
        return verify(opts, path, recipients)
    if not recipients and not opts.extract:
        raise usage("no recipients given (use -t to take them from the header)")
    message = read_message(sys.stdin.buffer, opts.ignore_dots)
    if opts.extract and opts.notify:
        recipients = recipients + header_recipients(message, settings)
    envelope = Envelope.from_options(opts, recipients)
    if opts.full_name is not None:
        message = with_from(message, opts.full_name, qualified(envelope.sender or login_name(), settings))
    try:
        send(envelope, path, message, opts.verbose)
    except Failure as failure:
        from sendgate.sendmail_shim.deadletter import save
        saved = save(message, envelope)
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
