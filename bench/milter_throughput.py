"""Milter throughput through Postfix, side by side with its anchors.

Starts a private stack (`sendgate stack up`, rate limits off), adds four
smtpd services on loopback ports that differ only in their milter, and
sends the same load to each with smtp-source, interleaved over several
rounds, so that every service sees the same machine state:

  none        no milter                         (anchor: Postfix alone)
  null        a pymilter that does nothing      (anchor: pymilter's own cost)
  every-step  a pymilter that does nothing, but takes and answers every
              protocol step (what negotiating steps away saves)
  relay       the sendgate milter, unauthenticated mail (no fix-ups)
  submission  the sendgate milter, as an authenticated user (fix-ups and
              sender check; the login comes from milter_macro_defaults,
              because smtp-source cannot AUTH)

Accepted mail goes to Postfix's discard transport, so delivery costs the
same everywhere and little.  Prints messages per second (median of the
rounds), each service's rate as a ratio of the no-milter rate, and the CPU
time the milter process spent per message (from /proc, so other load on
the machine does not inflate it).

Usage (as root): python3 bench/milter_throughput.py [--messages N] [--sessions N]
    [--rounds N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and its threads so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000, help="messages per service per round")
    parser.add_argument("--sessions", type=int, default=10, help="parallel SMTP sessions")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=2048, help="message size in bytes")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("milter_throughput: run as root (it starts a private Postfix stack)", file=sys.stderr)
        return 1
    sendgate = str(pathlib.Path(sys.executable).parent / "sendgate")
    directory = pathlib.Path(tempfile.mkdtemp(prefix="sendgate-bench-", dir="/tmp"))
    directory.chmod(0o755)
    nulls: list[subprocess.Popen] = []
    try:
        up = run(sendgate, "stack", "up", "--dir", str(directory), "--set", "rate_message_limit=0",
                 "--set", "rate_recipient_limit=0")
        facts = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
        conf = facts["postfix_config"]
        milter = f"unix:{directory}/run/milter/milter.sock"
        null_dir = directory / "run/null"
        null_dir.mkdir()
        shutil.chown(null_dir, "sendgate", "sendgate")
        for variant in ("null", "every-step"):
            nulls.append(subprocess.Popen([sys.executable, str(HERE / "null_milter.py"), f"unix:{null_dir}/{variant}.sock",
                                           *(["every-step"] if variant == "every-step" else [])], user="sendgate",
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            deadline = time.monotonic() + 20
            while not (null_dir / f"{variant}.sock").exists():
                if time.monotonic() > deadline or nulls[-1].poll() is not None:
                    raise RuntimeError(f"the {variant} milter did not start")
                time.sleep(0.05)

        services = {"none": "", "null": f"unix:{null_dir}/null.sock", "every-step": f"unix:{null_dir}/every-step.sock",
                    "relay": milter, "submission": milter}
        ports = {}
        for name, milters in services.items():
            ports[name] = free_port()
            options = [f"smtpd_milters={milters}", f"syslog_name=postfix/bench-{name}", "content_filter=discard:"]
            if name == "submission":
                options.append("milter_macro_defaults={auth_authen}=bench")
            entry = f"127.0.0.1:{ports[name]}/inet=127.0.0.1:{ports[name]} inet n - n - - smtpd " + " ".join(
                f"-o {o}" for o in options)
            run("postconf", "-c", conf, "-M", entry)
        run("postfix", "-c", conf, "reload")
        time.sleep(1)

        milter_pid = int((directory / "run/milter.pid").read_text())
        pids = {"none": None, "null": nulls[0].pid, "every-step": nulls[1].pid, "relay": milter_pid,
                "submission": milter_pid}
        rates: dict[str, list[float]] = {name: [] for name in services}
        cpu: dict[str, float] = {name: 0.0 for name in services}
        for _ in range(args.rounds):
            for name, port in ports.items():
                cpu_before = cpu_seconds(pids[name]) if pids[name] else 0.0
                started = time.monotonic()
                run("smtp-source", "-s", str(args.sessions), "-m", str(args.messages), "-l", str(args.size),
                    "-f", "bench@example.org", "-t", "rcpt@example.net", f"127.0.0.1:{port}", timeout=600)
                rates[name].append(args.messages / (time.monotonic() - started))
                cpu[name] += (cpu_seconds(pids[name]) if pids[name] else 0.0) - cpu_before
        log = (directory / "log/postfix.log").read_text(errors="replace")
        refused = log.count("milter-reject") + log.count("reject:")
        decisions = (directory / "log/milter.log").read_text(errors="replace")
        submitted = decisions.count(": submission: login=bench ")
        relayed = decisions.count(": relay: ")
        base = statistics.median(rates["none"])
        print(f"milter throughput: {args.rounds} rounds x {args.messages} messages of {args.size} bytes, "
              f"{args.sessions} sessions, one message per session; refusals logged: {refused}; "
              f"sendgate milter decisions: submission={submitted} relay={relayed}")
        print(f"{'service':<12}{'msgs/s (median)':>16}{'min':>9}{'max':>9}{'ratio to none':>15}"
              f"{'milter CPU ms/msg':>19}")
        total = args.rounds * args.messages
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"{name:<12}{median:>16.0f}{min(values):>9.0f}{max(values):>9.0f}{median / base:>15.2f}"
                  f"{1000 * cpu[name] / total:>19.3f}")
        print(f"ratio submission/null: throughput {statistics.median(rates['submission']) / statistics.median(rates['null']):.2f}, "
              f"milter CPU per message {cpu['submission'] / max(cpu['null'], 1e-9):.2f}")
        print(f"ratio every-step/null: throughput "
              f"{statistics.median(rates['every-step']) / statistics.median(rates['null']):.2f}, "
              f"milter CPU per message {cpu['every-step'] / max(cpu['null'], 1e-9):.2f}")
        return 0
    finally:
        for proc in nulls:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in nulls:
            proc.wait(15)
        subprocess.run([sendgate, "stack", "down", "--dir", str(directory)], capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
