"""The sendmail command's SMTP client on the submit socket: the sysexits
codes, the few settings it reads, Failure, the Envelope, the client, the
mapping of a refusal to an exit status, and send().  main.py sends with it,
modes.py verifies with it (-bv), deadletter.py resubmits with it.
"""

# On the send path: import only what it needs (see main.py).  _socket
# rather than socket, whose wrapper imports enum and selectors.
import _socket
import os
import sys

from sendgate.wiredata import data_pieces

EX_OK, EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_NOUSER, EX_UNAVAILABLE = 0, 64, 65, 66, 67, 69
EX_SOFTWARE, EX_OSERR, EX_CANTCREAT, EX_IOERR, EX_TEMPFAIL, EX_NOPERM, EX_CONFIG = 70, 71, 73, 74, 75, 77, 78

DEFAULT_CONFIG = "/etc/sendgate/sendgate.yaml"
DEFAULT_SOCKET = "/run/sendgate/submit.sock"
REPLY_TIMEOUT = 600  # seconds; the server's end-of-data wait is shorter

# The keys of sendgate.yaml this command reads (CONFIGURATION in main.py's manual).
SETTINGS = ("submit_socket", "spool_directory", "myorigin", "myhostname",
            "sendmail_mailq_command", "sendmail_newaliases_command", "sendmail_flush_command")


class Failure(Exception):
    """Ends the run: what failed, why, and the exit status."""

    def __init__(self, status: int, what: str, why: str):
        super().__init__(f"{what}: {why}")
        self.status, self.what, self.why = status, what, why


class Envelope:
    """What the client sends around the message: MAIL and its parameters,
    the RCPT addresses and theirs.  Saved with a dead letter, so that a
    resubmission sends exactly the same.  options.py's envelope_for builds
    it from the command line."""

    def __init__(self, sender: str, recipients: list[str], extract: bool,
                 mail_params: list[str], rcpt_params: list[str]):
        self.sender, self.recipients, self.extract = sender, recipients, extract
        self.mail_params, self.rcpt_params = mail_params, rcpt_params


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


def login_name() -> str:
    import pwd
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        raise Failure(EX_NOPERM, "who are you", f"uid {os.getuid()} has no login name") from None


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
    """sysexits status for a refusal (DIAGNOSTICS in main.py's manual):
    4xx or no reply code 75, then by the enhanced status code: 5.7.x 77,
    5.1.x 67, 5.6.x and 5.3.4 65, any other 69."""
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
