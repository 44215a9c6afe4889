"""Who is at the other end of a submit connection, from the kernel only:
the peer's pid, uid and gid (SO_PEERCRED), the uid's login (getpwuid) and,
when an admission rule names groups, the login's groups.  Nothing the
client says (HELO, MAIL FROM, AUTH) changes it.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass

from sendgate.policy.admission import AdmissionRules, Peer
from sendgate.userdb import login_of


@dataclass(frozen=True)
class Identity:
    pid: int
    gid: int
    peer: Peer      # uid, login ("" for a uid without a name), groups


def peer_credentials(transport) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected, as the kernel saw it."""
    sock = transport.get_extra_info("socket")
    fmt = "3i"
    return struct.unpack(fmt, sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt)))


def groups_of(login: str, gid: int) -> frozenset[str]:
    """The peer's groups: its process gid (from SO_PEERCRED, which carries no
    supplementary groups) and the login's groups in the user database."""
    if not login:
        return frozenset()
    names = set()
    for g in {*os.getgrouplist(login, pwd.getpwnam(login).pw_gid), gid}:
        try:
            names.add(grp.getgrgid(g).gr_name)
        except KeyError:
            continue
    return frozenset(names)


def identify(credentials: tuple[int, int, int], admission: AdmissionRules) -> Identity:
    """The session's identity from (pid, uid, gid): the kernel's peer
    credentials, or a spool entry's owner (retry.py)."""
    pid, uid, gid = credentials
    login = login_of(uid)
    # The user database's groups are looked up only when a rule names groups.
    groups = groups_of(login, gid) if admission.allow_groups or admission.deny_groups else frozenset()
    return Identity(pid, gid, Peer(uid, login, groups))
