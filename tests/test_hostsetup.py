"""The install guide's Postfix and file steps, on a scratch root: done,
checked by check-config, and undone to exactly what was there."""

from __future__ import annotations

import grp
import os
import pathlib
import pwd
import shutil
import socket
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
    # Debian's names: myorigin is the file /etc/mailname (under the root).
    (etc / "main.cf").write_text(f"compatibility_level = 3.6\nqueue_directory = {tmp_path}/var/spool/postfix\n"
                                 "smtpd_milters = inet:127.0.0.1:8891\nmyhostname = mx1.host.test\n"
                                 "myorigin = /etc/mailname\n")
    (tmp_path / "etc/mailname").write_text("host.test\n")
    public = tmp_path / "var/spool/postfix/public"
    public.mkdir(parents=True)
    public.chmod(0o710)
    os.chown(public, 0, grp.getgrnam("postdrop").gr_gid)
    return tmp_path


def setup(root, *extra, domain=("--domain", "example.org")):
    return subprocess.run([program("sendgate"), "setup-postfix", "--root", str(root), *domain, *extra],
                          capture_output=True, text=True)


def settings(path):
    import yaml
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("domain,myorigin", [
    pytest.param((), "host.test", id="from-mailname"),
    pytest.param(("--domain", "example.org"), "example.org", id="domain-overrides"),
])
def test_written_configuration_has_the_hosts_names_and_no_grants(host, domain, myorigin):
    result = setup(host, domain=domain)
    assert result.returncode == 0, result.stderr
    values = settings(host / "etc/sendgate/sendgate.yaml")
    assert (values["myhostname"], values["myorigin"]) == ("mx1.host.test", myorigin)
    assert values["sender_login_maps"] == {}
    assert "alice" not in str(values) and "www-data" not in str(values)
    # The rest is the example, as documented there.
    example = settings(pathlib.Path(__file__).resolve().parent.parent / "config/sendgate.yaml")
    assert example["sender_login_maps"]  # the example still shows how grants look
    assert {k: v for k, v in values.items() if k not in ("myhostname", "myorigin", "sender_login_maps")} == \
        {k: v for k, v in example.items() if k not in ("myhostname", "myorigin", "sender_login_maps")}


def test_myorigin_as_postfix_expands_it(host):
    """Postfix's default myorigin is $myhostname: the value, not the text."""
    (host / "etc/postfix/main.cf").write_text(
        (host / "etc/postfix/main.cf").read_text().replace("myorigin = /etc/mailname\n", ""))
    assert setup(host, domain=()).returncode == 0
    values = settings(host / "etc/sendgate/sendgate.yaml")
    assert (values["myhostname"], values["myorigin"]) == ("mx1.host.test", "mx1.host.test")


def test_missing_mailname_is_reported(host):
    (host / "etc/mailname").unlink()
    result = setup(host, domain=())
    assert (result.returncode, result.stderr) == (
        1, "sendgate: setup-postfix: myorigin = /etc/mailname: No such file or directory\n")
    assert not (host / "etc/sendgate/sendgate.yaml").exists()


def test_setup_check_and_undo(host):
    before_main, before_master = postconf(host, "-n"), postconf(host, "-M")
    for _ in range(2):  # twice: the second run changes nothing more
        result = setup(host)
        assert result.returncode == 0, result.stderr
    assert postconf(host, "-h", "smtpd_milters", "milter_default_action", "authorized_submit_users").splitlines() == [
        "unix:sendgate/milter.sock inet:127.0.0.1:8891", "tempfail", "root"]
    # The milter's socket directory, where Debian's chrooted smtpd finds it
    # (as unix:sendgate/milter.sock, relative to queue_directory).
    st = os.stat(host / "var/spool/postfix/sendgate")
    assert (oct(st.st_mode), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name) == (
        oct(0o42750), "sendgate", "postfix")
    assert postconf(host, "-M", "sendgate/unix").split() == ["sendgate", "unix", "n", "-", "n", "-", "50", "smtpd",
        "-o", "smtpd_authorized_xclient_hosts=127.0.0.1", "-o", "milter_macro_daemon_name=sendgate-local",
        "-o", "local_header_rewrite_clients=", "-o", "syslog_name=postfix/sendgate"]
    unit = (host / "etc/systemd/system/sendgate-submitd.service").read_text()
    assert f"ExecStart={sys.prefix}/bin/sendgate-submitd --config /etc/sendgate/sendgate.yaml" in unit
    assert "d /var/spool/sendgate/deferred 3777 sendgate sendgate -" in \
        (host / "etc/tmpfiles.d/sendgate.conf").read_text().splitlines()
    config = host / "etc/sendgate/sendgate.yaml"
    assert "myorigin: example.org" in config.read_text()
    # Point the new configuration at the scratch tree and check both sides.
    written = config.read_text()
    config.write_text(written.replace("/var/spool/postfix", f"{host}/var/spool/postfix")
                      + f"postfix_config_directory: {host}/etc/postfix\n")
    check = subprocess.run([program("sendgate"), "check-config", str(config)], capture_output=True, text=True)
    assert (check.returncode, check.stderr) == (0, "")
    # Debian's master.cf: its port 25 smtpd is chrooted and reaches the socket.
    status = subprocess.run([program("sendgate"), "status", "--config", str(config)], capture_output=True, text=True)
    assert (f"postfix: service smtp/inet (chrooted) reaches the milter at {host}/var/spool/postfix/sendgate/"
            "milter.sock") in status.stdout.splitlines()

    # The service's socket, as Postfix's master made it: a reload would
    # leave the file behind, so the undo removes it.
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(host / "var/spool/postfix/public/sendgate"))
    listener.close()
    config.write_text(written)  # the undo reads the paths as the host sees them
    undone = setup(host, "--undo")
    assert undone.returncode == 0, undone.stderr
    assert f"removed {host}/var/spool/postfix/public/sendgate" in undone.stdout.splitlines()
    assert os.listdir(host / "var/spool/postfix/public") == []
    assert (postconf(host, "-n"), postconf(host, "-M")) == (before_main, before_master)
    assert not (host / "etc/systemd/system/sendgate-submitd.service").exists()
    assert not (host / "etc/tmpfiles.d/sendgate.conf").exists()
    assert sorted(os.listdir(host / "var/spool/postfix")) == ["public"]
    assert config.exists()  # the administrator's configuration stays


def set_milters(host, value):
    main = host / "etc/postfix/main.cf"
    main.write_text(main.read_text().replace("smtpd_milters = inet:127.0.0.1:8891\n", f"smtpd_milters = {value}\n"))


SG = "unix:sendgate/milter.sock"


@pytest.mark.parametrize("before,after", [
    pytest.param("", SG, id="none"),
    pytest.param("unix:/run/clamav/clamav-milter.ctl", f"unix:/run/clamav/clamav-milter.ctl {SG}", id="no-signer-appended"),
    pytest.param("inet:localhost:8891", f"{SG} inet:localhost:8891", id="opendkim-debian-port"),
    pytest.param("unix:opendkim/opendkim.sock", f"{SG} unix:opendkim/opendkim.sock", id="opendkim-chroot-socket"),
    pytest.param("local:/run/opendkim/opendkim.sock", f"{SG} local:/run/opendkim/opendkim.sock",
                 id="opendkim-local-socket"),
    pytest.param("unix:/run/opendkim/opendkim.sock", f"{SG} unix:/run/opendkim/opendkim.sock",
                 id="opendkim-unix-socket"),
    pytest.param("inet:127.0.0.1:8892", f"{SG} inet:127.0.0.1:8892", id="dkimpy-milter"),
    pytest.param("unix:/run/openarc/openarc.sock", f"{SG} unix:/run/openarc/openarc.sock", id="openarc"),
    pytest.param("inet:localhost:11332", f"{SG} inet:localhost:11332", id="rspamd"),
    pytest.param("unix:/run/clamav/clamav-milter.ctl, inet:localhost:8891, inet:localhost:11332, unix:/run/other.sock",
                 f"unix:/run/clamav/clamav-milter.ctl, {SG}, inet:localhost:8891, inet:localhost:11332, "
                 "unix:/run/other.sock", id="before-the-first-signer-others-kept"),
    pytest.param("{ inet:localhost:8891, default_action=accept } unix:/run/other.sock",
                 f"{SG} {{ inet:localhost:8891, default_action=accept }} unix:/run/other.sock", id="signer-in-a-group"),
    pytest.param(f"inet:localhost:8891 {SG}", f"{SG} inet:localhost:8891", id="ours-after-a-signer-moved"),
    pytest.param(f"unix:/run/other.sock {SG} inet:localhost:8891", f"unix:/run/other.sock {SG} inet:localhost:8891",
                 id="ours-already-first-unchanged"),
])
def test_milter_goes_before_signing_milters(host, before, after):
    """sendgate's milter runs before a DKIM/ARC signer (signing_milters), so
    that the signature covers the fields it adds (tests/test_dkim.py shows
    what goes wrong otherwise); undo gives back the list exactly."""
    set_milters(host, before)
    before_main = postconf(host, "-n")
    for _ in range(2):  # twice: the second run changes nothing more
        result = setup(host)
        assert result.returncode == 0, result.stderr
        assert postconf(host, "-h", "smtpd_milters") == after + "\n"
    assert setup(host, "--undo").returncode == 0
    assert postconf(host, "-n") == before_main


def test_signing_milters_from_the_configuration(host):
    """An administrator's own signer, named in signing_milters."""
    set_milters(host, "unix:/run/mysigner.sock inet:localhost:8891")
    (host / "etc/sendgate").mkdir(parents=True)
    (host / "etc/sendgate/sendgate.yaml").write_text('signing_milters: ["unix:/run/mysigner*"]\n')
    assert setup(host).returncode == 0
    assert postconf(host, "-h", "smtpd_milters") == f"{SG} unix:/run/mysigner.sock inet:localhost:8891\n"


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
    assert postconf(host, "-h", "smtpd_milters").split() == ["unix:/run/milters/sendgate.sock", "inet:127.0.0.1:8891"]
    assert postconf(host, "-M", "submitgate/unix").split() == ["submitgate", "unix", "n", "-", "n", "-", "50", "smtpd",
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
    assert result.stderr.startswith("sendgate: setup-postfix: postconf -xh myhostname myorigin: postconf: fatal: open ")


SUBMISSION = ["submission", "inet", "n", "-", "n", "-", "-", "smtpd", "-o", "syslog_name=postfix/submission",
              "-o", "smtpd_tls_security_level=encrypt", "-o", "smtpd_sasl_auth_enable=yes",
              "-o", "smtpd_tls_auth_only=yes", "-o", "smtpd_client_restrictions=permit_sasl_authenticated,reject",
              "-o", "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
              "-o", "milter_macro_daemon_name=sendgate-submission", "-o", "local_header_rewrite_clients="]


def with_certificate(host):
    main = host / "etc/postfix/main.cf"
    main.write_text(main.read_text() + "smtpd_tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem\n"
                                       "smtpd_tls_key_file = /etc/ssl/private/ssl-cert-snakeoil.key\n")


def test_submission_service_added_and_undone_exactly(host):
    with_certificate(host)
    before_main, before_master = postconf(host, "-n"), postconf(host, "-M")
    runs = [setup(host, "--submission") for _ in range(2)]  # twice: the second adds nothing
    assert [(r.returncode, r.stderr) for r in runs] == [(0, ""), (0, "")]
    added = "postfix: added the submission/inet service: STARTTLS, then SASL AUTH (port 587)"
    assert [added in r.stdout.splitlines() for r in runs] == [True, False]
    assert postconf(host, "-M", "submission/inet").split() == SUBMISSION
    # TLS and SASL are the host's: the service names no certificate or SASL server of its own.
    assert postconf(host, "-h", "smtpd_tls_cert_file") == "/etc/ssl/certs/ssl-cert-snakeoil.pem\n"
    undone = setup(host, "--undo")
    assert undone.returncode == 0, undone.stderr
    assert "postfix: removed the submission/inet service" in undone.stdout.splitlines()
    assert (postconf(host, "-n"), postconf(host, "-M")) == (before_main, before_master)
    assert not (host / "etc/sendgate/postfix-submission").exists()


@pytest.mark.parametrize("change,error", [
    pytest.param("no-certificate", "--submission: main.cf names no smtpd_tls_cert_file and smtpd_tls_key_file "
                 "(the certificate the service offers before AUTH)", id="no-certificate"),
    pytest.param("own-submission", "--submission: master.cf has a submission/inet service already; not changing it",
                 id="host-has-a-submission-service"),
])
def test_submission_refused_changes_nothing(host, change, error):
    if change == "own-submission":
        with_certificate(host)
        subprocess.run(["postconf", "-c", f"{host}/etc/postfix", "-M",
                        "submission/inet=submission inet n - y - - smtpd"], check=True)
    before_main, before_master = postconf(host, "-n"), postconf(host, "-M")
    result = setup(host, "--submission")
    assert (result.returncode, result.stderr) == (1, f"sendgate: setup-postfix: {error}\n")
    assert (postconf(host, "-n"), postconf(host, "-M")) == (before_main, before_master)
    assert not (host / "etc/sendgate/sendgate.yaml").exists()
