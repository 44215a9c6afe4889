"""Target: RCPTHDR extraction (sendgate/policy/envelope.py).
Properties: recipients_from_header raises nothing but HeaderError; every
recipient it yields is an address of a To/Cc/Bcc field of the header (of a
Resent-To/-Cc/-Bcc field in resent mode), qualified with the domain; the
fields it removes are Bcc fields (Resent-Bcc in resent mode)."""

import atheris

from common import Finding, corpus_messages, main

with atheris.instrument_imports(include=["sendgate"]):
    from sendgate.policy.addresses import AddressSyntaxError, mailboxes, qualify
    from sendgate.policy.envelope import HeaderError, recipients_from_header
    from sendgate.policy.message import split_message

DOMAIN = "example.org"


def one_input(data: bytes) -> None:
    header, _ = split_message(data)
    try:
        got = recipients_from_header(header, DOMAIN)
    except HeaderError:
        return
    sources = ("resent-to", "resent-cc", "resent-bcc") if got.resent else ("to", "cc", "bcc")
    present = set()
    for field in header:
        if field.name.lower() in sources:
            try:
                present.update(qualify(m.addr_spec, DOMAIN) for m in mailboxes(field.value))
            except AddressSyntaxError:
                pass
    for rcpt in got.recipients:
        if rcpt not in present:
            raise Finding(f"recipient {rcpt!r} is in no {'/'.join(sources)} field")
    bcc = "resent-bcc" if got.resent else "bcc"
    for i in got.remove:
        if header[i].name.lower() != bcc:
            raise Finding(f"would remove {header[i].name}:, not a {bcc} field")


def seeds() -> list[bytes]:
    return corpus_messages()


if __name__ == "__main__":
    main(one_input, seeds)
