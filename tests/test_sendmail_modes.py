"""The sendmail command's modes and message handling, end to end: -bv,
-F, ESMTP parameters, input quirks (From_ line, lone dots, long lines), and
-bp/-bi/-q running the MTA's own commands (the stack's real Postfix)."""

from __future__ import annotations

import pathlib
import pwd
import subprocess

import pytest

from conftest import DOMAIN, clear_dead_letter, delivered, program, run_as, unique_marker
from sendmail_helpers import public_dir, run_caller  # noqa: F401  (fixture)


@pytest.fixture(scope="session")
def stack(postfix_stack):
    """Postfix only for now: these cases expect Postfix's queue commands and
    its SMTPUTF8 and DSN support (the Sendmail build has no SMTPUTF8)."""
    return postfix_stack


USER = "sgtest3"
ME = f"sendgate test user {USER} <{USER}@{DOMAIN}>"


def test_bv_reports_each_address(stack, public_dir):  # noqa: F811
    result = run_caller(stack, public_dir, USER, ["sendmail", "-bv", "bob@example.net", "bad@@x", "sgtest4"])
    assert result.stdout.decode().splitlines() == [
        "bob@example.net... deliverable: 250 2.1.5 Ok",
        "bad@@x... undeliverable: 501 5.5.4 Syntax: RCPT TO:<address> [parameters]",
        "sgtest4... deliverable: 250 2.1.5 Ok",
    ]
    assert (result.returncode, result.stderr) == (67, b"sendmail: -bv: 1 of 3 addresses undeliverable\n")


def test_bv_all_deliverable_sends_nothing(stack, public_dir, request):  # noqa: F811
    m = unique_marker(request)
    result = run_caller(stack, public_dir, USER, ["sendmail", "-bv", f"{m}@example.net"], b"not read\n")
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == f"{m}@example.net... deliverable: 250 2.1.5 Ok\n".encode()
    assert delivered(stack, m, timeout=2) == []


def case(id, args, message, want):
    return pytest.param(args, message, want, id=id)


LONGEST_LINE = (1 << 20) - 2  # characters: with CRLF, 1 MiB (sendgate/submit_socket/protocol.py)

MESSAGES = [
    case("F-adds-from-when-missing", ["-F", "Joe Q. Public", "-i", "bob@example.net"],
         "Subject: {m}\n\nbody\n", {"From": f'"Joe Q. Public" <{USER}@{DOMAIN}>', "body": b"body\n"}),
    case("F-with-f-uses-that-address", ["-FCron", "-f", f"{USER}@{DOMAIN}", "-t"],
         "To: bob@example.net\nSubject: {m}\n\nbody\n", {"From": f"Cron <{USER}@{DOMAIN}>"}),
    case("F-leaves-an-existing-from", ["-F", "Someone Else", "-t"],
         f"from: {USER}@{DOMAIN}\nTo: bob@example.net\nSubject: {{m}}\n\nbody\n", {"From": f"{USER}@{DOMAIN}"}),
    case("mbox-from-line-dropped", ["-t", "-i"],
         "From someone@example.net Mon Nov 30 10:00:00 2026\nTo: bob@example.net\nSubject: {m}\n\nbody\n",
         {"From": ME, "body": b"body\n"}),
    case("without-i-a-lone-dot-ends-input", ["-t"],
         "To: bob@example.net\nSubject: {m}\n\nkept\n.\nnot sent\n", {"body": b"kept\n"}),
    case("with-oi-a-lone-dot-is-text", ["-t", "-oi"],
         "To: bob@example.net\nSubject: {m}\n\nkept\n.\nsent too\n", {"body": b"kept\n.\nsent too\n"}),
    case("line-over-998-octets", ["-t", "-i"],
         "To: bob@example.net\nSubject: {m}\n\n" + "x" * 5000 + "\nend\n", {"body": b"x" * 5000 + b"\nend\n"}),
    case("line-of-1-mib-with-its-crlf", ["-t", "-i"],  # the README's limit
         "To: bob@example.net\nSubject: {m}\n\n" + "x" * LONGEST_LINE + "\nend\n",
         {"body": b"x" * LONGEST_LINE + b"\nend\n"}),
    case("bare-cr-never-doubled", ["-t", "-i"],
         "To: bob@example.net\r\nSubject: {m}\r\n\r\na\r\nb\r\n", {"body": b"a\nb\n"}),
    case("utf8-recipient-asks-smtputf8", ["-i", "j\u00f6rg@example.net"],
         "Subject: {m}\n\nhallo\n", {"to": "j\u00f6rg@example.net", "body": b"hallo\n"}),
    case("t-utf8-header-recipient-asks-smtputf8", ["-t", "-i"],
         "To: J\u00f6rg <j\u00f6rg@b\u00fccher.example>\nSubject: {m}\n\nhallo\n",
         {"to": "j\u00f6rg@b\u00fccher.example", "header": "To: J\u00f6rg <j\u00f6rg@b\u00fccher.example>".encode(),
          "body": b"hallo\n"}),
    case("t-utf8-display-name-only-needs-nothing", ["-t", "-i"],
         "To: J\u00f6rg M\u00fcller <joerg@example.net>\nSubject: {m}\n\nhallo\n",
         {"to": "joerg@example.net", "header": "To: J\u00f6rg M\u00fcller <joerg@example.net>".encode()}),
    case("esmtp-parameters-accepted", ["-t", "-i", "-B", "8BITMIME", "-N", "delay,failure", "-R", "hdrs",
                                       "-V", "env+1", "-U"],
         "To: bob@example.net\nSubject: {m}\n\nb\u00fcdy\n", {"body": "b\u00fcdy\n".encode()}),
]


@pytest.mark.parametrize("args,message,want", MESSAGES)
def test_message_handling(stack, public_dir, request, args, message, want):  # noqa: F811
    m = unique_marker(request)
    result = run_caller(stack, public_dir, USER, ["sendmail", *args], message.replace("{m}", m).encode())
    assert (result.returncode, result.stderr) == (0, b"")
    (item,) = delivered(stack, m)
    if "to" in want:
        assert item.raw.split(b"\n")[1] == f"X-Original-To: {want['to']}".encode()
    if "From" in want:
        assert item.one("From") == want["From"]
    if "header" in want:  # as written: 8-bit header text passes unchanged
        assert want["header"] in item.raw.split(b"\n\n", 1)[0].split(b"\n")
    if "body" in want:
        assert item.raw.split(b"\n\n", 1)[1] == want["body"]


def test_longer_line_is_refused_and_saved(stack, public_dir, request):  # noqa: F811
    m = unique_marker(request)
    home = pathlib.Path(pwd.getpwnam(USER).pw_dir)
    clear_dead_letter(home)
    message = f"To: bob@example.net\nSubject: {m}\n\n" + "x" * (LONGEST_LINE + 1) + "\nend\n"
    result = run_caller(stack, public_dir, USER, ["sendmail", "-t", "-i"], message.encode())
    assert (result.returncode, result.stderr) == (69, f"sendmail: message refused: 500 5.5.2 Error: line too long; "
                                                      f"message saved in {home}/dead.letter\n".encode())
    assert m.encode() in (home / "dead.letter").read_bytes()
    clear_dead_letter(home)


def test_verbose_shows_the_parameters_sent(stack, public_dir, request):  # noqa: F811
    m = unique_marker(request)
    args = ["sendmail", "-v", "-t", "-i", "-B8BITMIME", "-N", "never", "-R", "full", "-V", "a+b", "-U"]
    result = run_caller(stack, public_dir, USER, args, f"To: bob@example.net\nSubject: {m}\n\nx\n".encode())
    assert result.returncode == 0
    dialogue = result.stderr.decode().splitlines()
    assert f"MAIL FROM:<{USER}> RCPTHDR BODY=8BITMIME RET=FULL ENVID=a+2Bb SMTPUTF8" in dialogue
    assert len(delivered(stack, m)) == 1


# -bp, -bi, -q: the configured commands, here the stack's own Postfix tools.
# Run as root, as an administrator would: Postfix's set-gid postqueue lets
# only root name a configuration directory other than /etc/postfix.
ADMIN = "root"


@pytest.fixture(scope="module")
def queue_config(stack, public_dir):  # noqa: F811
    pf = stack.facts["postfix_config"]
    aliases = public_dir / "aliases"
    aliases.write_text("postmaster: root\n")
    config = public_dir / "queue.yaml"
    config.write_text(open(stack.config).read()
                      + f"sendmail_mailq_command: postqueue -c {pf} -p\n"
                      + f"sendmail_newaliases_command: postalias -c {pf} {aliases}\n"
                      + f"sendmail_flush_command: postqueue -c {pf} -f\n")
    config.chmod(0o644)
    return {"SENDGATE_CONFIG": str(config)}, aliases


@pytest.mark.parametrize("argv", [
    pytest.param(["mailq"], id="mailq-argv0"),
    pytest.param(["sendmail", "-bp"], id="bp"),
])
def test_queue_listing_runs_postqueue(stack, public_dir, queue_config, argv):  # noqa: F811
    env, _ = queue_config
    result = run_caller(stack, public_dir, ADMIN, argv, env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"Mail queue is empty\n", b"")


@pytest.mark.parametrize("argv", [
    pytest.param(["newaliases"], id="newaliases-argv0"),
    pytest.param(["sendmail", "-bi"], id="bi"),
    pytest.param(["sendmail", "-I"], id="I"),
])
def test_newaliases_runs_postalias(stack, public_dir, queue_config, argv):  # noqa: F811
    env, aliases = queue_config
    db = aliases.parent / "aliases.db"
    if db.exists():
        db.unlink()
    result = run_caller(stack, public_dir, ADMIN, argv, env=env)
    assert (result.returncode, result.stderr) == (0, b"")
    query = subprocess.run(["postalias", "-c", stack.facts["postfix_config"], "-q", "postmaster", str(aliases)],
                           capture_output=True, text=True)
    assert query.stdout == "root\n"


def test_q_flushes_the_queue(stack, public_dir, queue_config):  # noqa: F811
    env, _ = queue_config
    result = run_caller(stack, public_dir, ADMIN, ["sendmail", "-q"], env=env)
    assert (result.returncode, result.stderr) == (0, b"")


@pytest.mark.parametrize("setting,argv,stderr", [
    pytest.param("sendmail_newaliases_command: newaliases", ["newaliases"],
                 b"sendmail: newaliases: sendmail_newaliases_command (newaliases) is this command; "
                 b"set it to the MTA's program\n", id="newaliases-is-this-command"),
    pytest.param("sendmail_mailq_command: no-such-program -p", ["sendmail", "-bp"],
                 b"sendmail: mailq: no-such-program: command not found (set sendmail_mailq_command)\n",
                 id="missing-program"),
])
def test_queue_commands_never_loop(stack, public_dir, setting, argv, stderr):  # noqa: F811
    config = public_dir / f"loop-{setting.split(':')[0]}.yaml"
    config.write_text(f"submit_socket: {stack.socket}\n{setting}\n")
    config.chmod(0o644)
    result = run_caller(stack, public_dir, USER, argv, env={"SENDGATE_CONFIG": str(config)})
    assert (result.returncode, result.stderr) == (78, stderr)


def test_delegated_command_coming_back_is_stopped(stack, public_dir):  # noqa: F811
    # A wrapper script that calls sendmail -bp again: the guard stops it.
    wrapper = public_dir / "bin" / "queue-wrapper"
    wrapper.write_text(f"#!/bin/sh\nexec {program('sendgate-sendmail')} -bp\n")
    wrapper.chmod(0o755)
    config = public_dir / "wrapper.yaml"
    config.write_text(f"submit_socket: {stack.socket}\nsendmail_mailq_command: queue-wrapper\n")
    config.chmod(0o644)
    result = run_caller(stack, public_dir, USER, ["mailq"], env={"SENDGATE_CONFIG": str(config)})
    assert (result.returncode, result.stderr) == (
        78, f"sendmail: mailq: sendmail_mailq_command leads back to sendmail (via {wrapper})\n".encode())


# What the send path loads: measured on a real send, started as the
# install-shim launcher starts it (python -I -S, sendgate's directory only).
HEAVY = {"asyncio", "email", "yaml", "argparse", "socket", "selectors", "re", "enum", "aiosmtpd", "Milter"}


@pytest.mark.parametrize("args,extra", [
    pytest.param(["-t", "-i"], set(), id="t-i"),
    pytest.param(["-t", "-i", "-F", "Cron Daemon"], {"sendgate.sendmail_shim.fullname", "binascii"}, id="F"),
    pytest.param(["-t", "-i", "-F", "Jörg (Cron)"], {"sendgate.sendmail_shim.fullname", "binascii"}, id="F-non-ascii"),
])
def test_send_path_imports_only_what_it_needs(stack, request, args, extra):
    import sendgate
    m = unique_marker(request)
    site_dir = str(pathlib.Path(sendgate.__file__).parent.parent)
    code = (f"import sys; sys.path.insert(0, {site_dir!r}); sys.argv[0] = 'sendmail'; "
            "from sendgate.sendmail_shim.main import main; sys.exit(main())")
    result = run_as(USER, [program("python"), "-X", "importtime", "-I", "-S", "-c", code, *args],
                    f"To: bob@example.net\nSubject: {m}\n\nx\n".encode(), stack.env())
    assert result.returncode == 0
    imported = {line.split("|")[-1].strip() for line in result.stderr.decode().splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "sendgate.sendmail_shim.main" in imported
    assert {name.split(".")[0] for name in imported} & HEAVY == set()
    assert {"sendgate.policy", "dataclasses", "inspect", "typing"} & imported == set()
    assert extra <= imported
    assert len(delivered(stack, m)) == 1


def test_t_with_n_gives_header_recipients_notify(stack, public_dir, request):  # noqa: F811
    # sqwebmail's `-oi -t -f addr -N...`: NOTIFY must reach the header's recipients.
    m = unique_marker(request)
    message = f"To: Bob <bob@example.net>, carol\nBcc: hidden@example.net\nSubject: {m}\n\nx\n".encode()
    args = ["sendmail", "-v", "-oi", "-t", "-f", f"{USER}@{DOMAIN}", "-Ndelay,failure", "bob@example.net"]
    result = run_caller(stack, public_dir, USER, args, message)
    assert result.returncode == 0
    dialogue = result.stderr.decode().splitlines()
    assert [line for line in dialogue if line.startswith("RCPT")] == [
        f"RCPT TO:<{r}> NOTIFY=DELAY,FAILURE" for r in
        ("bob@example.net", "bob@example.net", f"carol@{DOMAIN}", "hidden@example.net")]
    copies = delivered(stack, m, count=3)
    assert sorted(c.one("X-Original-To") for c in copies) == ["bob@example.net", f"carol@{DOMAIN}",
                                                             "hidden@example.net"]
    assert all(c.all("Bcc") == [] for c in copies)


@pytest.mark.parametrize("closed", [">&-", "2>&-", ">&- 2>&-"])
@pytest.mark.parametrize("args,status,copies", [
    pytest.param([], 0, 1, id="accepted"),
    pytest.param(["-f", "root@example.org"], 77, 0, id="refused"),
])
def test_closed_standard_output_or_error_changes_no_status(stack, request, closed, args, status, copies):
    """cron and daemons run the command with descriptors closed; the
    command leaves without Python's teardown (sendmail_shim.main.leave) and
    must still exit with its own status."""
    m = unique_marker(request)
    argv = " ".join([program("sendgate-sendmail"), "-t", "-i", *args])
    result = run_as(USER, ["/bin/sh", "-c", f"exec {argv} {closed}"],
                    f"To: bob@example.net\nSubject: {m}\n\nx\n".encode(), stack.env())
    assert (result.returncode, result.stdout) == (status, b"")
    assert len(delivered(stack, m, timeout=2 if copies == 0 else 20)) == copies
    clear_dead_letter(pathlib.Path(pwd.getpwnam(USER).pw_dir))  # where the refused one was saved


def test_unwritable_output_is_a_failure(stack):
    """-bv's answer that cannot be written (a full disk) is EX_IOERR, not 0."""
    result = run_as(USER, ["/bin/sh", "-c", f"exec {program('sendgate-sendmail')} -bv bob@example.net >/dev/full"],
                    b"", stack.env())
    assert (result.returncode, result.stderr) == (74, b"sendmail: No space left on device\n")


def test_utf8_header_recipient_through_sendmail(sendmail_stack, request):
    """The Sendmail build has no SMTPUTF8: the replay sends the envelope
    without it, as before, and Sendmail takes the 8-bit address."""
    from conftest import sendmail
    m = unique_marker(request)
    message = f"To: J\u00f6rg <j\u00f6rg@b\u00fccher.example>\nSubject: {m}\n\nhallo\n".encode()
    result = sendmail(sendmail_stack, USER, ["-t", "-i"], message)
    assert (result.returncode, result.stderr) == (0, b"")
    (item,) = delivered(sendmail_stack, m)
    assert "To: J\u00f6rg <j\u00f6rg@b\u00fccher.example>".encode() in item.raw.split(b"\n")


def test_utf8_argv_recipient_on_an_mta_without_smtputf8_is_a_clear_refusal(sendmail_stack, request):
    """An argv address that is not ASCII asks for SMTPUTF8 (as Postfix's
    sendmail does); Sendmail's refusal reaches the caller, and the message
    is saved."""
    from conftest import sendmail
    m = unique_marker(request)
    home = pathlib.Path(pwd.getpwnam(USER).pw_dir)
    clear_dead_letter(home)
    result = sendmail(sendmail_stack, USER, ["-i", "j\u00f6rg@b\u00fccher.example"], f"Subject: {m}\n\nhallo\n".encode())
    assert (result.returncode, result.stderr) == (
        69, f"sendmail: sender refused: 555 5.5.4 SMTPUTF8 parameter unrecognized; message saved in "
            f"{home}/dead.letter\n".encode())
    assert m.encode() in (home / "dead.letter").read_bytes()
    clear_dead_letter(home)
