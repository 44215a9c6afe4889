"""Who may use which envelope sender."""

from __future__ import annotations

import pytest

from sendgate.policy.sender import SenderRules, check_envelope_sender, default_address

RULES = SenderRules(domain="example.org",
                    login_maps={"bob": ("bob@example.net", "*@bob.example", "bob+*@lists.example")},
                    trusted=frozenset({"mailer"}))


@pytest.mark.parametrize("login,address,want", [
    pytest.param("alice", "alice@example.org", None, id="own-address"),
    pytest.param("alice", "alice@EXAMPLE.ORG", None, id="domain-case-insensitive"),
    pytest.param("alice", "alice", None, id="unqualified-own"),
    pytest.param("alice", "", None, id="null-sender-allowed"),
    pytest.param("alice", "Alice@example.org",
                 "553 5.7.1 <Alice@example.org>: Sender address rejected: not owned by user alice", id="local-part-case"),
    pytest.param("alice", "bob@example.org",
                 "553 5.7.1 <bob@example.org>: Sender address rejected: not owned by user alice", id="other-user"),
    pytest.param("bob", "bob@example.org",
                 "553 5.7.1 <bob@example.org>: Sender address rejected: not owned by user bob", id="mapped-replaces-default"),
    pytest.param("bob", "bob@example.net", None, id="mapped-exact"),
    pytest.param("bob", "anything@bob.example", None, id="mapped-domain-wildcard"),
    pytest.param("bob", "bob+lists@lists.example", None, id="mapped-plus-detail"),
    pytest.param("bob", "bobby@lists.example",
                 "553 5.7.1 <bobby@lists.example>: Sender address rejected: not owned by user bob", id="plus-needs-plus"),
    pytest.param("mailer", "anyone@anywhere.example", None, id="trusted"),
])
def test_check_envelope_sender(login, address, want):
    verdict = check_envelope_sender(login, address, RULES)
    assert (None if verdict is None else str(verdict)) == want


def test_null_sender_can_be_refused():
    rules = SenderRules(domain="example.org", allow_null_sender=False)
    assert str(check_envelope_sender("alice", "", rules)) == \
        "553 5.7.1 <>: Sender address rejected: null sender not allowed for user alice"


@pytest.mark.parametrize("login,want", [("alice", "alice@example.org"), ("bob", "bob@example.net")])
def test_default_address(login, want):
    assert default_address(login, RULES) == want
