"""`sendgate status` and the MTA side of `sendgate check-config`."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from conftest import program


@pytest.fixture(scope="session")
def stack(postfix_stack):
    """Postfix only: this file tests Postfix's own mechanisms or wording."""
    return postfix_stack


def run(*args):
    result = subprocess.run([program("sendgate"), *args], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout, result.stderr


def test_status_of_a_running_stack(stack):
    status, out, err = run("status", "--dir", str(stack.dir))
    assert (status, err) == (0, ""), out
    d = re.escape(str(stack.dir))
    patterns = [
        rf"submitd: socket {d}/run/submit\.sock mode 0666 root:root",
        r"submitd: up, \d+ session\(s\) open, the MTA answers",
        re.escape("spool: /var/spool/sendgate/deferred: No such file or directory;"
                  " failed messages go to ~/dead.letter"),
        rf"milter: socket {d}/run/milter/milter\.sock mode 0660 root:postfix",
        r"milter: up",
        rf"postfix: {d}/postfix/etc: smtpd_milters = unix:{d}/run/milter/milter\.sock; "
        r"milter_default_action = tempfail",
        rf"postfix: service sendgate/unix reaches the milter at {d}/run/milter/milter\.sock",
        rf"postfix: service 127\.0\.0\.1:\d+/inet reaches the milter at {d}/run/milter/milter\.sock",
        rf"postfix: service 127\.0\.0\.1:\d+/inet reaches the milter at {d}/run/milter/milter\.sock",
        r"postfix: authorized_submit_users = root",
        rf"postfix: service sendgate/unix in {d}/postfix/spool/public/ \(mode 0710 postfix:postdrop\)",
    ]
    lines = out.splitlines()
    assert len(lines) == len(patterns), out
    for line, pattern in zip(lines, patterns):
        assert re.fullmatch(pattern, line), line


@pytest.fixture
def broken_postfix(stack, tmp_path):
    """A copy of the stack's Postfix configuration, then spoiled."""
    etc = tmp_path / "etc"
    shutil.copytree(stack.dir / "postfix/etc", etc)
    config = tmp_path / "sendgate.yaml"
    config.write_text((stack.dir / "sendgate.yaml").read_text().replace(str(stack.dir / "postfix/etc"), str(etc)))
    return etc, config


@pytest.mark.parametrize("edit,problem", [
    pytest.param(["milter_default_action=accept"],
                 "postfix: milter_default_action = accept: mail passes without policy while the milter is down "
                 "(set tempfail)", id="fail-open"),
    pytest.param(["smtpd_milters="], "postfix: smtpd_milters does not name unix:{stack}/run/milter/milter.sock: "
                 "SMTP mail passes without sendgate's policy", id="milter-not-attached"),
    pytest.param(["smtpd_authorized_xclient_hosts=127.0.0.0/8"],
                 "postfix: smtpd_authorized_xclient_hosts = 127.0.0.0/8 in main.cf: every smtpd service trusts "
                 "XCLIENT; allow it only on the sendgate service", id="xclient-everywhere"),
    pytest.param(["authorized_submit_users=static:anyone"],
                 "postfix: authorized_submit_users = static:anyone: users other than root can submit with "
                 "Postfix's own sendmail and postdrop, around sendgate's policy (set authorized_submit_users = root)",
                 id="postdrop-open-to-all"),
    pytest.param(["authorized_submit_users=root, alice"],
                 "postfix: authorized_submit_users = root, alice: users other than root can submit with "
                 "Postfix's own sendmail and postdrop, around sendgate's policy (set authorized_submit_users = root)",
                 id="postdrop-open-to-a-user"),
])
def test_check_config_finds_mta_problems(stack, broken_postfix, edit, problem):
    etc, config = broken_postfix
    subprocess.run(["postconf", "-c", str(etc), "-e", *edit], check=True)
    status, out, err = run("check-config", str(config))
    assert status == 78
    assert f"sendgate: {config}: " + problem.replace("{stack}", str(stack.dir)) in err.splitlines()


def test_check_config_finds_xclient_on_another_service(stack, broken_postfix):
    etc, config = broken_postfix
    port = stack.facts["inbound"]
    subprocess.run(["postconf", "-c", str(etc), "-P", f"{port}/inet/smtpd_authorized_xclient_hosts=127.0.0.1"],
                   check=True)
    status, _, err = run("check-config", str(config))
    assert status == 78
    assert (f"sendgate: {config}: postfix: {port}/inet/smtpd_authorized_xclient_hosts = 127.0.0.1: anyone who "
            "reaches that service can claim any login") in err.splitlines()


@pytest.mark.parametrize("edit,problem", [
    pytest.param(["-F", "{port}/inet/chroot=y"],
                 "postfix: service {port}/inet (chrooted) looks for the milter at {spool}{stack}/run/milter/milter.sock: "
                 "it cannot reach {stack}/run/milter/milter.sock (put the socket under {spool} and name it relative "
                 "to it)", id="chrooted-service-cannot-see-the-socket"),
    pytest.param(["-P", "{port}/inet/smtpd_milters="],
                 "postfix: service {port}/inet runs without the milter (smtpd_milters = (empty)): mail through it "
                 "passes without sendgate's policy", id="service-without-the-milter"),
    pytest.param(["-P", "{port}/inet/smtpd_milters=inet:127.0.0.1:8891"],
                 "postfix: service {port}/inet runs without the milter (smtpd_milters = inet:127.0.0.1:8891): mail "
                 "through it passes without sendgate's policy", id="service-with-other-milters-only"),
])
def test_check_config_checks_each_smtpd_service(stack, broken_postfix, edit, problem):
    """What smtpd_milters names must be reachable as each service sees it:
    a chrooted smtpd looks inside queue_directory."""
    etc, config = broken_postfix
    port, spool = stack.facts["inbound"], f"{stack.dir}/postfix/spool"
    subprocess.run(["postconf", "-c", str(etc), *(a.format(port=port) for a in edit)], check=True)
    status, _, err = run("check-config", str(config))
    assert status == 78
    assert f"sendgate: {config}: " + problem.format(port=port, spool=spool, stack=stack.dir) in err.splitlines()


def test_check_config_of_the_stack_is_clean(stack):
    assert run("check-config", stack.config) == (0, "", "")


def test_status_with_everything_down(tmp_path):
    config = tmp_path / "sendgate.yaml"
    config.write_text(f"submit_socket: {tmp_path}/none.sock\nmilter_socket: unix:{tmp_path}/none-milter.sock\n"
                      f"postfix_config_directory: {tmp_path}/no-postfix\n")
    status, out, _ = run("status", "--config", str(config))
    assert status == 1
    assert out.splitlines()[:3] == [f"problem: submitd: down: no socket {tmp_path}/none.sock",
                                    "spool: /var/spool/sendgate/deferred: No such file or directory;"
                                    " failed messages go to ~/dead.letter",
                                    f"problem: milter: down: no socket {tmp_path}/none-milter.sock"]
    assert out.splitlines()[3].startswith(f"problem: postfix: cannot read the configuration in {tmp_path}/no-postfix")


SIGNER_FIRST = ("runs the signing milter inet:localhost:8891 before sendgate's (smtpd_milters = {milters}): its "
                "signature does not cover the Date, Message-ID, From and Sender sendgate adds (put sendgate's milter "
                "first; setup-postfix does)")


@pytest.mark.parametrize("where,milters,problem", [
    pytest.param("main", "inet:localhost:8891 unix:{stack}/run/milter/milter.sock", "postfix: main.cf " + SIGNER_FIRST,
                 id="main-cf-signer-first"),
    pytest.param("main", "unix:/run/other.sock, {{ inet:localhost:8891, default_action=accept }}, "
                 "unix:{stack}/run/milter/milter.sock", "postfix: main.cf " + SIGNER_FIRST, id="main-cf-signer-group"),
    pytest.param("service", "inet:localhost:8891,unix:{stack}/run/milter/milter.sock",
                 "postfix: service {port}/inet " + SIGNER_FIRST, id="service-override-signer-first"),
    pytest.param("main", "unix:{stack}/run/milter/milter.sock inet:localhost:8891", None, id="main-cf-ours-first"),
    pytest.param("service", "unix:{stack}/run/milter/milter.sock,inet:localhost:8891", None,
                 id="service-override-ours-first"),
])
def test_check_config_finds_a_signer_before_the_milter(stack, broken_postfix, where, milters, problem):
    """A DKIM signer (signing_milters) before sendgate's milter signs the
    message without the fields the milter adds (tests/test_dkim.py)."""
    etc, config = broken_postfix
    port = stack.facts["inbound"]
    milters = milters.format(stack=stack.dir)
    if where == "main":
        subprocess.run(["postconf", "-c", str(etc), "-e", f"smtpd_milters={milters}"], check=True)
    else:
        subprocess.run(["postconf", "-c", str(etc), "-P", f"{port}/inet/smtpd_milters={milters}"], check=True)
    status, _, err = run("check-config", str(config))
    if problem is None:
        assert (status, err) == (0, "")
    else:
        assert (status, err) == (78, f"sendgate: {config}: " + problem.format(port=port, milters=milters) + "\n")
