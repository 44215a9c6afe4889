"""The non-default sender rules on a stack of their own: a foreign envelope
sender rewritten (CHGFROM), a foreign From: refused, the null sender refused."""

from __future__ import annotations

import pytest

from conftest import delivered, log_text, need_stack_prerequisites, sendmail, start_stack, stop_stack, unique_marker


@pytest.fixture(scope="module")
def strict_stack():
    need_stack_prerequisites()
    stack = start_stack("sendgate-strict-", "sender_mismatch_action=rewrite", "from_mismatch_action=reject",
                        "sender_allow_null=false")
    yield stack
    stop_stack(stack.dir)


@pytest.mark.parametrize("args,header,status,stderr,return_path", [
    pytest.param(["-f", "sgtest2@example.org"], "", 0, b"", "<sgtest1@example.org>", id="foreign-sender-rewritten"),
    pytest.param(["-f", "<>"], "", 0, b"", "<sgtest1@example.org>", id="null-sender-rewritten"),
    pytest.param([], "From: sgtest1@example.org\n", 0, b"", "<sgtest1@example.org>", id="own-from-accepted"),
    pytest.param([], "From: Carol <carol@example.net>\n", 77,
                 b"sendmail: message refused: 550 5.7.1 <carol@example.net>: From address rejected: not owned by "
                 b"user sgtest1", None, id="foreign-from-refused"),
])
def test_strict_rules(strict_stack, request, args, header, status, stderr, return_path):
    m = unique_marker(request)
    result = sendmail(strict_stack, "sgtest1", ["-t", "-i", *args], f"{header}To: bob@example.net\nSubject: {m}\n\nx\n".encode())
    assert (result.returncode, result.stderr.split(b";")[0].strip()) == (status, stderr)
    if return_path:
        (copy,) = delivered(strict_stack, m)
        assert copy.one("Return-Path") == return_path
        if "rewritten" in request.node.callspec.id:
            line = "sender=<sgtest1@example.org>: accepted"
            assert line in log_text(strict_stack.dir / "log/milter.log", line)


def test_rewrite_is_a_chgfrom_as_the_mta_receives_it(strict_stack):
    """The rewrite action, at the protocol level: one CHGFROM to the user's
    address, before the header edits, then CONTINUE."""
    from miltermta import MTA
    macros = {"{auth_authen}": "sgtest1", "{auth_type}": "PLAIN", "{daemon_name}": "sendgate-submission"}
    fields = [("Date", "Mon, 30 Nov 2026 10:00:00 +0000"), ("Message-ID", "<p@example.org>"),
              ("From", "sgtest1@example.org")]
    with MTA(str(strict_stack.dir / "run/milter/milter.sock")) as mta:
        packets = mta.message("<sgtest2@example.org>", ["bob@example.net"], fields, macros)
    assert packets == [("CHGFROM", "<sgtest1@example.org>", ""), ("CONTINUE",)]
