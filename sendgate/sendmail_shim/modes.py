"""The modes that send no message from standard input: -bv (ask the server
about each recipient), -bs (SMTP on standard input and output, relayed to
the submit socket), and -bp, -bi, -q (the MTA's own programs run instead).
main.py imports this only for those modes, off the send path.
"""

import _socket
import os
import sys

from sendgate.sendmail_shim.client import (EX_CONFIG, EX_NOUSER, EX_OK, EX_SOFTWARE, EX_TEMPFAIL, EX_UNAVAILABLE,
                                           Client, Failure, login_name, socket_path, status_for)
from sendgate.sendmail_shim.options import Options, split_recipients, usage

# -bp, -bi and -q run the MTA's own programs: (setting, default, the flag the
# MTA's original sendmail takes for the same job).  The defaults are
# Postfix's, and repeated in sendgate/config.py's SCHEMA
# (tests/test_sendmail_options.py checks that they agree).
DELEGATED = {
    "p": ("sendmail_mailq_command", "postqueue -p", "-bp"),
    "i": ("sendmail_newaliases_command", "newaliases", "-bi"),
    "q": ("sendmail_flush_command", "postqueue -f", "-q"),
}
# Set in the environment of a delegated command: if it leads back here, stop.
LOOP_GUARD = "SENDGATE_DELEGATED"
SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def run_mode(opts: Options, settings: dict[str, str]) -> int:
    """Any mode but -bm (opts.mode is s, v, or one of DELEGATED's)."""
    if opts.mode in DELEGATED:
        return delegate(opts.mode, settings)
    path = socket_path(settings)
    if opts.mode == "s":
        return relay_smtp(path)
    return verify(opts, path, split_recipients(opts.recipients))


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


def relay_smtp(path: str) -> int:
    """-bs: copy standard input to the socket and the socket to standard
    output, until the server ends the session.  The exit status says
    whether the server accepted what it was given (DialogueOutcome)."""
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
    outcome = DialogueOutcome()
    open_in = True
    while True:
        readable, _, _ = select.select([sock] + ([stdin] if open_in else []), [], [])
        if sock in readable:
            data = sock.recv(65536)
            if not data:
                break
            outcome.feed(data)
            while data:
                data = data[os.write(stdout, data):]
        if open_in and stdin in readable:
            data = os.read(stdin, 65536)
            if data:
                sock.sendall(data)
            else:
                open_in = False
                sock.shutdown(_socket.SHUT_WR)
    sock.close()
    if outcome.worst:
        code, text = outcome.worst
        raise Failure(outcome.status(), "-bs", f"the server said: {code} {text}")
    if outcome.awaiting_data:
        raise Failure(EX_TEMPFAIL, "-bs", "the session ended before the server accepted the message")
    return EX_OK


class DialogueOutcome:
    """What the server's side of a -bs dialogue said: the worst final reply
    (a 4xx before a 5xx only when no 5xx came) and whether a message was
    left without its reply (354 seen, no reply to the end of data)."""

    def __init__(self) -> None:
        self.pending = b""
        self.worst: tuple[int, str] | None = None
        self.awaiting_data = False

    def feed(self, data: bytes) -> None:
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] == b"-":
                continue
            code, text = int(line[:3]), line[4:].decode("utf-8", "replace")
            self.awaiting_data = code == 354
            if code >= 400 and (self.worst is None or self.worst[0] < 500 <= code):
                self.worst = (code, text)

    def status(self) -> int:
        code, text = self.worst  # type: ignore[misc]
        return status_for(code, text)


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
