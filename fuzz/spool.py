"""Target: the spool and dead-letter reader (sendgate/spool.py parse_entry,
sendgate/sendmail_shim/deadletter.py split_entries).
Properties: split_entries and parse_entry raise nothing; the pieces joined
give the file back; an entry written by format_entry for the message found
in a parsed entry parses back to the same envelope and message (CRLF written as LF)."""

import atheris

from common import Finding, corpus_messages, main

with atheris.instrument_imports(include=["sendgate"]):
    from sendgate.sendmail_shim.client import Envelope
    from sendgate.sendmail_shim.deadletter import split_entries
    from sendgate.spool import format_entry, parse_entry

WHEN = "Wed Dec  2 20:00:00 2026"


def same(a: Envelope, b: Envelope) -> bool:
    return (a.sender, a.recipients, a.extract, a.mail_params, a.rcpt_params) == \
           (b.sender, b.recipients, b.extract, b.mail_params, b.rcpt_params)


def one_input(data: bytes) -> None:
    pieces = split_entries(data)
    if b"".join(pieces) != data:
        raise Finding("split_entries lost bytes")
    for chunk in pieces:
        parsed = parse_entry(chunk)
        if parsed is None:
            continue
        envelope, message = parsed
        again = parse_entry(format_entry(message, envelope, WHEN))
        if again is None:
            raise Finding("a parsed entry written again does not parse")
        if not same(again[0], envelope):
            raise Finding("the envelope does not round-trip")
        if again[1] != message.replace(b"\r\n", b"\n"):   # entries keep LF line ends
            raise Finding("the message does not round-trip")


def seeds() -> list[bytes]:
    env = [Envelope("alice@example.org", ["bob@example.org"], False, ["BODY=8BITMIME"], []),
           Envelope("", [], True, ["RCPTHDR"], ["NOTIFY=NEVER"])]
    out = []
    for i, message in enumerate(corpus_messages()):
        out.append(format_entry(message, env[i % 2], WHEN))
    out.append(b"".join(out[:3]))
    return out


if __name__ == "__main__":
    main(one_input, seeds)
