"""The MTA side of the milter protocol, for tests against the milter.

MTA speaks to a running milter over its socket.  It is built on miltertest
(PyPI), which encodes and decodes the packets, with the two things it lacks:
it cannot read a negotiation reply that carries macro lists
(SMFIR_SETSYMLIST data), and it waits for a reply to every step.  This MTA
behaves as Postfix does after negotiation: it skips the steps the milter
asked it to skip, does not wait where the milter asked for no reply, and
sends only the macros the milter asked for.

ContextMTA runs the milter class in this process on pymilter's own test
context (Milter.testctx.TestCtx) in place of libmilter: no socket, no MTA.
The context hands the milter only the macros it asked for at each stage, as
libmilter does.

Each message, either way, returns the packets the milter sent at
end-of-message, as the MTA receives them, in the same form (describe()).
"""

from __future__ import annotations

import socket
import struct

import Milter
from Milter import testctx
from miltertest import MilterConnection, codec
from miltertest import constants as C

EDIT_NAMES = {C.SMFIR_ADDHEADER: "ADDHEADER", C.SMFIR_INSHEADER: "INSHEADER", C.SMFIR_CHGHEADER: "CHGHEADER",
              C.SMFIR_CHGFROM: "CHGFROM", C.SMFIR_ADDRCPT: "ADDRCPT", C.SMFIR_ADDRCPT_PAR: "ADDRCPT",
              C.SMFIR_DELRCPT: "DELRCPT", C.SMFIR_CONTINUE: "CONTINUE", C.SMFIR_ACCEPT: "ACCEPT",
              C.SMFIR_REJECT: "REJECT", C.SMFIR_TEMPFAIL: "TEMPFAIL", C.SMFIR_REPLYCODE: "REPLYCODE",
              C.SMFIR_DISCARD: "DISCARD"}
STAGES = {0: "connect", 1: "helo", 2: "mail", 3: "rcpt", 4: "data", 5: "eom", 6: "eoh"}


def describe(packet: tuple[str, dict]) -> tuple:
    """One end-of-message packet as a plain tuple, e.g.
    ("CHGHEADER", 1, "Sender", "") or ("REPLYCODE", "553 5.7.1 ...")."""
    cmd, fields = packet
    name = EDIT_NAMES.get(cmd, cmd)
    if cmd == C.SMFIR_ADDHEADER:
        return (name, fields["name"], fields["value"])
    if cmd in (C.SMFIR_INSHEADER, C.SMFIR_CHGHEADER):
        return (name, fields["index"], fields["name"], fields["value"])
    if cmd == C.SMFIR_CHGFROM:
        return (name, fields["from"], *fields.get("args", []))
    if cmd in (C.SMFIR_ADDRCPT, C.SMFIR_ADDRCPT_PAR, C.SMFIR_DELRCPT):
        return (name, fields["rcpt"])
    if cmd == C.SMFIR_REPLYCODE:
        return (name, f"{fields['smtpcode']}{fields['space']}{fields['text']}")
    return (name,)


class MTA:
    """One milter connection, negotiated like Postfix (protocol 6, every
    action and protocol bit offered)."""

    def __init__(self, path: str, timeout: float = 10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.conn = MilterConnection(self.sock)
        self.actions, self.protocol, self.macros = self._negotiate()

    def _negotiate(self) -> tuple[int, int, dict[str, tuple[str, ...]]]:
        self.sock.sendall(codec.encode_optneg(C.SMFI_V6_ACTS, C.SMFI_V6_PROT))
        header = self._read(5)
        (length,) = struct.unpack("!I", header[:4])
        assert header[4:5] == b"O", header
        data = self._read(length - 1)
        _, actions, protocol = struct.unpack("!III", data[:12])
        macros, rest = {}, data[12:]
        while rest:
            (stage,) = struct.unpack("!I", rest[:4])
            names, _, rest = rest[4:].partition(b"\0")
            macros[STAGES[stage]] = tuple(names.decode().split())
        return actions, protocol, macros

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            assert chunk, "the milter closed the connection"
            out += chunk
        return out

    def _step(self, cmd: str, skip: int, noreply: int, **fields) -> None:
        if self.protocol & skip:
            return
        if self.protocol & noreply:
            self.conn._send(cmd, **fields)
        else:
            self.conn.send(cmd, **fields)

    def _macros(self, stage: str, cmd: str, values: dict[str, str]) -> None:
        """Like Postfix: a macro packet for every stage with a macro list,
        holding the macros that have a value (libmilter replaces the
        stage's macros with each packet)."""
        if stage in self.macros:
            self.conn.send_macro(cmd, **{k: v for k, v in values.items() if k in self.macros[stage]})

    def connect(self, address: str, port: int, macros: dict[str, str] | None = None) -> None:
        """The connect step of a TCP client at address:port (family "4" or
        "6", as libmilter writes it), with the macros Postfix would send."""
        self._macros("connect", C.SMFIC_CONNECT, macros or {})
        family = "6" if ":" in address else "4"
        self._step(C.SMFIC_CONNECT, C.SMFIP_NOCONNECT, C.SMFIP_NR_CONN, hostname="localhost",
                   family=family, port=port, address=address)

    def begin(self, sender: str, recipients: list[str], macros: dict[str, str] | None = None) -> None:
        """MAIL and RCPT, with the macros Postfix would send at MAIL."""
        self._macros("mail", C.SMFIC_MAIL, macros or {})
        self._step(C.SMFIC_MAIL, C.SMFIP_NOMAIL, C.SMFIP_NR_MAIL, args=[f"<{sender}>"])
        for rcpt in recipients:
            self._step(C.SMFIC_RCPT, C.SMFIP_NORCPT, C.SMFIP_NR_RCPT, args=[f"<{rcpt}>"])

    def headers(self, fields: list[tuple[str, str]]) -> None:
        self._step(C.SMFIC_DATA, C.SMFIP_NODATA, C.SMFIP_NR_DATA)
        for name, value in fields:
            self._step(C.SMFIC_HEADER, C.SMFIP_NOHDRS, C.SMFIP_NR_HDR, name=name, value=value)
        self._step(C.SMFIC_EOH, C.SMFIP_NOEOH, C.SMFIP_NR_EOH)

    def end(self, body: str = "hello\r\n", queue_id: str = "QUEUEID") -> list[tuple]:
        self._step(C.SMFIC_BODY, C.SMFIP_NOBODY, C.SMFIP_NR_BODY, buf=body)
        self._macros("eom", C.SMFIC_BODYEOB, {"i": queue_id})
        return [describe(p) for p in self.conn.send_eom()]

    def message(self, sender: str, recipients: list[str], fields: list[tuple[str, str]],
                macros: dict[str, str] | None = None, queue_id: str = "QUEUEID") -> list[tuple]:
        self.begin(sender, recipients, macros)
        self.headers(fields)
        return self.end(queue_id=queue_id)

    def abort(self) -> None:
        """What Postfix sends for RSET, or when the client goes away mid-message."""
        self.conn._send(C.SMFIC_ABORT)

    def close(self) -> None:
        self.conn._send(C.SMFIC_QUIT)
        self.sock.close()

    def __enter__(self) -> "MTA":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _RecordingCtx(testctx.TestCtx):
    """TestCtx with each end-of-message call recorded as the packet that
    libmilter would send for it (TestCtx's own versions edit an
    email.message.Message instead)."""

    def __init__(self) -> None:
        super().__init__()
        self.packets: list[tuple] = []

    def addheader(self, field: str, value: str, idx: int) -> None:
        # pymilter: an index below 0 is smfi_addheader, any other smfi_insheader.
        self.packets.append(("ADDHEADER", field, value) if idx < 0 else ("INSHEADER", idx, field, value))

    def chgheader(self, field: str, idx: int, value: str) -> None:
        self.packets.append(("CHGHEADER", idx, field, value))

    def chgfrom(self, sender: str, params=None) -> None:
        self.packets.append(("CHGFROM", sender, *([params] if params else [])))

    def disposition(self, rc: int) -> tuple:
        """The last packet: a refusal with a reply set goes out as that
        reply (libmilter's mi_sendreply), the others as themselves."""
        if rc in (Milter.REJECT, Milter.TEMPFAIL) and self._reply is not None:
            return ("REPLYCODE", " ".join(self._reply))
        return ({Milter.CONTINUE: "CONTINUE", Milter.ACCEPT: "ACCEPT", Milter.REJECT: "REJECT",
                 Milter.TEMPFAIL: "TEMPFAIL", Milter.DISCARD: "DISCARD"}[rc],)


class ContextMTA:
    """One milter connection on pymilter's test context.  The milter class
    is Milter.factory, as main.register() sets it; negotiated like Postfix
    (every action and protocol bit offered)."""

    def __init__(self) -> None:
        self.ctx = _RecordingCtx()
        assert self.ctx._negotiate() == Milter.CONTINUE

    def message(self, sender: str, recipients: list[str], fields: list[tuple[str, str]],
                macros: dict[str, str] | None = None, queue_id: str = "QUEUEID") -> list[tuple]:
        ctx = self.ctx
        ctx.packets, ctx._reply = [], None
        ctx._macros = {**(macros or {}), "i": queue_id}
        ctx._envfrom(f"<{sender}>")
        for rcpt in recipients:
            ctx._envrcpt(f"<{rcpt}>")
        for name, value in fields:
            ctx._header(name, value)
        rc = ctx._eom()
        return [*ctx.packets, ctx.disposition(rc)]
