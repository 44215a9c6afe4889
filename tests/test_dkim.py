"""DKIM end to end with the real signer: Debian's OpenDKIM as a second
milter after sendgate-milter on a private Postfix and Sendmail stack
(`stack up --dkim`, sendgate/stack/opendkim.py).  The verifier is dkimpy,
given the public key from the TXT record opendkim-genkey wrote (no DNS, no
network).

What OpenDKIM signs is its own rule: From: in example.org (Domain), and the
client one of InternalHosts (127.0.0.1, localhost) or authenticated (SASL,
or the submit daemon's XCLIENT LOGIN).  SASL submission and the milter
order's check are Postfix's alone.  Its signature must cover the fields
sendgate adds; with the milters the other way round it does not
(docs/dkim.md), which is why setup-postfix puts sendgate's milter first.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess

import dkim  # dkimpy, of the test extra (pyproject.toml)
import pytest
from dkim.util import parse_tag_value

from conftest import (DOMAIN, MTAS, delivered, need, program, sendmail, start_stack, stop_stack, submit_smtp,
                      unique_marker)

ADDED = ("date", "message-id", "sender")


@pytest.fixture(scope="module")
def dkim_stacks():
    """One stack with OpenDKIM per MTA, started on first use."""
    started = {}

    def get(mta):
        if mta not in started:
            need(shutil.which("opendkim") is not None,
                 "OpenDKIM is not installed (apt-get install opendkim opendkim-tools)")
            # OpenDKIM refuses files below a directory others may write, so
            # not /tmp.  One MTA session per client session: the milter
            # order a test sets with `postfix reload` holds from the next
            # message on.
            started[mta] = start_stack(f"sendgate-test-dkim-{mta}-", "submit_upstream_cache_size=0", mta=mta,
                                       options=("--dkim",), parent="/run")
        return started[mta]

    yield get
    for stack in started.values():
        stop_stack(stack.dir)


@pytest.fixture(params=MTAS)
def dkim_stack(request, dkim_stacks):
    return dkim_stacks(request.param)


@pytest.fixture
def dkim_postfix(dkim_stacks):
    return dkim_stacks("postfix")


def key_record(stack) -> bytes:
    """The TXT record of test._domainkey.example.org, from the .txt file
    opendkim-genkey wrote (a zone-file line of quoted strings)."""
    text = open(stack.facts["dkim_record"], encoding="ascii").read()
    return "".join(re.findall(r'"([^"]*)"', text)).encode()


def verifies(stack, raw: bytes) -> bool:
    name = f"{stack.facts['dkim_selector']}._domainkey.{DOMAIN}.".encode()
    record = key_record(stack)
    return dkim.verify(raw, dnsfunc=lambda asked, timeout=5: record if asked == name else None)


def signature(item) -> dict[str, str]:
    values = item.all("DKIM-Signature")
    assert len(values) == 1, values
    tags = parse_tag_value(re.sub(r"\s+", "", values[0]).encode())
    return {k.decode(): v.decode() for k, v in tags.items()}


def signed_fields(item) -> list[str]:
    return [name.lower() for name in signature(item)["h"].split(":")]


def message(marker: str, extra: str = "") -> bytes:
    """From: another example.org address (sendgate adds Sender:), no Date:,
    no Message-ID:."""
    return (f"From: sgtest2@{DOMAIN}\nTo: friend@example.net\n{extra}Subject: {marker}\n\nbody {marker}\n").encode()


def assert_signed_as_delivered(stack, item) -> None:
    """One signature of d=example.org s=test that verifies, and covers
    Date, Message-ID, From and Sender: the fields sendgate added among them."""
    tags = signature(item)
    assert (tags["d"], tags["s"]) == (DOMAIN, "test")
    assert {"date", "message-id", "from", "sender"} <= set(signed_fields(item))
    assert verifies(stack, item.raw)


@pytest.mark.parametrize("extra", [
    pytest.param("", id="date-message-id-sender-added"),
    pytest.param(f"Sender: sgtest3@{DOMAIN}\n", id="foreign-sender-replaced"),
])
def test_sendmail_command_message_is_signed_over_the_added_fields(dkim_stack, request, extra):
    marker = unique_marker(request)
    result = sendmail(dkim_stack, "sgtest1", ["-t", "-i"], message(marker, extra))
    assert (result.returncode, result.stderr) == (0, b"")
    [item] = delivered(dkim_stack, marker)
    assert item.one("Sender") == f"sendgate test user sgtest1 <sgtest1@{DOMAIN}>"
    assert item.one("From") == f"sgtest2@{DOMAIN}"
    assert item.one("Message-ID").endswith(f"@mail.{DOMAIN}>") and item.one("Date")
    assert_signed_as_delivered(dkim_stack, item)


def test_sasl_submission_is_signed_over_the_added_fields(dkim_postfix, request):
    dkim_stack = dkim_postfix
    marker = unique_marker(request)
    reply = submit_smtp(dkim_stack, "sgtest1", f"sgtest1@{DOMAIN}", ["friend@example.net"], message(marker).decode())
    assert reply == "250 queued"
    [item] = delivered(dkim_stack, marker)
    assert item.one("Sender") == f"sendgate test user sgtest1 <sgtest1@{DOMAIN}>"
    assert item.one("Message-ID").endswith(f"@mail.{DOMAIN}>") and item.one("Date")
    assert_signed_as_delivered(dkim_stack, item)


@pytest.mark.parametrize("source,signed", [
    # 127.0.0.2 stands in for a host of the network: not in InternalHosts,
    # not authenticated: OpenDKIM (Mode s) neither signs nor verifies.
    pytest.param("127.0.0.2", False, id="remote-client-not-signed"),
    # The host itself is in InternalHosts: its mail in example.org is signed.
    pytest.param("127.0.0.1", True, id="internal-host-signed"),
])
def test_relayed_message_per_opendkims_rules(dkim_stack, request, source, signed):
    marker = unique_marker(request)
    text = (f"From: someone@{DOMAIN}\nTo: friend@example.net\nDate: Thu, 03 Dec 2026 01:00:00 +0000\n"
            f"Message-ID: <{marker}@relay.example.net>\nSubject: {marker}\n\nbody {marker}\n")
    host, port = dkim_stack.inbound
    with smtplib.SMTP(host, port, timeout=30, source_address=(source, 0)) as client:
        client.sendmail(f"someone@{DOMAIN}", ["friend@example.net"], text)
    [item] = delivered(dkim_stack, marker)
    assert item.all("Sender") == []  # relayed: sendgate adds nothing
    if signed:
        assert {"date", "message-id", "from"} <= set(signed_fields(item))
        assert verifies(dkim_stack, item.raw)
    else:
        assert item.all("DKIM-Signature") == []


def test_check_config_of_the_stack_with_opendkim_is_clean(dkim_postfix):
    """sendgate's milter first, then OpenDKIM (*opendkim* of signing_milters)."""
    result = subprocess.run([program("sendgate"), "check-config", dkim_postfix.config], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.fixture
def signer_first(dkim_postfix):
    """The milters the wrong way round: OpenDKIM before sendgate-milter."""
    etc = dkim_postfix.facts["postfix_config"]
    right = subprocess.run(["postconf", "-c", etc, "-h", "smtpd_milters"], capture_output=True, text=True,
                           check=True).stdout.strip()
    ours, signer = right.split()
    subprocess.run(["postconf", "-c", etc, "-e", f"smtpd_milters={signer} {ours}"], check=True)
    subprocess.run(["postfix", "-c", etc, "reload"], capture_output=True, check=True)
    yield f"{signer} {ours}"
    subprocess.run(["postconf", "-c", etc, "-e", f"smtpd_milters={right}"], check=True)
    subprocess.run(["postfix", "-c", etc, "reload"], capture_output=True, check=True)


def test_signer_before_sendgate_does_not_cover_what_sendgate_adds(dkim_postfix, signer_first, request):
    """Why the order matters: OpenDKIM signs the message as the client
    wrote it.  The fields sendgate then adds are outside h=, and a Sender:
    it replaces breaks the signature; check-config names the cause."""
    dkim_stack = dkim_postfix
    marker = unique_marker(request)
    result = sendmail(dkim_stack, "sgtest1", ["-t", "-i"], message(marker))
    assert result.returncode == 0, result.stderr
    [item] = delivered(dkim_stack, marker)
    assert item.one("Sender") == f"sendgate test user sgtest1 <sgtest1@{DOMAIN}>"  # added, after signing
    assert not set(ADDED) & set(signed_fields(item))
    assert verifies(dkim_stack, item.raw)  # valid, but over the client's fields only

    result = sendmail(dkim_stack, "sgtest1", ["-t", "-i"], message(marker + "b", f"Sender: sgtest3@{DOMAIN}\n"))
    assert result.returncode == 0, result.stderr
    [item] = delivered(dkim_stack, marker + "b")
    assert item.one("Sender") == f"sendgate test user sgtest1 <sgtest1@{DOMAIN}>"
    assert "sender" in signed_fields(item)  # the client's Sender:, replaced after signing
    assert not verifies(dkim_stack, item.raw)

    check = subprocess.run([program("sendgate"), "check-config", dkim_stack.config], capture_output=True, text=True)
    assert (check.returncode, check.stderr) == (78, (
        f"sendgate: {dkim_stack.config}: postfix: main.cf runs the signing milter {signer_first.split()[0]} before "
        f"sendgate's (smtpd_milters = {signer_first}): its signature does not cover the Date, Message-ID, From and "
        "Sender sendgate adds (put sendgate's milter first; setup-postfix does)\n"))


def test_dkim_stack_below_a_directory_others_may_write_is_refused(tmp_path):
    """OpenDKIM would refuse its configuration below /tmp and exit at start:
    stack up says so first, and makes nothing."""
    need(os.geteuid() == 0, "stack up needs root")
    need(shutil.which("opendkim") is not None, "OpenDKIM is not installed (apt-get install opendkim opendkim-tools)")
    directory = tmp_path / "stack"
    up = subprocess.run([program("sendgate"), "stack", "up", "--dkim", "--dir", str(directory)],
                        capture_output=True, text=True, timeout=60)
    assert (up.returncode, up.stdout, up.stderr) == (1, "", (
        "sendgate: stack up: --dkim: /tmp can be written by other users, and OpenDKIM refuses files below it: "
        "put the stack's directory elsewhere (e.g. under /run or /var/lib)\n"))
    assert not directory.exists()
