"""The identity hand-off: which login the milter trusts
(sendgate.policy.handoff: the MTA's login, XCLIENT only on the submit
daemon's service, or the Sendmail field), the field the submit daemon adds,
and the stack's delivery agent that shows the envelope recipient."""

from __future__ import annotations

import pytest

from sendgate import replies
from sendgate.policy.handoff import resolve, unxtext, with_identity_field
from sendgate.policy.message import Field

LOCAL = "sendgate-local"
ID = "X-Sendgate-Login"


def fields(*pairs):
    return [Field(name, value) for name, value in pairs]


CASES = [
    pytest.param("alice", "XCLIENT", LOCAL, fields(("To", "b@x")), ("alice", None, (), "auth"), id="xclient-login"),
    pytest.param("alice", "PLAIN", "587", fields((ID, "root")), ("alice", None, (1,), "auth"),
                 id="sasl-login-wins-over-field"),
    pytest.param("alice", "XCLIENT", LOCAL, fields((ID, "root"), (ID.lower(), "bob")), ("alice", None, (2, 1), "auth"),
                 id="xclient-login-wins-every-field-removed"),
    pytest.param("alice", "XCLIENT", "sendgate-submission", fields(("To", "b@x")), (None, None, (), "ignored"),
                 id="xclient-login-on-another-service-ignored"),
    pytest.param("alice", "xclient", None, fields((ID, "alice")), (None, None, (1,), "ignored"),
                 id="xclient-without-daemon-name-ignored-field-removed"),
    pytest.param("alice", None, "sendgate-submission", fields(), ("alice", None, (), "auth"),
                 id="login-without-auth-type-is-not-xclient"),
    pytest.param(None, None, LOCAL, fields((ID, "alice"), ("To", "b@x")), ("alice", None, (1,), "header"),
                 id="field-on-local-daemon"),
    pytest.param(None, None, LOCAL, fields((ID, " a+2Bb+C3+A9 ")), ("a+bé", None, (1,), "header"),
                 id="field-is-xtext"),
    pytest.param(None, None, LOCAL, fields((ID, "alice\n ")), ("alice", None, (1,), "header"), id="folded-field"),
    pytest.param(None, None, LOCAL, fields(("To", "b@x")), (None, replies.R451_NO_IDENTITY, (), "header"),
                 id="local-daemon-without-field"),
    pytest.param(None, None, LOCAL, fields((ID, "alice"), (ID, "root")),
                 (None, replies.R554_IDENTITY_FORGED, (2, 1), "header"), id="two-fields-on-local-daemon"),
    pytest.param(None, None, LOCAL, fields((ID, "al ice")), (None, replies.R554_IDENTITY_FORGED, (1,), "header"),
                 id="field-not-xtext"),
    pytest.param(None, None, LOCAL, fields((ID, "")), (None, replies.R554_IDENTITY_FORGED, (1,), "header"),
                 id="empty-field"),
    pytest.param(None, None, "inbound", fields((ID, "alice")), (None, None, (1,), "none"), id="field-from-network"),
    pytest.param(None, None, None, fields((ID, "alice")), (None, None, (1,), "none"), id="no-daemon-name"),
    pytest.param(None, None, "inbound", fields(("To", "b@x")), (None, None, (), "none"), id="plain-relay"),
    pytest.param("", None, LOCAL, fields((ID, "alice")), ("alice", None, (1,), "header"), id="empty-auth-is-none"),
    pytest.param("", "XCLIENT", "inbound", fields(), (None, None, (), "none"), id="empty-xclient-login-is-none"),
]


@pytest.mark.parametrize("auth,auth_type,daemon,header,want", CASES)
def test_resolve(auth, auth_type, daemon, header, want):
    got = resolve(auth, auth_type, daemon, LOCAL, header)
    assert (got.login, got.refusal, got.remove, got.source) == want


@pytest.mark.parametrize("text,want", [
    pytest.param("alice", "alice", id="plain"),
    pytest.param("a+2Bb", "a+b", id="plus"),
    pytest.param("+3D", "=", id="equals"),
    pytest.param("a+2b", None, id="lower-case-hex"),
    pytest.param("a+b", None, id="bare-plus"),
    pytest.param("a=b", None, id="bare-equals"),
    pytest.param("a b", None, id="space"),
])
def test_unxtext(text, want):
    assert unxtext(text) == want


@pytest.mark.parametrize("message,want", [
    pytest.param(b"To: b@x\r\n\r\nhi\r\n", b"X-Sendgate-Login: alice\r\nTo: b@x\r\n\r\nhi\r\n", id="added-on-top"),
    pytest.param(b"X-Sendgate-Login: root\nTo: b@x\nx-sendgate-login:\n root\n\nX-Sendgate-Login: body\n",
                 b"X-Sendgate-Login: alice\r\nTo: b@x\n\nX-Sendgate-Login: body\n", id="client-fields-removed"),
    pytest.param(b"To: b@x\nX-Sendgate-Login : root\n\nhi\n",
                 b"X-Sendgate-Login: alice\r\nTo: b@x\nX-Sendgate-Login : root\n\nhi\n",
                 id="space-before-colon-is-body-here-the-milter-refuses-it"),
    pytest.param(b" continued\nTo: b@x\n\nhi\n", b"X-Sendgate-Login: alice\r\n\r\n continued\nTo: b@x\n\nhi\n",
                 id="no-header-leading-white-space-stays-body"),
    pytest.param(b"hi\n", b"X-Sendgate-Login: alice\r\n\r\nhi\n", id="no-header-at-all"),
    pytest.param(b"\nhi\n", b"X-Sendgate-Login: alice\r\n\nhi\n", id="empty-header"),
])
def test_submit_daemon_identity_field(message, want):
    assert with_identity_field(message, "alice") == want


def test_identity_field_is_xtext():
    added = with_identity_field(b"\r\nhi\r\n", "a+b\u00e9 c").split(b"\r\n", 1)[0]
    assert added == b"X-Sendgate-Login: a+2Bb+C3+A9+20c"
    assert unxtext(added.split(b": ", 1)[1].decode()) == "a+b\u00e9 c"


REALM_CASES = [
    pytest.param("mallory@example.org", "PLAIN", ("example.org",), "mallory", id="realm-login-is-the-local-login"),
    pytest.param("mallory@EXAMPLE.org", "LOGIN", ("example.org",), "mallory", id="realm-compared-like-a-domain"),
    pytest.param("mallory@other.example", "PLAIN", ("example.org",), "mallory@other.example",
                 id="unlisted-realm-stays"),
    pytest.param("mallory@example.org", "PLAIN", (), "mallory@example.org", id="no-realms-configured"),
    pytest.param("alice@example.org@example.org", "PLAIN", ("example.org",), "alice@example.org",
                 id="only-the-last-realm-is-taken-off"),
    pytest.param("@example.org", "PLAIN", ("example.org",), "@example.org", id="empty-user-stays"),
    pytest.param("mallory@example.org", "XCLIENT", ("example.org",), "mallory@example.org",
                 id="xclient-login-is-not-a-sasl-login"),
]


@pytest.mark.parametrize("auth,auth_type,realms,want", REALM_CASES)
def test_sasl_realm_logins_are_local_logins(auth, auth_type, realms, want):
    daemon = LOCAL if auth_type == "XCLIENT" else "sendgate-submission"
    got = resolve(auth, auth_type, daemon, LOCAL, fields(), realms)
    assert (got.login, got.refusal, got.source) == (want, None, "auth")
