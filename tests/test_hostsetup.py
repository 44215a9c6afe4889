"""The install guide's Postfix and file steps, on a scratch root: done,
checked by check-config, and undone to exactly what was there."""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys

import pytest

from conftest import need, program

pytestmark = pytest.mark.mta  # every test here runs Postfix's postconf


def postconf(root, *args):
    return subprocess.run(["postconf", "-c", f"{root}/etc/postfix", *args], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def host(tmp_path):
    need(shutil.which("postconf") is not None and os.path.exists("/etc/postfix/master.cf"), "Postfix is not installed")
    need(os.geteuid() == 0, "public/ belongs to group postdrop, as on a real host")
    etc = tmp_path / "etc/postfix"
    etc.mkdir(parents=True)
    shutil.copy("/etc/postfix/master.cf", etc / "master.cf")
    (etc / "main.cf").write_text(f"compatibility_level = 3.6\nqueue_directory = {tmp_path}/var/spool/postfix\n"
                                 "smtpd_milters = inet:127.0.0.1:8891\n")
    public = tmp_path / "var/spool/postfix/public"
    public.mkdir(parents=True)
    public.chmod(0o710)
    os.chown(public, 0, grp.getgrnam("postdrop").gr_gid)
    return tmp_path


def setup(root, *extra):
    return subprocess.run([program("sendgate"), "setup-postfix", "--root", str(root), "--domain", "example.org",
                           *extra], capture_output=True, text=True)


def test_setup_check_and_undo(host):
    before_main, before_master = postconf(host, "-n"), postconf(host, "-M")
    for _ in range(2):  # twice: the second run changes nothing more
        result = setup(host)
        assert result.returncode == 0, result.stderr
    assert postconf(host, "-h", "smtpd_milters", "milter_default_action", "authorized_submit_users").splitlines() == [
        "inet:127.0.0.1:8891 unix:/run/sendgate/milter.sock", "tempfail", "root"]
    assert postconf(host, "-M", "sendgate/unix").split() == ["sendgate", "unix", "n", "-", "n", "-", "-", "smtpd",
        "-o", "smtpd_authorized_xclient_hosts=127.0.0.1", "-o", "milter_macro_daemon_name=sendgate-local",
        "-o", "local_header_rewrite_clients=", "-o", "syslog_name=postfix/sendgate"]
    unit = (host / "etc/systemd/system/sendgate-submitd.service").read_text()
    assert f"ExecStart={sys.prefix}/bin/sendgate-submitd --config /etc/sendgate/sendgate.yaml" in unit
    assert "d /var/spool/sendgate/deferred 3777 sendgate sendgate -" in \
        (host / "etc/tmpfiles.d/sendgate.conf").read_text().splitlines()
    config = host / "etc/sendgate/sendgate.yaml"
    assert "myorigin: example.org" in config.read_text()
    # Point the new configuration at the scratch tree and check both sides.
    config.write_text(config.read_text().replace("/var/spool/postfix", f"{host}/var/spool/postfix")
                      + f"postfix_config_directory: {host}/etc/postfix\n")
    check = subprocess.run([program("sendgate"), "check-config", str(config)], capture_output=True, text=True)
    assert (check.returncode, check.stderr) == (0, "")

    undone = setup(host, "--undo")
    assert undone.returncode == 0, undone.stderr
    assert (postconf(host, "-n"), postconf(host, "-M")) == (before_main, before_master)
    assert not (host / "etc/systemd/system/sendgate-submitd.service").exists()
    assert not (host / "etc/tmpfiles.d/sendgate.conf").exists()
    assert config.exists()  # the administrator's configuration stays


def test_undo_restores_a_previous_authorized_submit_users(host):
    """A value the administrator had set comes back exactly; meanwhile
    check-config names the wider setting."""
    subprocess.run(["postconf", "-c", f"{host}/etc/postfix", "-e", "authorized_submit_users=root, backup"], check=True)
    before_main = postconf(host, "-n")
    assert setup(host).returncode == 0
    assert postconf(host, "-h", "authorized_submit_users") == "root\n"
    config = host / "etc/sendgate/sendgate.yaml"
    config.write_text(config.read_text().replace("/var/spool/postfix", f"{host}/var/spool/postfix")
                      + f"postfix_config_directory: {host}/etc/postfix\n")
    subprocess.run(["postconf", "-c", f"{host}/etc/postfix", "-e", "authorized_submit_users=static:anyone"], check=True)
    check = subprocess.run([program("sendgate"), "check-config", str(config)], capture_output=True, text=True)
    assert (check.returncode, check.stderr) == (78, (
        f"sendgate: {config}: postfix: authorized_submit_users = static:anyone: users other than root can submit "
        "with Postfix's own sendmail and postdrop, around sendgate's policy (set authorized_submit_users = root)\n"))
    assert setup(host, "--undo").returncode == 0
    assert postconf(host, "-n") == before_main


def test_setup_leaves_the_spool_entry_to_the_package(host):
    """With the Debian package's /usr/lib/tmpfiles.d entry in place, setup
    writes no /etc copy (which would shadow it and outlive the package)."""
    packaged = host / "usr/lib/tmpfiles.d/sendgate.conf"
    packaged.parent.mkdir(parents=True)
    packaged.write_text("d /var/spool/sendgate/deferred 3777 sendgate sendgate -\n")
    result = setup(host)
    assert result.returncode == 0, result.stderr
    assert not (host / "etc/tmpfiles.d").exists()
    assert "tmpfiles" not in result.stdout
    assert setup(host, "--undo").returncode == 0
    assert packaged.exists()


def test_setup_takes_names_from_the_configuration(host):
    """An administrator's sendgate.yaml is kept, and Postfix gets the
    service, daemon name and milter socket that file names."""
    (host / "etc/sendgate").mkdir(parents=True)
    (host / "etc/sendgate/sendgate.yaml").write_text(
        "submit_upstream: unix:/var/spool/postfix/public/submitgate\n"
        "milter_socket: unix:/run/milters/sendgate.sock\nmilter_local_daemon_name: local-submit\n")
    before_master = postconf(host, "-M")
    result = setup(host)
    assert result.returncode == 0, result.stderr
    assert "postfix: added the submitgate service and the milter (run `postfix reload`)" in result.stdout.splitlines()
    assert postconf(host, "-h", "smtpd_milters").split() == ["inet:127.0.0.1:8891", "unix:/run/milters/sendgate.sock"]
    assert postconf(host, "-M", "submitgate/unix").split() == ["submitgate", "unix", "n", "-", "n", "-", "-", "smtpd",
        "-o", "smtpd_authorized_xclient_hosts=127.0.0.1", "-o", "milter_macro_daemon_name=local-submit",
        "-o", "local_header_rewrite_clients=", "-o", "syslog_name=postfix/submitgate"]
    assert postconf(host, "-M", "sendgate/unix") == ""
    assert setup(host, "--undo").returncode == 0
    assert postconf(host, "-M") == before_master


def test_setup_with_a_broken_configuration_changes_nothing(host):
    (host / "etc/sendgate").mkdir(parents=True)
    (host / "etc/sendgate/sendgate.yaml").write_text("milter_sockt: unix:/x\n")
    before_main, before_master = postconf(host, "-n"), postconf(host, "-M")
    result = setup(host)
    assert (result.returncode, result.stderr) == (
        78, f"sendgate: {host}/etc/sendgate/sendgate.yaml:1: milter_sockt: unknown key\n")
    assert (postconf(host, "-n"), postconf(host, "-M")) == (before_main, before_master)


def test_setup_without_postfix_configuration_fails_clearly(tmp_path):
    need(shutil.which("postconf") is not None, "Postfix is not installed")
    result = setup(tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("sendgate: setup-postfix: postconf -n: ")
