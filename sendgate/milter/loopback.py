"""Who owns a loopback TCP client: the kernel's answer, from /proc/net/tcp{,6}.

A program on this host that connects to the MTA over 127.0.0.1 or ::1 has a
socket whose owner the kernel records: its line in /proc/net/tcp (IPv4) or
/proc/net/tcp6 (IPv6) names the local and remote endpoints, the state and
the uid.  The milter sees the session's client endpoint (pymilter's connect
hostaddr) and the server's (the {daemon_addr} and {daemon_port} macros it
asks for at connect), and the one ESTABLISHED socket whose local endpoint is
the client's and whose remote endpoint is the server's is the client's
socket: a connected TCP socket is unique by its four-tuple.  The server's
end of the same connection has them the other way round and is never
taken for it.

The milter must run in the MTA's network namespace; a client in another
namespace, or one that closed before the lookup, is not found (None), and
the policy (sendgate/policy/loopback.py) does not trust it.

parse_line() is pure and table-tested (tests/test_loopback_identity.py);
owner() does the reading.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
ESTABLISHED = 0x01


@dataclass(frozen=True)
class Socket:
    local: tuple[str, int]
    remote: tuple[str, int]
    state: int
    uid: int


def _address(text: str) -> str:
    """A /proc/net/tcp address: 32-bit words in host byte order, as hex;
    IPv4-mapped IPv6 addresses come back as IPv4."""
    raw = b"".join(struct.pack("=I", int(text[i:i + 8], 16)) for i in range(0, len(text), 8))
    return normal(str(ipaddress.ip_address(raw)))


def _endpoint(text: str) -> tuple[str, int]:
    address, _, port = text.partition(":")
    if len(address) not in (8, 32) or len(port) != 4:
        raise ValueError(f"not an endpoint: {text!r}")
    return _address(address), int(port, 16)


def parse_line(line: str) -> Socket | None:
    """One line of /proc/net/tcp or /proc/net/tcp6; None for the heading.
    ValueError when the line is not in the kernel's format."""
    fields = line.split()
    if not fields or fields[0] == "sl":
        return None
    if len(fields) < 8 or not fields[0].endswith(":"):
        raise ValueError(f"not a /proc/net/tcp line: {line!r}")
    return Socket(_endpoint(fields[1]), _endpoint(fields[2]), int(fields[3], 16), int(fields[7]))


def normal(address: str) -> str:
    """An IP address in one spelling: compressed, IPv4-mapped as IPv4."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def is_loopback(address: str | None) -> bool:
    """127.0.0.0/8, ::1, or ::ffff:127.x."""
    if not address:
        return False
    try:
        return ipaddress.ip_address(normal(address)).is_loopback
    except ValueError:
        return False


def find(lines, client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid of the established socket with client as its local and server
    as its remote endpoint, among lines of /proc/net/tcp{,6}."""
    client = (normal(client[0]), client[1])
    server = (normal(server[0]), server[1])
    for line in lines:
        sock = parse_line(line)
        if sock is not None and sock.state == ESTABLISHED and sock.local == client and sock.remote == server:
            return sock.uid
    return None


def owner(client: tuple[str, int], server: tuple[str, int], tables=TABLES) -> int | None:
    """The uid owning the client's socket, read from the kernel's tables;
    None when no such socket is there."""
    for table in tables:
        try:
            with open(table, encoding="ascii") as f:
                uid = find(f, client, server)
        except FileNotFoundError:
            continue
        if uid is not None:
            return uid
    return None
