"""sendmail(1) command lines as real callers write them."""

from __future__ import annotations

import pytest

from sendgate import config
from sendgate.sendmail_shim.client import Failure, status_for
from sendgate.sendmail_shim.fullname import with_from
from sendgate.sendmail_shim.main import cut_at_dot
from sendgate.sendmail_shim.modes import DELEGATED
from sendgate.sendmail_shim.options import parse_args, split_recipients


def parsed(argv):
    o = parse_args(argv)
    return {k: v for k, v in vars(o).items() if v not in (None, False, [], "m")}


@pytest.mark.parametrize("argv,want", [
    pytest.param(["sendmail", "-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"],
                 {"full_name": "CronDaemon", "ignore_dots": True, "extract": True, "sender": "root"}, id="cronie"),
    pytest.param(["sendmail", "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "a@x,b@y"],
                 {"full_name": "CronDaemon", "ignore_dots": True, "body": "8BITMIME", "recipients": ["a@x,b@y"]},
                 id="debian-cron"),
    pytest.param(["sendmail", "-t", "-i"], {"extract": True, "ignore_dots": True}, id="php"),
    pytest.param(["sendmail", "-ti"], {"extract": True, "ignore_dots": True}, id="clustered"),
    pytest.param(["sendmail", "-it"], {"extract": True, "ignore_dots": True}, id="clustered-reversed"),
    pytest.param(["sendmail", "-oem", "-oi", "-B", "8BITMIME", "-f", "me@x", "-N", "delay,failure", "-R", "hdrs",
                  "--", "-dash@x", "b@y"],
                 {"ignore_dots": True, "body": "8BITMIME", "sender": "me@x", "notify": "DELAY,FAILURE", "ret": "HDRS",
                  "recipients": ["-dash@x", "b@y"]}, id="mutt"),
    pytest.param(["send-mail", "-i", "user"], {"ignore_dots": True, "recipients": ["user"]}, id="bsd-mail-argv0"),
    pytest.param(["sendmail", "a@x", "-i"], {"ignore_dots": True, "recipients": ["a@x"]}, id="option-after-recipient"),
    pytest.param(["sendmail", "-f", "<>", "-i", "a@x"], {"sender": "", "ignore_dots": True, "recipients": ["a@x"]},
                 id="null-sender"),
    pytest.param(["sendmail", "-f<me@x>", "a@x"], {"sender": "me@x", "recipients": ["a@x"]}, id="bracketed-joined"),
    pytest.param(["sendmail", "-bs"], {"mode": "s"}, id="smtp-mode"),
    pytest.param(["sendmail", "-V", "env1", "-U", "-v", "a@x"], {"envid": "env1", "smtputf8": True, "verbose": True,
                                                                  "recipients": ["a@x"]}, id="envid-utf8-verbose"),
    pytest.param(["sendmail", "-Am", "-C/x", "-G", "-L", "tag", "-O", "a=b", "-X", "/log", "-h", "5", "-n", "-m",
                  "-x", "-c", "-om", "-odb", "-ep", "a@x"], {"recipients": ["a@x"]}, id="ignored-options"),
    pytest.param(["mailq"], {"mode": "p"}, id="mailq-argv0"),
    pytest.param(["newaliases"], {"mode": "i"}, id="newaliases-argv0"),
    pytest.param(["sendmail", "-q"], {"mode": "q"}, id="queue-run"),
    pytest.param(["sendmail", "-q30m"], {"mode": "q"}, id="queue-run-interval"),
    pytest.param(["sendmail", "-bp"], {"mode": "p"}, id="bp"),
    pytest.param(["sendmail", "-bi"], {"mode": "i"}, id="bi"),
    pytest.param(["sendmail", "-I"], {"mode": "i"}, id="I"),
    pytest.param(["sendmail", "-bv", "a@x"], {"mode": "v", "recipients": ["a@x"]}, id="bv"),
    pytest.param(["sendmail", "-oiTrue", "a@x"], {"ignore_dots": True, "recipients": ["a@x"]}, id="oi-true"),
    pytest.param(["sendmail", "-o7", "-oQ/x", "-oA/etc/aliases", "-eq", "-em", "a@x"], {"recipients": ["a@x"]},
                 id="o-with-any-letter"),
    pytest.param(["sendmail", "-F", "Joe", "-V", "id", "-N", "never", "a@x"],
                 {"full_name": "Joe", "envid": "id", "notify": "NEVER", "recipients": ["a@x"]},
                 id="separate-arguments"),
    pytest.param(["sendmail", "-tif", "me@x"], {"extract": True, "ignore_dots": True, "sender": "me@x"},
                 id="cluster-ending-in-argument-option"),
    pytest.param(["sendmail", "-oep", "-oeq", "-oew", "-oee", "-eq", "-odi", "-odq", "-om", "-G", "-n", "-m",
                  "-x", "-c", "-h", "17", "-L", "tag", "-O", "o=v", "-Ac", "-X", "/f", "-B", "7BIT", "a@x"],
                 {"body": "7BIT", "recipients": ["a@x"]}, id="checklist-ignored"),
    pytest.param(["sendmail", "-ti", "oem"], {"extract": True, "ignore_dots": True, "recipients": ["oem"]},
                 id="old-busybox-crond"),
])
def test_parse_args(argv, want):
    assert parsed(argv) == want


@pytest.mark.parametrize("argv,why", [
    pytest.param(["sendmail", "-Z"], "usage: unknown option -Z", id="unknown"),
    pytest.param(["sendmail", "-f"], "usage: option -f needs an argument", id="missing-argument"),
    pytest.param(["sendmail", "-b"], "usage: -b needs a mode letter", id="bare-b"),
    pytest.param(["sendmail", "-bd"], "usage: -bd is not supported", id="daemon-mode"),
    pytest.param(["sendmail", "-R", "all"], "usage: bad -R value 'all': use full or hdrs", id="bad-ret"),
    pytest.param(["sendmail", "-B", "BINARYMIME"], "usage: bad -B value 'BINARYMIME': use 7BIT or 8BITMIME",
                 id="bad-body"),
])
def test_parse_args_refuses(argv, why):
    with pytest.raises(Failure) as err:
        parse_args(argv)
    assert (err.value.status, str(err.value)) == (64, why)


@pytest.mark.parametrize("words,want", [
    pytest.param(["a@x,b@y"], ["a@x", "b@y"], id="comma-list"),
    pytest.param(['"Doe, J" <j@x>, k@y'], ["j@x", "k@y"], id="name-with-comma"),
    pytest.param(["Bob <bob@x>"], ["bob@x"], id="name-addr"),
    pytest.param(["root", " , "], ["root"], id="bare-login"),
])
def test_split_recipients(words, want):
    assert split_recipients(words) == want


@pytest.mark.parametrize("data,want", [
    pytest.param(b"a\n.\nb\n", b"a\n", id="lf"),
    pytest.param(b"a\r\n.\r\nb", b"a\r\n", id="crlf"),
    pytest.param(b".\n", b"", id="first-line"),
    pytest.param(b"a\n..\nb\n", b"a\n..\nb\n", id="double-dot-is-text"),
    pytest.param(b"a\n. \n", b"a\n. \n", id="dot-space-is-text"),
    pytest.param(b"a\n.", b"a\n", id="dot-at-eof"),
])
def test_cut_at_dot(data, want):
    assert cut_at_dot(data) == want


@pytest.mark.parametrize("code,text,want", [
    (421, "4.3.0 down", 75), (451, "4.4.2 lost", 75), (553, "5.7.1 not owned", 77), (550, "5.1.1 no such user", 67),
    (554, "5.6.0 To: bad", 65), (552, "5.3.4 too big", 65), (554, "5.0.0 other", 69), (0, "", 75),
])
def test_status_for(code, text, want):
    assert status_for(code, text) == want


@pytest.mark.parametrize("message,want", [
    pytest.param(b"Subject: s\n\nbody\n", b"From: Joe <u@x>\nSubject: s\n\nbody\n", id="added-on-top"),
    pytest.param(b"FROM: a@b\nSubject: s\n\nbody\n", b"FROM: a@b\nSubject: s\n\nbody\n", id="existing-kept"),
    pytest.param(b"just a body\n", b"From: Joe <u@x>\n\njust a body\n", id="no-header-at-all"),
    pytest.param(b"\nbody\n", b"From: Joe <u@x>\n\nbody\n", id="empty-header"),
])
def test_with_from(message, want):
    assert with_from(message, "Joe", "u@x") == want


def test_delegated_defaults_match_the_schema():
    assert {key: default for key, default, _ in DELEGATED.values()} == {
        key: config.KEYS[key].default for key, _, _ in DELEGATED.values()}


def test_help_is_the_manual(capsys):
    from sendgate.sendmail_shim.main import run
    assert run(["sendmail", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("NAME\n    sendgate-sendmail") and "DIAGNOSTICS" in out and "SAVED MESSAGES" in out
