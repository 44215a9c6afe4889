"""The Postfix side sendgate writes (sendgate/postfix.py): the service
entries in both of their forms, and the shipped examples in config/postfix/
checked against them and against the schema's defaults."""

from __future__ import annotations

import pathlib

import pytest

from sendgate import config
from sendgate.postfix import Service, greeting, sendgate_service, service_name, submission_service

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
    want = [sendgate_service(service_name(DEFAULTS["submit_upstream"]), DEFAULTS["milter_local_daemon_name"]),
            submission_service("submission")]
    assert shipped == {service.key: service.master_cf() for service in want}, \
        "config/postfix/master.cf differs from sendgate/postfix.py"


def test_shipped_examples_name_what_the_schema_does():
    example = config.load(str(CHECKOUT / "config/sendgate.yaml"))
    main_cf = dict(line.split(" = ", 1) for line in (CHECKOUT / "config/postfix/main.cf").read_text().splitlines()
                   if " = " in line and not line.startswith("#"))
    assert (example.submit_upstream, example.milter_socket) == (DEFAULTS["submit_upstream"], DEFAULTS["milter_socket"])
    assert main_cf["smtpd_milters"] == DEFAULTS["milter_socket"]


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
