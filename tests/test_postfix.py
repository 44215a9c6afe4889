"""The Postfix side sendgate writes (sendgate/postfix.py): the service
entries in both of their forms, and the shipped examples in config/postfix/
checked against them and against the schema's defaults."""

from __future__ import annotations

import pathlib

import pytest

from sendgate import config
from sendgate.postfix import (Service, SmtpdService, greeting, milter_entry, milter_path_seen, milter_words,
                              sendgate_service, service_name, smtpd_services, submission_service)

CHECKOUT = pathlib.Path(__file__).resolve().parent.parent
DEFAULTS = config.defaults()


def entries(master_cf: str) -> dict[str, str]:
    """NAME/TYPE -> the entry's lines (service line and its -o lines), comments left out."""
    out: dict[str, str] = {}
    key = None
    for line in master_cf.splitlines(keepends=True):
        if not line.strip() or line.startswith("#"):
            key = None
        elif line[0].isspace():
            out[key] += line
        else:
            name, type_ = line.split()[:2]
            key = f"{name}/{type_}"
            out[key] = line
    return out


def test_shipped_master_cf_holds_the_modules_entries():
    shipped = entries((CHECKOUT / "config/postfix/master.cf").read_text())
    want = [sendgate_service(service_name(DEFAULTS["submit_upstream"]), DEFAULTS["milter_local_daemon_name"],
                             maxproc=DEFAULTS["submit_upstream_session_limit"]),
            submission_service("submission")]
    assert shipped == {service.key: service.master_cf() for service in want}, \
        "config/postfix/master.cf differs from sendgate/postfix.py"


def test_shipped_examples_name_what_the_schema_does():
    example = config.load(str(CHECKOUT / "config/sendgate.yaml"))
    main_cf = dict(line.split(" = ", 1) for line in (CHECKOUT / "config/postfix/main.cf").read_text().splitlines()
                   if " = " in line and not line.startswith("#"))
    assert (example.submit_upstream, example.milter_socket) == (DEFAULTS["submit_upstream"], DEFAULTS["milter_socket"])
    # Named relative to Debian's queue_directory: a chrooted smtpd finds it.
    assert main_cf["smtpd_milters"] == milter_entry(DEFAULTS["milter_socket"], "/var/spool/postfix") == \
        "unix:sendgate/milter.sock"


SERVICE = Service("sendgate", "unix", (("syslog_name", "postfix/sendgate"), ("local_header_rewrite_clients", "")))


@pytest.mark.parametrize("form,want", [
    pytest.param("key", "sendgate/unix", id="key"),
    pytest.param("entry", "sendgate unix n - n - - smtpd", id="postconf-M"),
    pytest.param("postconf_parameters",
                 ["sendgate/unix/syslog_name=postfix/sendgate", "sendgate/unix/local_header_rewrite_clients="],
                 id="postconf-P"),
    pytest.param("master_cf", "sendgate  unix  n       -       n       -       -       smtpd\n"
                 "  -o syslog_name=postfix/sendgate\n  -o local_header_rewrite_clients=\n", id="master.cf"),
])
def test_service_forms(form, want):
    value = getattr(SERVICE, form)
    assert (value() if callable(value) else value) == want


@pytest.mark.parametrize("milters,want", [
    pytest.param(None, ["smtpd_authorized_xclient_hosts=127.0.0.1", "milter_macro_daemon_name=local-x",
                        "local_header_rewrite_clients=", "syslog_name=postfix/bnull"], id="main.cf-milters"),
    pytest.param("", ["smtpd_authorized_xclient_hosts=127.0.0.1", "milter_macro_daemon_name=local-x",
                      "local_header_rewrite_clients=", "smtpd_milters=", "syslog_name=postfix/bnull"], id="no-milter"),
])
def test_sendgate_service(milters, want):
    service = sendgate_service("bnull", "local-x", milters)
    assert [p.split("/", 2)[2] for p in service.postconf_parameters()] == want


@pytest.mark.parametrize("upstream,want", [
    pytest.param("unix:/var/spool/postfix/public/sendgate", "sendgate", id="default"),
    pytest.param("unix:/srv/postfix/public/submitgate", "submitgate", id="other"),
])
def test_service_name(upstream, want):
    assert service_name(upstream) == want


def test_greeting_of_nothing(tmp_path):
    assert greeting(str(tmp_path / "none.sock")) is None


@pytest.mark.parametrize("socket,queue,word", [
    pytest.param("unix:/var/spool/postfix/sendgate/milter.sock", "/var/spool/postfix", "unix:sendgate/milter.sock",
                 id="under-the-queue"),
    pytest.param("unix:/var/spool/postfix/sendgate/milter.sock", "/var/spool/postfix/", "unix:sendgate/milter.sock",
                 id="queue-with-slash"),
    pytest.param("unix:/run/sendgate/milter.sock", "/var/spool/postfix", "unix:/run/sendgate/milter.sock",
                 id="elsewhere-as-configured"),
    pytest.param("unix:/var/spool/postfix-other/m.sock", "/var/spool/postfix", "unix:/var/spool/postfix-other/m.sock",
                 id="prefix-is-not-a-parent"),
])
def test_milter_entry(socket, queue, word):
    assert milter_entry(socket, queue) == word


@pytest.mark.parametrize("value,words", [
    pytest.param("", [], id="empty"),
    pytest.param("inet:127.0.0.1:8891, unix:sendgate/milter.sock", ["inet:127.0.0.1:8891", "unix:sendgate/milter.sock"],
                 id="comma-and-space"),
    pytest.param("{ unix:sendgate/milter.sock, connect_timeout=10s } inet:localhost:8891",
                 ["unix:sendgate/milter.sock", "inet:localhost:8891"], id="braced-group-with-settings"),
])
def test_milter_words(value, words):
    assert milter_words(value) == words


@pytest.mark.parametrize("word,chrooted,path", [
    pytest.param("unix:sendgate/milter.sock", True, "/var/spool/postfix/sendgate/milter.sock", id="relative-chrooted"),
    pytest.param("unix:sendgate/milter.sock", False, "/var/spool/postfix/sendgate/milter.sock", id="relative-plain"),
    pytest.param("unix:/run/sendgate/milter.sock", True, "/var/spool/postfix/run/sendgate/milter.sock",
                 id="absolute-chrooted"),
    pytest.param("unix:/run/sendgate/milter.sock", False, "/run/sendgate/milter.sock", id="absolute-plain"),
])
def test_milter_path_seen(word, chrooted, path):
    assert milter_path_seen(word, "/var/spool/postfix", chrooted) == path


def test_smtpd_services_with_their_milters():
    master = ("smtp      inet  n       -       y       -       -       smtpd\n"
              "pickup    unix  n       -       y       60      1       pickup\n"
              "smtpd     pass  -       -       y       -       -       smtpd\n"
              "sendgate  unix  n       -       n       -       -       smtpd -o syslog_name=postfix/sendgate\n"
              "relay     unix  -       -       y       -       -       smtp\n"
              "10025     inet  n       -       -       -       -       smtpd -o smtpd_milters=\n"
              "inside    unix  -       -       -       -       -       smtpd\n")
    parameters = "sendgate/unix/syslog_name = postfix/sendgate\n10025/inet/smtpd_milters =\n"
    assert smtpd_services(master, parameters, "unix:sendgate/milter.sock") == [
        SmtpdService("smtp/inet", True, True, "unix:sendgate/milter.sock"),
        SmtpdService("smtpd/pass", True, True, "unix:sendgate/milter.sock"),
        SmtpdService("sendgate/unix", False, True, "unix:sendgate/milter.sock"),
        SmtpdService("10025/inet", False, True, ""),
        SmtpdService("inside/unix", False, False, "unix:sendgate/milter.sock"),
    ]
