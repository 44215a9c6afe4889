"""Target: RFC 5322 address lists (sendgate/policy/addresses.py).
Property: parse_address_list, mailboxes, qualify and normalize_addr raise
nothing but AddressSyntaxError; every mailbox parsed qualifies and
normalises without error, and normalising is idempotent."""

import atheris

from common import Finding, header_values, main

with atheris.instrument_imports(include=["sendgate"]):
    from sendgate.policy.addresses import (AddressSyntaxError, Group, mailboxes, normalize_addr,
                                           parse_address_list, qualify)
    from sendgate.policy.message import decode


def one_input(data: bytes) -> None:
    value = decode(data)
    try:
        parsed = parse_address_list(value)
        found = mailboxes(value)
    except AddressSyntaxError:
        return
    members = [m for item in parsed for m in (item.members if isinstance(item, Group) else [item])]
    if [m.addr_spec for m in members] != [m.addr_spec for m in found]:
        raise Finding("mailboxes() disagrees with parse_address_list()")
    for mailbox in found:
        spec = qualify(mailbox.addr_spec, "example.org")
        key = normalize_addr(spec)
        if normalize_addr(key) != key:
            raise Finding(f"normalize_addr not idempotent on {spec!r}")


def seeds() -> list[bytes]:
    return header_values(["from", "to", "cc", "bcc", "reply-to", "sender", "resent-from",
                          "resent-to", "resent-cc", "resent-bcc", "resent-sender"])


if __name__ == "__main__":
    main(one_input, seeds)
