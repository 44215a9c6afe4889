"""Who submitted a message, as the milter learns it from the MTA.

Two hand-offs carry the login from sendgate-submitd to the MTA:

* Postfix: XCLIENT LOGIN= on the dedicated smtpd service; the milter sees
  {auth_authen}, as it does for SASL logins on the submission port.  Only
  that service (local_daemon_name) accepts XCLIENT, so an XCLIENT login on
  any other service means XCLIENT was allowed there by mistake and a network
  client may have named itself: the login is ignored and the mail relayed.
* Sendmail, which has no XCLIENT: the submit daemon prepends one
  X-Sendgate-Login: field (the login as xtext) to the message and sends it
  to a dedicated daemon socket (DaemonPortOptions Family=local,
  Name=<milter_local_daemon_name>) that only the sendgate user can reach.
  The field is trusted only on that daemon, only when the session has no
  {auth_authen}, and only when there is exactly one: the submit daemon
  removes every copy a client wrote before adding its own, so a second one
  is a copy it could not recognise (e.g. "X-Sendgate-Login : x", which
  Sendmail reads as a field and sendgate's parser as the start of the body)
  and the message is refused.

Whatever the path, every X-Sendgate-Login: field is removed from the
message, so the field never leaves the MTA and never reaches a next hop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sendgate import replies
from sendgate.policy.identity import local_login
from sendgate.policy.message import Field, delete_fields, find, split_message
from sendgate.replies import Reply
from sendgate.wiredata import xtext

IDENTITY_FIELD = "X-Sendgate-Login"
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")


@dataclass(frozen=True)
class HandOff:
    login: str | None            # the submitting login; None: not a submission
    refusal: Reply | None        # refuse the message with this, when set
    remove: tuple[int, ...]      # occurrences (1-based) of IDENTITY_FIELD to delete
    source: str                  # for the log: "auth", "header", "none", or "ignored"
                                 # (an XCLIENT login on another service)


def with_identity_field(content: bytes, login: str) -> bytes:
    """The Sendmail hand-off, written by sendgate-submitd
    (sendgate/submit_socket/forward.py): the client's own X-Sendgate-Login:
    fields out, ours (the login as xtext) on top.  A message without header
    fields gets the empty line after ours, so that its first line, whatever
    it is (even white space, which would continue our field), stays body."""
    header, _ = split_message(content)
    content = delete_fields(content, find(header, IDENTITY_FIELD))
    field = f"{IDENTITY_FIELD}: {xtext(login)}\r\n".encode("ascii")
    if not header and not content.startswith((b"\r\n", b"\n")):
        field += b"\r\n"
    return field + content


def unxtext(text: str) -> str | None:
    """RFC 3461 xtext decoded, or None when it is not xtext."""
    if not _XTEXT.fullmatch(text):
        return None
    raw = re.sub(rb"\+([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), text.encode("ascii"))
    return raw.decode("utf-8", "surrogateescape")


def resolve(auth_login: str | None, auth_type: str | None, daemon_name: str | None,
            local_daemon_name: str, header: list[Field] | tuple[Field, ...],
            sasl_realms: tuple[str, ...] = ()) -> HandOff:
    """The login of a message, from the session's macros ({auth_authen},
    {auth_type}, {daemon_name}) and the header the MTA received: the one
    place where the milter decides who submitted a message.  A SASL login
    in one of sasl_realms is its local login (identity.local_login); an
    XCLIENT login is the submit daemon's, a local login already."""
    places = find(header, IDENTITY_FIELD)
    remove = tuple(range(len(places), 0, -1))  # highest first: indexes stay valid
    if auth_login and (auth_type or "").upper() == "XCLIENT" and daemon_name != local_daemon_name:
        return HandOff(None, None, remove, "ignored")
    if auth_login:
        if (auth_type or "").upper() != "XCLIENT":
            auth_login = local_login(auth_login, sasl_realms)
        return HandOff(auth_login, None, remove, "auth")
    if daemon_name != local_daemon_name:
        return HandOff(None, None, remove, "none")
    if not places:
        return HandOff(None, replies.R451_NO_IDENTITY, remove, "header")
    if len(places) > 1:
        return HandOff(None, replies.R554_IDENTITY_FORGED, remove, "header")
    login = unxtext(header[places[0]].unfolded().strip())
    if not login:
        return HandOff(None, replies.R554_IDENTITY_FORGED, remove, "header")
    return HandOff(login, None, remove, "header")
