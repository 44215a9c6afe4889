"""Target: the sendmail argv parser (sendgate/sendmail_shim/options.py).
The input is the argument list, NUL-separated.  Property: parse_args and
envelope_for raise nothing but the usage Failure (EX_USAGE)."""

import atheris

from common import Finding, main

with atheris.instrument_imports(include=["sendgate"]):
    from sendgate.sendmail_shim.client import EX_USAGE, Failure
    from sendgate.sendmail_shim.options import envelope_for, parse_args


def one_input(data: bytes) -> None:
    words = data.decode("utf-8", "surrogateescape").split("\0")
    try:
        opts = parse_args(["sendmail"] + words)
        envelope_for(opts, opts.recipients)
    except Failure as failure:
        if failure.status != EX_USAGE:
            raise Finding(f"Failure with status {failure.status}, not EX_USAGE") from failure


def seeds() -> list[bytes]:
    lines = ["-t\0-i", "-oi\0-f\0alice@example.org\0bob@example.org", "-bs", "-bv\0bob",
             "-F\0Alice Example\0-r\0alice\0-N\0success,delay\0-R\0hdrs\0-V\0env-1\0bob",
             "-B8BITMIME\0-SMTPUTF8\0bob,carol", "-odb\0-oem\0-Ohold\0-L\0tag\0bob", "--\0-t",
             "-bp", "-bi", "-q", "-G\0-U\0-m\0-n\0-s\0-v\0-x\0bob"]
    return [line.encode() for line in lines]


if __name__ == "__main__":
    main(one_input, seeds)
