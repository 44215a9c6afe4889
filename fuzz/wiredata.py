"""Target: xtext and dot-stuffing (sendgate/wiredata.py).
Properties: xtext gives only '!'..'~' without '=', and decoding it gives the
input back; dot_stuff's output has only CRLF line ends, no line that is a
lone '.', and unstuffing gives crlf_lines(input) back; data_pieces joined
(with a small piece size, so that the input is cut) are dot_stuff + '.CRLF'."""

import re

import atheris

from common import Finding, corpus_messages, header_values, main

with atheris.instrument_imports(include=["sendgate"]):
    from sendgate.wiredata import crlf_lines, data_pieces, dot_stuff, xtext

_HEX = re.compile(r"\+([0-9A-F]{2})")


def unxtext(text: str) -> bytes:
    out, pos = bytearray(), 0
    for m in _HEX.finditer(text):
        out += text[pos:m.start()].encode("ascii")
        out.append(int(m.group(1), 16))
        pos = m.end()
    return bytes(out + text[pos:].encode("ascii"))


def one_input(data: bytes) -> None:
    value = data.decode("utf-8", "surrogateescape")
    encoded = xtext(value)
    if any(not 33 <= ord(c) <= 126 or c == "=" for c in encoded) or "+" in _HEX.sub("", encoded):
        raise Finding(f"xtext {encoded!r} is not xtext")
    if unxtext(encoded) != data:
        raise Finding("xtext does not round-trip")
    stuffed = dot_stuff(data)
    lines = stuffed.split(b"\r\n")
    if lines[-1] != b"" or any(b"\r" in line or b"\n" in line for line in lines):
        raise Finding("dot_stuff left a bare CR or LF, or no final CRLF")
    if b".\r\n" == stuffed[:3] or b"\r\n.\r\n" in stuffed:
        raise Finding("dot_stuff left a line that ends DATA")
    unstuffed = b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines[:-1])
    if unstuffed != crlf_lines(data):
        raise Finding("unstuffing does not give the input back")
    size = 1 + (data[0] % 64 if data else 0)
    if b"".join(data_pieces(data, size)) != stuffed + b".\r\n":
        raise Finding(f"data_pieces(size={size}) differs from dot_stuff")


def seeds() -> list[bytes]:
    return corpus_messages() + header_values(["from", "to"])


if __name__ == "__main__":
    main(one_input, seeds)
