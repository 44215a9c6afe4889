"""One policy for both ways in: the submit socket and SMTP AUTH.

Every case in CASES runs twice against the session stack with the same
expected result: once as a local user through the sendmail command (submit
socket, XCLIENT LOGIN), once as the same user authenticated with SASL on the
submission port after STARTTLS.  The delivered copy must carry the same
fix-ups, and a refusal must be the same reply.  The other tests here are
the ways a network client might try to pass for a user, on the
port-25-style service and on the submission port, each asserting that it
gains nothing.
"""

from __future__ import annotations

import smtplib
import ssl
import subprocess

import pytest

from conftest import (DOMAIN, delivered, log_text, need_stack_prerequisites, password_of, postfix_log_lines, program, queue_id,
                      start_stack, stop_stack,
                      sendmail, submit_smtp, unique_marker)


@pytest.fixture(scope="session")
def stack(postfix_stack):
    """Postfix only: this file tests Postfix's own mechanisms or wording."""
    return postfix_stack


ME = "sendgate test user {user} <{user}@example.org>"
DATE = "Mon, 30 Nov 2026 10:00:00 +0000"


def case(id, message, want, sender="{user}@example.org", user="sgtest1", recipients=("bob@example.net",)):
    return pytest.param(dict(message=message, sender=sender, user=user, recipients=list(recipients)), want, id=id)


# want: the fields of the delivered copy (None: absent; "<added>": present,
# made by the milter), or "refused": the reply either path gets.
CASES = [
    case("bare-message-gets-date-message-id-from",
         "To: bob@example.net\nSubject: {m}\n\nhello\n",
         {"From": ME, "Sender": None, "Date": "<added>", "Message-ID": "<added>"}),
    case("complete-message-left-alone",
         f"Date: {DATE}\nMessage-ID: <{{m}}@client.example>\nFrom: {{user}}@example.org\nSubject: {{m}}\n\nhi\n",
         {"From": "{user}@example.org", "Sender": None, "Date": DATE, "Message-ID": "<{m}@client.example>"}),
    case("foreign-from-gets-sender",
         "From: Carol <carol@example.net>\nSubject: {m}\n\nhello\n",
         {"From": "Carol <carol@example.net>", "Sender": ME, "Date": "<added>"}),
    case("several-from-mailboxes-get-sender",
         "From: {user}@example.org, carol@example.net\nSubject: {m}\n\nhello\n",
         {"From": "{user}@example.org, carol@example.net", "Sender": ME}),
    case("forged-sender-removed",
         "From: {user}@example.org\nSender: root@example.org\nSubject: {m}\n\nhello\n",
         {"From": "{user}@example.org", "Sender": None}),
    case("forged-sender-replaced",
         "From: carol@example.net\nSender: root@example.org\nSubject: {m}\n\nhello\n",
         {"From": "carol@example.net", "Sender": ME}),
    case("resent-message-gets-resent-fields",
         f"Resent-To: dave@example.net\nFrom: carol@example.net\nDate: {DATE}\nMessage-ID: <{{m}}@c.example>\n"
         "Subject: {m}\n\nhello\n",
         {"From": "carol@example.net", "Resent-From": ME, "Resent-Date": "<added>", "Resent-Message-ID": "<added>",
          "Sender": None, "Date": DATE}),
    case("second-user-is-itself",
         "Subject: {m}\n\nhello\n", {"From": ME, "Sender": None}, user="sgtest2"),
    case("two-recipients-two-copies",
         "Subject: {m}\n\nhello\n", {"From": ME, "X-Original-To": ["a@example.net", "b@example.net"]},
         recipients=("a@example.net", "b@example.net")),
    case("envelope-sender-of-another-user-refused",
         "Subject: {m}\n\nhello\n",
         "553 5.7.1 <root@example.org>: Sender address rejected: not owned by user {user}",
         sender="root@example.org"),
]

PATHS = [pytest.param("socket", id="submit-socket"), pytest.param("submission", id="smtp-auth")]


def send(stack, path: str, user: str, sender: str, recipients: list[str], message: str) -> str:
    """Send over one path; the final reply as "CODE TEXT" ("250 queued" when accepted)."""
    if path == "submission":
        return submit_smtp(stack, user, sender, recipients, message)
    result = sendmail(stack, user, ["-i", "-f", sender, *recipients], message.encode())
    if result.returncode == 0:
        return "250 queued"
    # sendmail: sender refused: 553 5.7.1 ...; message saved in ~/dead.letter
    return result.stderr.decode().split(" refused: ", 1)[1].rsplit("; message saved", 1)[0]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("given,want", CASES)
def test_same_policy_on_both_paths(stack, request, path, given, want):
    m = unique_marker(request)
    user = given["user"]
    fill = lambda v: v.replace("{user}", user).replace("{m}", m)  # noqa: E731
    reply = send(stack, path, user, fill(given["sender"]), given["recipients"], fill(given["message"]))
    if isinstance(want, str):
        assert reply == fill(want)
        return
    assert reply == "250 queued"
    copies = delivered(stack, m, count=len(given["recipients"]))
    assert sorted(c.one("X-Original-To") for c in copies) == want.get("X-Original-To", given["recipients"])
    for item in copies:
        assert item.one("Return-Path") == f"<{user}@{DOMAIN}>"
        for name, value in want.items():
            if name == "X-Original-To":
                continue
            if value == "<added>":
                assert len(item.all(name)) == 1 and f"\n{name}:" not in "\n" + fill(given["message"]), name
            else:
                assert item.all(name) == ([] if value is None else [fill(value)]), name
        method = "XCLIENT" if path == "socket" else "PLAIN"
        assert any(f"sasl_method={method}, sasl_username={user}" in line
                   for line in postfix_log_lines(stack, queue_id(item)))


# --- network clients that try to pass for a user ------------------------------

def dialogue(address, *commands, tls=None):
    """Each command's reply as "CODE TEXT" (text lines joined with " | ")."""
    with smtplib.SMTP(*address, timeout=10) as client:
        client.ehlo("client.example")
        if tls is not None:
            client.starttls(context=tls)
            client.ehlo("client.example")
        out = []
        for command in commands:
            code, text = client.docmd(command)
            out.append(f"{code} {text.decode()}".replace("\n", " | "))
        return out


def tls_context(stack):
    context = ssl.create_default_context(cafile=str(stack.dir / "postfix/tls/cert.pem"))
    return context


@pytest.mark.parametrize("service,tls,commands,want", [
    pytest.param("inbound", False, ["AUTH PLAIN AHNndGVzdDEAc2VjcmV0LW9mLXNndGVzdDE="],
                 "503 5.5.1 Error: authentication not enabled", id="inbound-auth"),
    pytest.param("inbound", False, ["XCLIENT LOGIN=sgtest1"], "550 5.7.0 Error: insufficient authorization",
                 id="inbound-xclient"),
    pytest.param("submission", False, ["AUTH PLAIN AHNndGVzdDEAc2VjcmV0LW9mLXNndGVzdDE="],
                 "530 5.7.0 Must issue a STARTTLS command first", id="submission-auth-before-tls"),
    pytest.param("submission", False, ["MAIL FROM:<sgtest1@example.org>"],
                 "530 5.7.0 Must issue a STARTTLS command first", id="submission-mail-before-tls"),
    pytest.param("submission", True, ["XCLIENT LOGIN=sgtest1"], "550 5.7.0 Error: insufficient authorization",
                 id="submission-xclient"),
    pytest.param("submission", True, ["MAIL FROM:<sgtest1@example.org> AUTH=<sgtest1@example.org>",
                                      "RCPT TO:<bob@example.net>"],
                 "554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: Access denied",
                 id="submission-auth-parameter-without-login"),
])
def test_network_client_cannot_claim_a_login(stack, service, tls, commands, want):
    address = stack.inbound if service == "inbound" else stack.submission
    replies = dialogue(address, *commands, tls=tls_context(stack) if tls else None)
    assert replies[-1] == want


@pytest.mark.parametrize("user,password", [
    pytest.param("sgtest1", "wrong", id="wrong-password"),
    pytest.param("root", "secret-of-sgtest1", id="no-such-account"),
    pytest.param("sgtest1@example.org", password_of("sgtest1"), id="other-spelling-of-login"),
])
def test_bad_credentials_are_refused(stack, user, password):
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        submit_smtp(stack, user, "sgtest1@example.org", ["bob@example.net"], "Subject: x\n\nx\n", password)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        535, b"5.7.8 Error: authentication failed: authentication failure")


@pytest.mark.parametrize("forgery", [
    pytest.param(dict(options=["AUTH=<sgtest1@example.org>"], header=""), id="auth-parameter"),
    pytest.param(dict(options=[], header="Sender: sendgate test user sgtest1 <sgtest1@example.org>\n"),
                 id="sender-header-of-a-user"),
    pytest.param(dict(options=[], header="X-Original-Login: sgtest1\n"), id="made-up-identity-header"),
])
def test_forging_relay_client_gains_nothing(stack, request, forgery):
    """Relayed as it came: no login, no fix-ups, nothing added or removed."""
    m = unique_marker(request)
    message = f"From: sgtest1@example.org\n{forgery['header']}Subject: {m}\n\nhi\n"
    with smtplib.SMTP(*stack.inbound, timeout=10) as client:
        client.ehlo("sendgate-local")
        client.sendmail("sgtest1@example.org", ["bob@example.org"], message, mail_options=forgery["options"])
    (item,) = delivered(stack, m)
    assert [n for n in item.header_names if n not in ("Return-Path", "X-Original-To", "Delivered-To", "Received")] \
        == [line.split(":")[0] for line in message.split("\n\n")[0].splitlines()]
    qid = queue_id(item)
    log = postfix_log_lines(stack, qid)
    assert not any("sasl_method" in line or "sasl_username" in line for line in log)
    # Postfix keeps an AUTH= parameter even from a client that never logged
    # in ({auth_author}); the milter does not take it for a login.
    assert any("sasl_sender=<sgtest1@example.org>" in line for line in log) == bool(forgery["options"])
    line = f"{qid}: relay: from=<sgtest1@example.org> nrcpt=1: no fix-ups"
    assert line in log_text(stack.milter_log, line)


# --- the stack's services and accounts ------------------------------------------

def test_stack_offers_submission_with_tls_then_auth(stack):
    assert stack.facts["submission"] == f"127.0.0.1:{stack.submission[1]}"
    assert stack.facts["inbound"] == f"127.0.0.1:{stack.inbound[1]}"
    with smtplib.SMTP(*stack.submission, timeout=10) as client:
        features = client.ehlo("client.example")[1].decode().splitlines()
        assert "STARTTLS" in features and not any(f.startswith("AUTH") for f in features)
        client.starttls(context=tls_context(stack))
        features = client.ehlo("client.example")[1].decode().splitlines()
        assert "AUTH PLAIN LOGIN" in features and "STARTTLS" not in features
    with smtplib.SMTP(*stack.inbound, timeout=10) as client:
        features = client.ehlo("client.example")[1].decode().splitlines()
        assert not any(f.startswith(("AUTH", "XCLIENT")) for f in features)


@pytest.mark.parametrize("args,want", [
    pytest.param(["--dir", "/nonexistent/stack", "someone", "pw"],
                 "sendgate: stack adduser: no stack in /nonexistent/stack (no /nonexistent/stack/postfix/etc/sasl):"
                 " run `sendgate stack up` first\n", id="no-stack"),
    pytest.param(["--dir", "{dir}", "bad login", "pw"],
                 "sendgate: stack adduser: bad login 'bad login': use letters, digits and . _ - +\n", id="bad-login"),
    pytest.param(["--dir", "{dir}", "someone", ""],
                 "sendgate: stack adduser: the password must be one non-empty line\n", id="empty-password"),
])
def test_adduser_refuses_bad_input(stack, args, want):
    result = subprocess.run([program("sendgate"), "stack", "adduser", *(a.replace("{dir}", str(stack.dir)) for a in args)],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", want)


def test_adduser_changes_a_password(stack):
    for password in ("first-password", password_of("sgtest2")):
        subprocess.run([program("sendgate"), "stack", "adduser", "--dir", str(stack.dir), "sgtest2", password],
                       check=True, timeout=30)
        assert submit_smtp(stack, "sgtest2", "sgtest2@example.org", ["bob@example.net"], "Subject: pw\n\nx\n",
                           password) == "250 queued"


@pytest.mark.parametrize("setting,want", [
    pytest.param("bogus=1", "sendgate: --set: bogus: unknown key\n", id="unknown-key"),
    pytest.param("novalue", "sendgate: --set: expected KEY=VALUE, got 'novalue'\n", id="no-equals"),
])
def test_stack_up_refuses_bad_settings(tmp_path, setting, want):
    need_stack_prerequisites()
    result = subprocess.run([program("sendgate"), "stack", "up", "--dir", str(tmp_path / "s"), "--set", setting],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (78, "", want)
    assert not (tmp_path / "s").exists()


# --- SASL logins with a realm -------------------------------------------------

REALM = f"mail.{DOMAIN}"  # the stack's myhostname: the realm of its sasldb accounts


@pytest.fixture(scope="module")
def realm_stack():
    """A stack whose configuration says its SASL realm is the local users'."""
    started = start_stack("sendgate-realm-", f"sasl_realms=[{REALM}]")
    yield started
    stop_stack(started.dir)


def test_realm_login_is_not_the_local_user_unless_configured(stack, request):
    """Logged in as sgtest1@REALM with no sasl_realms, the login is that
    whole name, and sgtest1's own address is not its."""
    m = unique_marker(request)
    reply = submit_smtp(stack, f"sgtest1@{REALM}", f"sgtest1@{DOMAIN}", ["bob@example.net"],
                        f"Subject: {m}\n\nhello\n", password=password_of("sgtest1"))
    assert reply == f"553 5.7.1 <sgtest1@{DOMAIN}>: Sender address rejected: not owned by user sgtest1@{REALM}"


@pytest.mark.parametrize("login", [pytest.param(f"sgtest1@{REALM}", id="with-realm"),
                                   pytest.param("sgtest1", id="without-realm")])
def test_realm_login_is_the_local_user_with_sasl_realms(realm_stack, request, login):
    m = unique_marker(request)
    reply = submit_smtp(realm_stack, login, f"sgtest1@{DOMAIN}", ["bob@example.net"],
                        f"Subject: {m}\n\nhello\n", password=password_of("sgtest1"))
    assert reply == "250 queued"
    (item,) = delivered(realm_stack, m)
    assert (item.one("Return-Path"), item.one("From"), item.all("Sender")) == (
        f"<sgtest1@{DOMAIN}>", ME.format(user="sgtest1"), [])
    # Another user's address is still not sgtest1's.
    refused = submit_smtp(realm_stack, login, f"sgtest2@{DOMAIN}", ["bob@example.net"],
                          f"Subject: {m}-2\n\nhello\n", password=password_of("sgtest1"))
    assert refused == f"553 5.7.1 <sgtest2@{DOMAIN}>: Sender address rejected: not owned by user sgtest1"
