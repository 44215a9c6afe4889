"""No user can stop another (issue 19, item 3): what one uid can hold of
the submit daemon and of the MTA behind it is a small share, and the reply
when it asks for more is temporary and exact (docs/threat-model.md,
"Denial of service").

The attacks run as sgtest1 on a private Postfix stack, through HOLDER (a
client run as that user, so that SO_PEERCRED gives its real uid), which
opens sessions, takes them to where it is told and holds them there while
the test looks at another user's mail, the daemon's memory and its log.
"""

from __future__ import annotations

import json
import os
import pathlib
import pwd
import subprocess

import pytest

from conftest import (clear_dead_letter, delivered, hup_submitd, log_text, program, run_as, sendmail, start_stack,
                      stop_stack, unique_marker)
from sendgate.policy.admission import AdmissionRules, Peer, data_refusal, transaction_refusal
from test_hostsetup import host, postconf, setup  # noqa: F401  (host is a fixture)

ATTACKER, VICTIM = "sgtest1", "sgtest2"
UID = pwd.getpwnam(ATTACKER).pw_uid
HOME = pathlib.Path(pwd.getpwnam(ATTACKER).pw_dir)
HOST = "mail.example.org"
PER_UID, CAP = 10, 40        # submit_transactions_per_uid, submit_upstream_session_limit of the stack
SESSIONS_PER_UID = 250       # so that sessions, not refused at connect, reach MAIL
MB = 1 << 20
BIG = 9_500_000              # bytes of unfinished DATA per session in the memory test

TOO_MANY_UID = (f"451 4.3.2 Error: too many transactions in progress for uid {UID}, try again later")
BUDGET_UID = (f"452 4.3.1 Error: insufficient system storage: too much unfinished message data for uid {UID}, "
              "try again later")
IDLE_421 = f"421 4.4.2 {HOST} Error: timeout exceeded"
SUBMIT_UP = f"MAIL FROM:<{ATTACKER}@example.org>"
TO_DATA = ["EHLO attacker", SUBMIT_UP, "RCPT TO:<bob@example.net>", "DATA"]


# --- the pure decisions -----------------------------------------------------------

ALICE = Peer(1000, "alice", frozenset())
RULES = AdmissionRules(transactions_per_uid=2, upstream_session_limit=5, data_per_uid=100, data_limit=300)


@pytest.mark.parametrize("of_uid,total,want", [
    pytest.param(1, 4, None, id="within-both"),
    pytest.param(2, 2, ("451 4.3.2 Error: too many transactions in progress for uid 1000, try again later",
                        "submit_transactions_per_uid"), id="uid-at-its-share"),
    pytest.param(0, 5, ("451 4.3.2 Error: too many transactions in progress, try again later",
                        "submit_upstream_session_limit"), id="all-mta-sessions-taken"),
])
def test_transaction_refusal(of_uid, total, want):
    got = transaction_refusal(ALICE, RULES, of_uid, total)
    assert (None if got is None else (str(got[0]), got[1])) == want


@pytest.mark.parametrize("of_uid,total,want", [
    pytest.param(100, 300, None, id="at-both-budgets"),
    pytest.param(101, 150, ("452 4.3.1 Error: insufficient system storage: too much unfinished message data for "
                            "uid 1000, try again later", "submit_data_buffer_per_uid"), id="uid-over-its-budget"),
    pytest.param(50, 301, ("452 4.3.1 Error: insufficient system storage: too much unfinished message data, "
                           "try again later", "submit_data_buffer_limit"), id="over-the-global-budget"),
])
def test_data_refusal(of_uid, total, want):
    got = data_refusal(ALICE, RULES, of_uid, total)
    assert (None if got is None else (str(got[0]), got[1])) == want


# --- the attacks, on a real stack -------------------------------------------------

# Run as the attacker: argv[1] the socket, argv[2] the sessions as JSON, a
# list of {"count", "commands", "data" (bytes of unfinished DATA to send
# after them), "wait" (read one more reply: a timeout's)}.  Prints one JSON
# list of every session's replies, then holds the sessions until a line on
# stdin: "finish" ends the DATA of those that sent some (and prints their
# replies), then the sessions close at end of input.
HOLDER = r"""
import json, socket, sys

def reply(s):
    text = b""
    while True:
        while not text.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                return "<closed>"
            text += chunk
        last = text.rstrip(b"\r\n").split(b"\n")[-1]
        if last[3:4] != b"-":
            return " | ".join(l.rstrip(b"\r").decode() for l in text.rstrip(b"\r\n").split(b"\n"))

path, groups = sys.argv[1], json.loads(sys.argv[2])
sessions, out = [], []
line = b"x" * 998 + b"\r\n"
for group in groups:
    for _ in range(group["count"]):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(60)
        s.connect(path)
        got = [reply(s)]
        for command in group.get("commands", []):
            s.sendall(command.encode() + b"\r\n")
            got.append(reply(s))
        if group.get("data") and got[-1].startswith("354"):
            s.sendall(b"Subject: big\r\n\r\n")
            for _ in range(group["data"] // len(line)):
                s.sendall(line)
            sessions.append((s, True))
        else:
            sessions.append((s, False))
        if group.get("wait"):
            got.append(reply(s))
            got.append(reply(s))
        out.append(got)
print(json.dumps(out), flush=True)
if sys.stdin.readline().strip() == "finish":
    print(json.dumps([(s.sendall(b".\r\n"), reply(s))[1] for s, data in sessions if data]), flush=True)
sys.stdin.read()
"""


class Holder:
    """HOLDER running as user, its sessions held until close()."""

    def __init__(self, stack, groups, user: str = ATTACKER):
        entry = pwd.getpwnam(user)
        self.proc = subprocess.Popen(
            ["runuser", "-u", user, "--", "env", "-i", f"HOME={entry.pw_dir}", "PATH=/usr/bin:/bin",
             program("python"), "-c", HOLDER, stack.socket, json.dumps(groups)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        self.replies = self.line()

    def line(self):
        text = self.proc.stdout.readline()
        assert text, f"the holder failed: {self.proc.stderr.read() if self.proc.poll() is not None else '?'}"
        return json.loads(text)

    def finish(self):
        self.proc.stdin.write("finish\n")
        self.proc.stdin.flush()
        return self.line()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def stack():
    started = start_stack("sendgate-dos-", f"submit_sessions_per_uid={SESSIONS_PER_UID}",
                          f"submit_transactions_per_uid={PER_UID}", f"submit_upstream_session_limit={CAP}",
                          "submit_idle_timeout=300")
    yield started
    stop_stack(started.dir)


@pytest.fixture
def holders():
    started: list[Holder] = []
    yield lambda stack, groups: started.append(Holder(stack, groups)) or started[-1]
    for holder in started:
        holder.close()


def submitd_log(stack) -> pathlib.Path:
    return stack.dir / "log/submitd.log"


def vm(stack, field: str) -> int:
    """A /proc/PID/status figure of the stack's submit daemon, in bytes."""
    pid = int((stack.dir / "run/submitd.pid").read_text())
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def victim_sends(stack, marker: str) -> None:
    message = f"To: bob@example.net\nSubject: {marker}\n\nstill here\n".encode()
    result = run_as(VICTIM, [program("sendgate-sendmail"), "-t", "-i"], message, stack.env(), timeout=20)
    assert (result.returncode, result.stderr) == (0, b"")
    assert len(delivered(stack, marker)) == 1


def test_idle_and_data_sessions_of_one_user_do_not_stop_another(stack, holders, request):
    """100 sessions that send nothing and 100 that go for DATA, all from
    sgtest1: sgtest2's sendmail still delivers, and status sees the daemon."""
    attack = holders(stack, [{"count": 100}, {"count": 100, "commands": TO_DATA}])
    idle, data = attack.replies[:100], attack.replies[100:]
    assert idle == [[f"220 {HOST} ESMTP sendgate"]] * 100
    parked = [r for r in data if r[-1].startswith("354")]
    refused = [r for r in data if r[2] == TOO_MANY_UID]
    assert (len(parked), len(refused)) == (PER_UID, 100 - PER_UID)
    assert {tuple(r[3:]) for r in refused} == {("503 5.5.1 Error: need MAIL command",) * 2}
    victim_sends(stack, unique_marker(request))
    status = subprocess.run([program("sendgate"), "status", "--dir", str(stack.dir)], capture_output=True,
                            text=True, timeout=20)
    assert any(line.startswith("submitd: up, ") and line.endswith(", the MTA answers")
               for line in status.stdout.splitlines()), status.stdout


def test_idle_client_gets_421_after_the_idle_timeout(stack, holders):
    config = pathlib.Path(stack.config)
    before = config.read_text()
    config.write_text(before.replace("submit_idle_timeout: 300", "submit_idle_timeout: 2"))
    hup_submitd(stack)
    try:
        offset = submitd_log(stack).stat().st_size
        waiting = holders(stack, [{"count": 1, "wait": True}, {"count": 1, "commands": ["EHLO x"], "wait": True}])
    finally:
        config.write_text(before)
        hup_submitd(stack)
    silent, after_ehlo = waiting.replies
    assert silent == [f"220 {HOST} ESMTP sendgate", IDLE_421, "<closed>"]
    assert after_ehlo[0] == f"220 {HOST} ESMTP sendgate" and after_ehlo[1].startswith(f"250-{HOST} | ")
    assert after_ehlo[2:] == [IDLE_421, "<closed>"]
    log = log_text(submitd_log(stack), f"uid={UID} login={ATTACKER}: timeout exceeded (submit_idle_timeout)", offset)
    assert log.count(f"uid={UID} login={ATTACKER}: timeout exceeded (submit_idle_timeout)") == 2


def test_a_user_over_its_share_gets_451_and_sendmail_keeps_the_message(stack, holders, request):
    clear_dead_letter(HOME)
    offset = submitd_log(stack).stat().st_size
    attack = holders(stack, [{"count": PER_UID + 1, "commands": ["EHLO attacker", SUBMIT_UP]}])
    assert [r[-1] for r in attack.replies] == ["250 2.1.0 Ok"] * PER_UID + [TOO_MANY_UID]
    marker = unique_marker(request)
    result = sendmail(stack, ATTACKER, ["-t", "-i"], f"To: bob@example.net\nSubject: {marker}\n\nkeep me\n".encode())
    try:
        assert (result.returncode, result.stderr) == (
            75, f"sendmail: sender refused: {TOO_MANY_UID}; message saved in {HOME}/dead.letter\n".encode())
        assert marker.encode() in (HOME / "dead.letter").read_bytes()
    finally:
        clear_dead_letter(HOME)
    want = f": reject: MAIL from uid={UID} login={ATTACKER}: {TOO_MANY_UID} (submit_transactions_per_uid)"
    assert log_text(submitd_log(stack), want, offset).count(want) == 2
    victim_sends(stack, marker + "-victim")  # the other users' share is untouched


def test_unfinished_data_is_held_within_the_uid_budget(stack, holders, request):
    """Ten sessions of sgtest1 push 9.5 MB each without ending their DATA:
    two fit the budget of 20480000 bytes per uid, the other eight's data is
    dropped as it comes and they get 452 at their end of data; the daemon
    grows by about the budget, not by the 95 MB sent."""
    rss, peak = vm(stack, "VmRSS"), vm(stack, "VmHWM")
    attack = holders(stack, [{"count": PER_UID, "commands": TO_DATA, "data": BIG}])
    assert [r[-1] for r in attack.replies] == ["354 End data with <CR><LF>.<CR><LF>"] * PER_UID
    held = vm(stack, "VmRSS")
    replies = attack.finish()
    grown, peaked = held - rss, vm(stack, "VmHWM") - peak
    print(f"submitd VmRSS {rss / MB:.1f} MiB -> {held / MB:.1f} MiB with {PER_UID} x {BIG} bytes unfinished; "
          f"VmHWM {peak / MB:.1f} MiB -> {vm(stack, 'VmHWM') / MB:.1f} MiB")
    assert [r.split(":")[0] for r in replies[:2]] == ["250 2.0.0 Ok"] * 2
    assert replies[2:] == [BUDGET_UID] * (PER_UID - 2)
    assert grown < 100 * MB and peaked < 100 * MB
    victim_sends(stack, unique_marker(request))


def test_the_stack_gives_the_service_as_many_processes_as_the_daemon_holds(stack):
    etc = str(stack.dir / "postfix/etc")
    fields = subprocess.run(["postconf", "-c", etc, "-M", "sendgate/unix"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert fields[6] == str(CAP)


@pytest.mark.parametrize("configured,want", [
    pytest.param("", "50", id="default"),
    pytest.param("submit_upstream_session_limit: 30\n", "30", id="configured"),
])
def test_setup_postfix_sets_the_process_limit(host, configured, want):  # noqa: F811
    (host / "etc/sendgate").mkdir(parents=True)
    example = (pathlib.Path(__file__).resolve().parent.parent / "config/sendgate.yaml").read_text()
    (host / "etc/sendgate/sendgate.yaml").write_text(example + configured)
    before = postconf(host, "-M")
    assert setup(host).returncode == 0
    assert postconf(host, "-M", "sendgate/unix").split()[6] == want
    undo = subprocess.run([program("sendgate"), "setup-postfix", "--undo", "--root", str(host)], capture_output=True,
                          text=True)
    assert undo.returncode == 0, undo.stderr
    assert postconf(host, "-M") == before


def test_check_config_finds_too_few_processes(stack, tmp_path):
    etc = tmp_path / "etc"
    subprocess.run(["cp", "-a", str(stack.dir / "postfix/etc"), str(etc)], check=True)
    config = tmp_path / "sendgate.yaml"
    config.write_text(pathlib.Path(stack.config).read_text().replace(str(stack.dir / "postfix/etc"), str(etc)))
    subprocess.run(["postconf", "-c", str(etc), "-F", "sendgate/unix/process_limit=5"], check=True)
    result = subprocess.run([program("sendgate"), "check-config", str(config)], capture_output=True, text=True)
    assert result.returncode == 78
    assert (f"sendgate: {config}: postfix: service sendgate/unix runs at most 5 processes (maxproc), fewer than "
            f"submit_upstream_session_limit = {CAP}: the submit daemon's MTA sessions beyond them wait (set its "
            f"maxproc to {CAP}; setup-postfix does)") in result.stderr.splitlines()
