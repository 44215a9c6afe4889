"""The bench stack: `sendgate stack up` in a scratch directory, plus what the
benchmarks compare against.

On top of the ordinary stack (Postfix with the sendgate milter on its
`sendgate` XCLIENT service, the stack's own submit daemon) it adds:

  * two more XCLIENT smtpd services in master.cf (postconf -M and -P,
    postfix reload), from the same definition (sendgate/postfix.py):
      bnull  the same service with bench/null_milter.py instead of sendgate-milter
      bnone  the same service with no milter at all (-o smtpd_milters=)
    and one plain smtpd service with the stack's sendgate-milter:
      bsg    no XCLIENT, Postfix's default daemon name: where the bench goes
             directly to Postfix with sendgate-milter attached (the milter
             refuses mail without a login on the `sendgate` service)
  * bench/null_milter.py in its sendgate-steps variant (the steps
    sendgate-milter negotiates, doing nothing) on DIR/run/null/null.sock,
    as user sendgate
  * three submit daemons of the bench's own, one per service, each with a
    copy of the stack's sendgate.yaml naming its socket and upstream, with a
    100 MB size limit (for the 50 MB message) and room for 1,000 sessions
    (all the bench's sessions come from root):
      DIR/run/bench/submit-sendgate.sock -> public/sendgate (sendgate milter)
      DIR/run/bench/submit-null.sock     -> public/bnull    (null milter)
      DIR/run/bench/submit-none.sock     -> public/bnone    (no milter)
  * main.cf: message_size_limit 100 MB; virtual_transport = discard (mail is
    queued, then thrown away, so local delivery does not compete with
    submission for the two cores); in_flow_delay = 0 (no flow-control
    pauses: the queue manager keeps up with discard); default_process_limit =
    1000 (room for 500 idle sessions plus the 200-client scale level).

Only unix sockets and the stack's one loopback port are used.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import yaml

from sendgate import config
from sendgate.postfix import sendgate_service

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
VENV_BIN = os.path.dirname(sys.executable)
SIZE_LIMIT = 100 * 1024 * 1024
SESSION_LIMIT = 1000   # every bench session comes from root: 500 idle, 200 at once
# Services a bench submit daemon forwards to: name -> their milter ('' none;
# None: the stack's own `sendgate` service and milter).
SERVICES = {
    "sendgate": None,
    "bnull": "null",
    "bnone": "",
}
# Where smtp-source and the scale clients go directly with sendgate-milter
# attached: `bsg`, a plain smtpd (no XCLIENT, Postfix's default daemon
# name), so the milter takes the mail as relayed from the network; on
# `sendgate` (daemon name sendgate-local) it refuses mail without a login.
DIRECT_SENDGATE = "bsg"


class BenchError(Exception):
    """The bench cannot go on; str() says why."""


@dataclass
class BenchStack:
    root: str
    facts: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def postfix_config(self) -> str:
        return self.facts["postfix_config"]

    @property
    def inbound(self) -> tuple[str, int]:
        host, port = self.facts["inbound"].rsplit(":", 1)
        return host, int(port)

    def direct(self, service: str) -> str:
        """Path of a Postfix smtpd service socket (reachable by root)."""
        return self.path("postfix", "spool", "public", service)

    def submit(self, service: str) -> str:
        """Path of the bench's submit daemon that forwards to service."""
        return self.path("run", "bench", f"submit-{service}.sock")

    def submit_config(self, service: str) -> str:
        return self.path("run", "bench", f"submit-{service}.yaml")

    def launcher(self) -> str:
        """The sendmail command as `sendgate install-shim` installs it (a
        launcher starting Python with -IS), installed in a scratch root."""
        root = self.path("shim-root")
        path = os.path.join(root, "usr", "sbin", "sendmail")
        if not os.path.exists(path):
            for d in ("usr/sbin", "usr/bin"):
                os.makedirs(os.path.join(root, d), exist_ok=True)
            subprocess.run([os.path.join(VENV_BIN, "sendgate"), "install-shim", "--root", root],
                           check=True, capture_output=True, timeout=60)
        return path

    def pid(self, name: str) -> int:
        """PID of a daemon: 'milter' (the stack's), 'null', 'submit-SERVICE'."""
        if name in self.procs:
            return self.procs[name].pid
        with open(self.path("run", f"{name}.pid"), encoding="ascii") as fp:
            return int(fp.read())

    def smtpd_pids(self, service: str) -> list[int]:
        """PIDs of this stack's smtpd processes serving one master.cf service
        (smtpd -n SERVICE, working directory our queue)."""
        queue = self.path("postfix", "spool")
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fp:
                    argv = fp.read().split(b"\0")
                if argv[:3] != [b"smtpd", b"-n", service.encode()]:
                    continue
                if os.readlink(f"/proc/{entry}/cwd") == queue:
                    found.append(int(entry))
            except OSError:
                continue
        return found


def _run(argv: list[str], timeout: float = 120) -> str:
    # cwd /: `python -m` puts the working directory first on sys.path, and a
    # daemon started from a checkout would run that checkout, not the venv.
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def _wait(what: str, ready, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _raise_fd_limit() -> None:
    # 500 idle sessions cost the submit daemon 1,000 descriptors (client and
    # upstream) and the milters 500 each; the daemons inherit this limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def up(keep: str | None = None) -> BenchStack:
    if os.geteuid() != 0:
        raise BenchError("the benchmarks need root: they start a private Postfix stack")
    _raise_fd_limit()
    root = keep or tempfile.mkdtemp(prefix="sendgate-bench-", dir="/tmp")
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    # Every bench message comes from root: no per-user rate limits.
    out = _run([os.path.join(VENV_BIN, "sendgate"), "stack", "up", "--dir", root,
                "--set", "rate_message_limit=0", "--set", "rate_recipient_limit=0"], timeout=180)
    facts = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    stack = BenchStack(root, facts)
    try:
        _configure_postfix(stack)
        _start_daemons(stack)
    except BaseException:
        down(stack)
        raise
    return stack


def _configure_postfix(stack: BenchStack) -> None:
    postconf = ["postconf", "-c", stack.postfix_config]
    _run(postconf + ["-e", f"message_size_limit={SIZE_LIMIT + 1024 * 1024}",
                     "virtual_transport=discard", "in_flow_delay=0", "default_process_limit=1000"])
    daemon_name = config.load(stack.facts["config"]).milter_local_daemon_name
    for name, milter in SERVICES.items():
        if milter is None:
            continue
        milters = f"unix:{stack.path('run', 'null', 'null.sock')}" if milter else ""
        service = sendgate_service(name, daemon_name, milters)
        _run(postconf + ["-M", f"{service.key}={service.entry()}"])
        _run(postconf + ["-P", *service.postconf_parameters()])
    _run(postconf + ["-M", f"{DIRECT_SENDGATE}/unix={DIRECT_SENDGATE} unix n - n - - smtpd "
                     f"-o syslog_name=postfix/{DIRECT_SENDGATE}"])


def _start_daemons(stack: BenchStack) -> None:
    os.makedirs(stack.path("run", "bench"), mode=0o755, exist_ok=True)
    null_dir = stack.path("run", "null")
    os.makedirs(null_dir, mode=0o755, exist_ok=True)
    shutil.chown(null_dir, user="sendgate")
    null_socket = os.path.join(null_dir, "null.sock")
    stack.procs["null"] = _spawn(stack, "null", [os.path.join(BENCH_DIR, "null_milter.py"), f"unix:{null_socket}",
                                                 "sendgate-steps"], user="sendgate")
    _wait("the null milter", lambda: os.path.exists(null_socket))
    _run(["postfix", "-c", stack.postfix_config, "reload"])
    for name in [*SERVICES, DIRECT_SENDGATE]:
        _wait(f"Postfix service {name}", lambda: os.path.exists(stack.direct(name)))
    with open(stack.facts["config"], encoding="utf-8") as fp:
        base = yaml.safe_load(fp)
    for name in SERVICES:
        values = dict(base, submit_socket=stack.submit(name), submit_upstream=f"unix:{stack.direct(name)}",
                      submit_message_size_limit=SIZE_LIMIT, submit_sessions_per_uid=SESSION_LIMIT,
                      submit_session_limit=SESSION_LIMIT,
                      # One uid (root) is every bench client: its share is all.
                      submit_transactions_per_uid=SESSION_LIMIT, submit_upstream_session_limit=SESSION_LIMIT)
        with open(stack.submit_config(name), "w", encoding="utf-8") as fp:
            fp.write(config.render(values))
        config.load(stack.submit_config(name))
        stack.procs[f"submit-{name}"] = _spawn(
            stack, f"submit-{name}", ["-m", "sendgate.submit_socket.main", "--config", stack.submit_config(name)])
    for name in SERVICES:
        _wait(f"the submit daemon for {name}", lambda: os.path.exists(stack.submit(name)))


def _spawn(stack: BenchStack, name: str, args: list[str], user: str | None = None) -> subprocess.Popen:
    log = open(stack.path("log", f"{name}.log"), "ab")
    with log:
        return subprocess.Popen([sys.executable, *args], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, cwd="/", user=user)


def down(stack: BenchStack, remove: bool = True) -> None:
    for proc in stack.procs.values():
        proc.terminate()
    for proc in stack.procs.values():
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    subprocess.run([os.path.join(VENV_BIN, "sendgate"), "stack", "down", "--dir", stack.root],
                   capture_output=True, timeout=120, cwd="/")
    if remove:
        shutil.rmtree(stack.root, ignore_errors=True)
