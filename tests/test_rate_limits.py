"""Rate limits per user, over every way in, in one milter or several.

The limits stack is a short-lived stack of its own with small limits
(3 messages, 5 recipients per window).  Its milter keeps the counters in
process; mail from the submit socket and from SMTP AUTH is counted together
because both pass the one milter.  The Redis test starts a real
redis-server on a unix socket and two milter processes that share it, as
two MTA hosts would, and drives both with the MTA side of the protocol.
The window is long, so that no test run straddles two windows.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import log_text, need, need_stack_prerequisites, program, sendmail, start_stack, stop_stack, submit_smtp
from miltermta import MTA

WINDOW = 100_000_000
TOO_MANY_MESSAGES = ("451 4.7.1 Error: too many messages from user {user}: at most 3 per "
                     f"{WINDOW} seconds, try again later")
TOO_MANY_RECIPIENTS = ("451 4.7.1 Error: too many recipients from user {user}: at most 5 per "
                       f"{WINDOW} seconds, try again later")


@pytest.fixture(scope="module")
def limited():
    need_stack_prerequisites()
    started = start_stack("sendgate-limits-", "rate_message_limit=3", "rate_recipient_limit=5",
                          f"rate_window={WINDOW}")
    yield started
    stop_stack(started.dir)


def send(stack, path, user, recipients):
    if path == "submission":
        return submit_smtp(stack, user, f"{user}@example.org", recipients, "Subject: counted\n\nx\n")
    result = sendmail(stack, user, ["-i", *recipients], b"Subject: counted\n\nx\n")
    if result.returncode == 0:
        return "250 queued"
    assert result.returncode == 75, result.stderr
    return result.stderr.decode().split(" refused: ", 1)[1].rsplit("; message saved", 1)[0]


def test_message_limit_counts_both_paths(limited):
    sequence = [("socket", "250 queued"), ("submission", "250 queued"), ("socket", "250 queued"),
                ("submission", TOO_MANY_MESSAGES), ("socket", TOO_MANY_MESSAGES)]
    got = [(path, send(limited, path, "sgtest2", ["bob@example.net"])) for path, _ in sequence]
    assert got == [(path, want.format(user="sgtest2")) for path, want in sequence]
    line = ": defer: login=sgtest2 from=<sgtest2@example.org> nrcpt=1: " + TOO_MANY_MESSAGES.format(user="sgtest2")
    twice = re.compile(re.escape(line) + "(.|\n)*" + re.escape(line))
    assert log_text(limited.milter_log, twice).count(line) == 2


def test_recipient_limit_counts_both_paths_and_refusals_are_not_counted(limited):
    three = ["a@example.net", "b@example.net", "c@example.net"]
    sequence = [("submission", three, "250 queued"),
                ("socket", three, TOO_MANY_RECIPIENTS),                          # 6 > 5: refused, not counted
                ("socket", ["a@example.net", "b@example.net"], "250 queued"),    # 5
                ("submission", ["a@example.net"], TOO_MANY_RECIPIENTS)]
    got = [send(limited, path, "sgtest1", rcpts) for path, rcpts, _ in sequence]
    assert got == [want.format(user="sgtest1") for _, _, want in sequence]


def test_relayed_mail_is_not_limited(limited):
    import smtplib
    with smtplib.SMTP(*limited.inbound, timeout=10) as client:
        for n in range(5):
            assert client.sendmail("sgtest2@example.org", ["bob@example.org"], f"Subject: relay {n}\n\nx\n") == {}


# --- two milters, one Redis ---------------------------------------------------

SUBMISSION = {"{auth_authen}": "sgtest1", "{auth_type}": "PLAIN", "{daemon_name}": "sendgate-submission"}
COMPLETE = [("Date", "Mon, 30 Nov 2026 10:00:00 +0000"), ("Message-ID", "<a@b>"), ("From", "sgtest1@example.org")]


def wait_for(path: pathlib.Path, processes, what: str) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        for proc in processes:
            assert proc.poll() is None, f"{what}: {proc.args} exited {proc.returncode}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def shared_redis():
    """A private redis-server on a unix socket, as user redis with group
    sendgate and unixsocketperm 770 (docs/threat-model.md: only the sendgate
    user reaches the counters), and two sendgate-milter processes (a and b,
    running as sendgate) counting in it."""
    need_stack_prerequisites()
    need(shutil.which("redis-server") is not None, "redis-server is not installed (Debian package redis-server)")
    directory = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-redis-", dir="/tmp"))
    directory.chmod(0o755)
    shutil.chown(directory, "redis", "redis")
    redis_socket = directory / "redis.sock"
    logs = []
    redis_log = open(directory / "redis.log", "wb")
    logs.append(redis_log)
    redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(redis_socket),
                              "--unixsocketperm", "770", "--dir", str(directory), "--save", "", "--appendonly", "no"],
                             user="redis", group="sendgate", extra_groups=[], stdout=redis_log, stderr=redis_log)
    milters = {}
    try:
        wait_for(redis_socket, [redis], "redis-server")
        sockets = directory / "milter"  # only Postfix's group may enter (docs/threat-model.md)
        sockets.mkdir()
        shutil.chown(sockets, "root", "postfix")
        sockets.chmod(0o2750)
        for name in ("a", "b"):
            config = directory / f"{name}.yaml"
            config.write_text(f"myhostname: mail.example.org\nmyorigin: example.org\n"
                              f"milter_socket: unix:{sockets}/{name}.sock\n"
                              f"rate_message_limit: 3\nrate_recipient_limit: 0\nrate_window: {WINDOW}\n"
                              f"rate_store: redis\nrate_redis_url: unix://{redis_socket}\nlog_destination: stderr\n")
            log = open(directory / f"{name}.log", "wb")
            logs.append(log)
            milters[name] = subprocess.Popen([program("python"), "-m", "sendgate.milter.main", "--config", str(config)],
                                             stdout=log, stderr=log)
        for name in milters:
            wait_for(sockets / f"{name}.sock", [redis, *milters.values()], f"milter {name}")
        yield directory, redis, milters
    finally:
        # libmilter notices SIGTERM within a few seconds: stop all, then wait.
        running = [proc for proc in (*milters.values(), redis) if proc.poll() is None]
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.wait(15)
        for log in logs:
            log.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_other_users_cannot_write_the_counters(shared_redis):
    """sgtest1 tries to block sgtest2 by writing its counter: the socket
    refuses the connection."""
    directory, _, _ = shared_redis
    need(shutil.which("redis-cli") is not None, "redis-cli is not installed (Debian package redis-tools)")
    attempt = subprocess.run(["redis-cli", "-s", str(directory / "redis.sock"), "HSET",
                              "sendgate:rate:sgtest2:0", "m", "999999"],
                             user="sgtest1", group="sgtest1", extra_groups=[], capture_output=True, text=True, timeout=30)
    assert (attempt.returncode, attempt.stdout + attempt.stderr) == (
        1, f"Could not connect to Redis at {directory}/redis.sock: Permission denied\n")


def test_two_milters_share_one_redis(shared_redis):
    directory, redis, _ = shared_redis
    with MTA(str(directory / "milter/a.sock")) as a, MTA(str(directory / "milter/b.sock")) as b:
        results = [a.message("sgtest1@example.org", ["x@example.net"], COMPLETE, SUBMISSION, queue_id="A1"),
                   b.message("sgtest1@example.org", ["x@example.net"], COMPLETE, SUBMISSION, queue_id="B1"),
                   a.message("sgtest1@example.org", ["x@example.net"], COMPLETE, SUBMISSION, queue_id="A2"),
                   b.message("sgtest1@example.org", ["x@example.net"], COMPLETE, SUBMISSION, queue_id="B2"),
                   a.message("sgtest1@example.org", ["x@example.net"], COMPLETE, SUBMISSION, queue_id="A3")]
        refused = [("REPLYCODE", TOO_MANY_MESSAGES.format(user="sgtest1"))]
        assert results == [[("CONTINUE",)]] * 3 + [refused] * 2

        import redis as redis_client
        counters = redis_client.Redis(unix_socket_path=str(directory / "redis.sock"))
        (key,) = counters.keys("sendgate:rate:sgtest1:*")
        assert counters.hgetall(key) == {b"m": b"3", b"r": b"3"}

        # Redis gone: no counting, no accepting.
        redis.terminate()
        redis.wait(10)
        assert a.message("sgtest1@example.org", ["x@example.net"], COMPLETE, SUBMISSION, queue_id="A4") == [
            ("REPLYCODE", "451 4.3.0 Error: the mail policy could not be applied, try again later")]
    # The milter writes its lines from a thread of its own: wait for the last.
    log = log_text(directory / "a.log", "A4: error in end-of-message")
    assert "A3: defer: login=sgtest1 from=<sgtest1@example.org> nrcpt=1: 451 4.7.1" in log
    assert "A4: error in end-of-message: StoreError: redis: " in log


@pytest.mark.parametrize("owner,ok", [
    pytest.param("sendgate", True, id="the-milters-own-file"),
    pytest.param("root", False, id="a-file-the-milter-cannot-read"),
])
def test_password_from_a_file_only_the_milter_reads(owner, ok):
    """A store guarded by requirepass (here on a socket every user may
    reach): the milter, as its service user, reads the password from
    rate_redis_password_file; a file it cannot read stops it at start."""
    need_stack_prerequisites()
    need(shutil.which("redis-server") is not None, "redis-server is not installed (Debian package redis-server)")
    directory = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-redis-auth-", dir="/tmp"))
    directory.chmod(0o755)
    shutil.chown(directory, "redis", "redis")
    sockets = directory / "milter"
    sockets.mkdir()
    shutil.chown(sockets, "root", "postfix")
    sockets.chmod(0o2750)
    secret = directory / "redis-password"
    secret.write_text("s3cret-for-the-test\n")
    shutil.chown(secret, owner, owner)
    secret.chmod(0o600)
    redis_socket = directory / "redis.sock"
    config = directory / "milter.yaml"
    config.write_text(f"myhostname: mail.example.org\nmyorigin: example.org\nmilter_socket: unix:{sockets}/a.sock\n"
                      f"rate_message_limit: 3\nrate_recipient_limit: 0\nrate_window: {WINDOW}\nrate_store: redis\n"
                      f"rate_redis_url: unix://{redis_socket}\nrate_redis_password_file: {secret}\n"
                      "log_destination: stderr\n")
    redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(redis_socket), "--unixsocketperm",
                              "777", "--requirepass", "s3cret-for-the-test", "--dir", str(directory), "--save", "",
                              "--appendonly", "no"], user="redis", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    milter = None
    try:
        wait_for(redis_socket, [redis], "redis-server")
        milter = subprocess.Popen([program("python"), "-m", "sendgate.milter.main", "--config", str(config)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if not ok:
            out, _ = milter.communicate(timeout=60)
            assert milter.returncode == 78, out
            assert f"rate_redis_password_file {secret}: Permission denied" in out
            return
        wait_for(sockets / "a.sock", [redis, milter], "milter")
        with MTA(str(sockets / "a.sock")) as mta:
            assert mta.message("sgtest1@example.org", ["x@example.net"], COMPLETE, SUBMISSION,
                               queue_id="P1") == [("CONTINUE",)]
        import redis as redis_client
        counters = redis_client.Redis(unix_socket_path=str(redis_socket), password="s3cret-for-the-test")
        (key,) = counters.keys("sendgate:rate:sgtest1:*")
        assert counters.hgetall(key) == {b"m": b"1", b"r": b"1"}
        with pytest.raises(redis_client.AuthenticationError):
            redis_client.Redis(unix_socket_path=str(redis_socket)).keys("*")
    finally:
        for proc in (milter, redis):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(15)
        shutil.rmtree(directory, ignore_errors=True)
