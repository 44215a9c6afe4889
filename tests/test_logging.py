"""One log line per decision, Postfix style, read back from the daemons.

The milter's lines for every kind of decision, without a stack, are in
tests/test_milter_decisions.py; tests/test_milter_protocol.py reads them
back from the running milter."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile

import pytest

from conftest import DOMAIN, delivered, log_text, need, program, run_as, sendmail, unique_marker


@pytest.fixture(scope="session")
def stack(postfix_stack):
    """Postfix only: this file tests Postfix's own mechanisms or wording."""
    return postfix_stack


SID = r"[0-9A-F]{10}"


def log_after(path: pathlib.Path, offset: int) -> str:
    return path.read_bytes()[offset:].decode(errors="replace")


@pytest.mark.parametrize("args,message,submit_line,milter_line", [
    pytest.param(["-t", "-i"], "To: bob@example.net\nSubject: {m}\n\nx\n",
                 rf"{SID}: uid=\d+ login=sgtest1 from=<sgtest1@example.org> nrcpt=1 size=\d+ rcpthdr: "
                 rf"accepted: 250 2\.0\.0 Ok: \d+ bytes queued as (?P<qid>[0-9A-F]+)",
                 r"{qid}: submission: login=sgtest1 from=<sgtest1@example.org> nrcpt=1 "
                 r"fixups=\+Date,\+Message-ID,\+From: accepted", id="accepted"),
    pytest.param(["-t", "-i", "-f", "root@example.org"], "To: bob@example.net\nSubject: {m}\n\nx\n",
                 rf"{SID}: reject: MAIL from uid=\d+ login=sgtest1: 553 5\.7\.1 <root@example\.org>: Sender address "
                 rf"rejected: not owned by user sgtest1; from=<root@example\.org>", None, id="sender-rejected"),
    pytest.param(["-t", "-i"], "Subject: {m}\n\nx\n",
                 rf"{SID}: uid=\d+ login=sgtest1 from=<sgtest1@example.org> nrcpt=0 size=\d+ rcpthdr: rejected: "
                 rf"554 5\.6\.0 To: no recipients found in the message header", None, id="header-rejected"),
])
def test_decision_lines(stack, request, args, message, submit_line, milter_line):
    submit_log, milter_log = stack.dir / "log/submitd.log", stack.dir / "log/milter.log"
    offsets = submit_log.stat().st_size, milter_log.stat().st_size
    m = unique_marker(request)
    sendmail(stack, "sgtest1", args, message.replace("{m}", m).encode())
    if milter_line:
        delivered(stack, m)
    found = re.search(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d sendgate/submit\[\d+\]: " + submit_line + "$",
                      log_after(submit_log, offsets[0]), re.M)
    assert found, log_after(submit_log, offsets[0])
    if milter_line:
        pattern = milter_line.replace("{qid}", found["qid"])
        wanted = re.compile(rf"sendgate/milter\[\d+\]: {pattern}$", re.M)
        assert wanted.search(log_text(milter_log, wanted, offsets[1]))


def test_limit_line(stack):
    log = stack.dir / "log/submitd.log"
    offset = log.stat().st_size
    result = run_as("nobody", [program("sendgate-sendmail"), "-i", "bob@example.net"], b"x\n", stack.env())
    assert result.returncode == 77
    assert re.search(rf"{SID}: reject: connect from uid=65534 login=nobody: 554 5\.7\.1 Error: user nobody is not "
                     rf"allowed to submit mail \(submit_deny_users\)$", log_after(log, offset), re.M)


def test_syslog_facility_mail(tmp_path):
    """log_destination: syslog sends "<22>sendgate/submit[PID]: ..." (mail.info)."""
    need(os.geteuid() == 0, "starts a daemon that drops privileges")
    directory = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-syslog-", dir="/tmp"))
    directory.chmod(0o755)
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(directory / "log"))
    os.chmod(directory / "log", 0o666)
    sink.settimeout(20)
    config = directory / "sendgate.yaml"
    config.write_text(f"myorigin: {DOMAIN}\nsubmit_socket: {directory}/submit.sock\n"
                      f"submit_upstream: unix:{directory}/no-mta\nsyslog_socket: {directory}/log\n")
    proc = subprocess.Popen([program("python"), "-m", "sendgate.submit_socket.main", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines = [sink.recv(4096) for _ in range(2)]
    finally:
        proc.terminate()
        proc.wait(10)
        sink.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert re.fullmatch(rb"<22>sendgate/submit\[%d\]: running as sendgate \(uid=\d+ gid=\d+ groups=[\w,]+\)\x00"
                        % proc.pid, lines[0]), lines[0]
    assert lines[1].startswith(b"<22>sendgate/submit[%d]: listening on %s/submit.sock" % (proc.pid, bytes(directory)))
