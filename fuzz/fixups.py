"""Target: RFC 6409 fix-ups (sendgate/policy/fixups.py).
Properties: submission_fixups raises nothing, and is idempotent: on the
header its edits produce, it asks for no further edit."""

import atheris

from common import Finding, corpus_messages, main

with atheris.instrument_imports(include=["sendgate"]):
    from sendgate.policy.fixups import FixupSettings, Stamp, submission_fixups
    from sendgate.policy.identity import Principal
    from sendgate.policy.message import apply_edits, split_message

PRINCIPAL = Principal("alice", "alice@example.org", "Alice Example")
SETTINGS = FixupSettings(hostname="host.example.org", domain="example.org")
STAMP = Stamp("Wed, 2 Dec 2026 20:00:00 +0000", "20261202200000.fuzz")


def one_input(data: bytes) -> None:
    header, _ = split_message(data)
    edits = submission_fixups(header, PRINCIPAL, SETTINGS, STAMP)
    fixed = apply_edits(header, edits)
    again = submission_fixups(fixed, PRINCIPAL, SETTINGS, STAMP)
    if again:
        raise Finding(f"not idempotent: first {edits!r}, then {again!r}")


def seeds() -> list[bytes]:
    return corpus_messages()


if __name__ == "__main__":
    main(one_input, seeds)
