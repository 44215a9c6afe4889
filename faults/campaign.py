#!/usr/bin/env python3
"""The fault campaign (docs/faults.md): submissions while the daemons die.

    faults/campaign.py [--messages N] [--workers W] [--seed S] [--pause SECONDS]
                       [--sessions N] [--dir DIR] [--json FILE]

Starts a private Postfix stack (`sendgate stack up`) with its own spool
(spool_directory in DIR, retried every second), then sends N messages of
mixed sizes with the sendmail command, as the test users sgtest1..4, W at a
time, while a killer sends SIGKILL, at random moments (seeded), to the
submit daemon, the milter or one of Postfix's smtpd processes; the daemons
are started again (Postfix's master restarts its smtpd itself).  When every
sendmail has exited and the spool is empty again, each message is looked
for in the stack's Maildir.  The outcome of every message is one of:

    delivered      exit 0, delivered once
    saved          exit non-zero, saved in the spool, delivered once by the retry
    lost           delivered never, and not waiting in the spool
    duplicated     delivered more than once
    exit0-saved    exit 0 and yet saved (the caller was told both)
    waiting        still in the spool at the end

With --sessions N, it then opens N SMTP sessions in a row on the submit
socket (each a whole transaction) and reports the submit daemon's open
files and resident memory before and after.  Prints one JSON object.
Run as root, after scripts/test has made the test users.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from sendgate.stack import common

USERS = ("sgtest1", "sgtest2", "sgtest3", "sgtest4")
SIZES = (600, 20_000, 300_000, 2_000_000)
TARGETS = ("submitd", "milter", "smtpd")
DRAIN_TIMEOUT = 300.0


def tool(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def takes_connections(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
        return True
    except OSError:
        return False


def message(marker: str, size: int) -> bytes:
    head = f"From: {{user}}@example.org\nTo: bob@example.net\nSubject: {marker}\n\n"
    line = "The quick brown fox jumps over the lazy dog, again and again and again.\n"
    body = line * max(1, (size - len(head)) // len(line))
    return (head + body + f"end of {marker}\n").encode()


class Campaign:
    def __init__(self, directory: str, seed: int, pause: float):
        self.dir = directory
        self.p = common.Paths(directory)
        self.random = random.Random(seed)
        self.pause = pause
        self.spool = os.path.join(directory, "spool", "deferred")
        self.kills = {target: 0 for target in TARGETS}
        self.stop = threading.Event()
        self.lock = threading.Lock()  # the killer's restarts against the final check

    # --- the stack -----------------------------------------------------------

    def up(self) -> None:
        os.makedirs(self.spool)
        shutil.chown(self.spool, common.SERVICE_USER, common.SERVICE_USER)
        os.chmod(self.spool, 0o3777)  # as config/tmpfiles.d/sendgate.conf makes it
        up = subprocess.run([tool("sendgate"), "stack", "up", "--dir", self.dir,
                             "--set", f"spool_directory={self.spool}", "--set", "spool_retry_interval=1",
                             # Sessions in a row are many messages of one user: no hourly limit here.
                             "--set", "rate_message_limit=1000000"],
                            capture_output=True, text=True, timeout=600)
        if up.returncode != 0:
            raise SystemExit(f"stack up failed ({up.returncode}):\n{up.stdout}{up.stderr}")

    def down(self) -> None:
        subprocess.run([tool("sendgate"), "stack", "down", "--dir", self.dir], capture_output=True, timeout=120)

    def pid(self, name: str) -> int | None:
        try:
            with open(self.p.pidfile(name), encoding="ascii") as fp:
                return int(fp.read().strip())
        except (OSError, ValueError):
            return None

    def smtpd_pids(self) -> list[int]:
        """Postfix's smtpd processes of this stack: children of its master."""
        try:
            with open(os.path.join(self.dir, "postfix/spool/pid/master.pid"), encoding="ascii") as fp:
                master = int(fp.read().strip())
        except (OSError, ValueError):
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fp:
                    stat = fp.read()
                name = stat[stat.index("(") + 1:stat.rindex(")")]
                ppid = int(stat[stat.rindex(")") + 1:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if name == "smtpd" and ppid == master:
                found.append(int(entry))
        return found

    def restart(self, name: str) -> None:
        """Start the daemon again and wait until its socket takes
        connections (not for the MTA's greeting: Postfix's master throttles
        the service for a minute after an smtpd died at start-up, and the
        submit daemon then waits for it, as it should)."""
        log = self.p.submitd_log if name == "submitd" else self.p.milter_log
        module = "sendgate.submit_socket.main" if name == "submitd" else "sendgate.milter.main"
        path = self.p.socket if name == "submitd" else self.p.milter_socket
        pid = common.spawn(self.p, name, module, log)
        common.wait_for(f"the {name} socket", lambda: takes_connections(path), {name: pid}, {name: log})

    def heal(self) -> None:
        """Both daemons running again (the last kill may have hit either)."""
        with self.lock:
            for name in ("milter", "submitd"):
                pid = self.pid(name)
                if pid is None or not common.alive(pid):
                    self.restart(name)

    # --- the killer --------------------------------------------------------------

    def killer(self) -> None:
        while not self.stop.wait(self.random.uniform(0.1, 2 * self.pause)):
            target = self.random.choice(TARGETS)
            with self.lock:
                if target == "smtpd":
                    pids = self.smtpd_pids()
                    if not pids:
                        continue
                    pid = self.random.choice(pids)
                else:
                    pid = self.pid(target)
                    if pid is None:
                        continue
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.kills[target] += 1
                if target != "smtpd":
                    while common.alive(pid):
                        time.sleep(0.01)
                    self.restart(target)

    # --- the senders -------------------------------------------------------------

    def send(self, n: int, marker: str) -> dict:
        user = USERS[n % len(USERS)]
        size = SIZES[n % len(SIZES)]
        env = ["HOME=/nonexistent", f"USER={user}", f"LOGNAME={user}", "PATH=/usr/bin:/bin",
               f"SENDGATE_CONFIG={self.p.config}"]
        result = subprocess.run(["runuser", "-u", user, "--", "env", "-i", *env, tool("sendgate-sendmail"), "-i",
                                 "bob@example.net"], input=message(marker, size).replace(b"{user}", user.encode()),
                                capture_output=True, timeout=600, cwd="/")
        stderr = result.stderr.decode(errors="replace").strip()
        return {"marker": marker, "user": user, "size": size, "status": result.returncode, "stderr": stderr,
                "saved": f"message saved in {self.spool}/" in stderr}

    def run(self, messages: int, workers: int, seed: int) -> list[dict]:
        markers = [f"fault-{seed}-{n}." for n in range(messages)]
        results: list[dict] = []
        queue = list(enumerate(markers))

        def worker() -> None:
            while True:
                with self.lock:
                    if not queue:
                        return
                    n, marker = queue.pop(0)
                outcome = self.send(n, marker)
                with self.lock:
                    results.append(outcome)

        killer = threading.Thread(target=self.killer)
        killer.start()
        threads = [threading.Thread(target=worker) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.stop.set()
        killer.join()
        self.heal()
        return sorted(results, key=lambda r: markers.index(r["marker"]))

    # --- the count ---------------------------------------------------------------

    def spool_entries(self) -> list[str]:
        return [name for name in os.listdir(self.spool) if not name.startswith(".")]

    def drain(self) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.spool_entries() and time.monotonic() < deadline:
            time.sleep(0.5)

    def copies(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sub in ("new", "cur"):
            folder = os.path.join(self.p.maildir, sub)
            for name in os.listdir(folder):
                with open(os.path.join(folder, name), "rb") as fp:
                    head = fp.read(4096)
                start = head.find(b"Subject: fault-")
                if start >= 0:
                    marker = head[start + 9:head.index(b"\n", start)].decode()
                    counts[marker] = counts.get(marker, 0) + 1
        return counts

    def judge(self, results: list[dict]) -> dict:
        time.sleep(2)  # the last deliveries of the MTA's own queue
        copies = self.copies()
        waiting = set()
        for name in self.spool_entries():
            with open(os.path.join(self.spool, name), "rb") as fp:
                data = fp.read()
            waiting.update(r["marker"] for r in results if r["marker"].encode() in data)
        tally = {k: 0 for k in ("delivered", "saved", "lost", "duplicated", "exit0-saved", "waiting")}
        for r in results:
            count = copies.get(r["marker"], 0)
            if r["status"] == 0 and r["saved"]:
                verdict = "exit0-saved"
            elif count > 1:
                verdict = "duplicated"
            elif count == 1:
                verdict = "delivered" if r["status"] == 0 else "saved" if r["saved"] else "lost"
            else:
                verdict = "waiting" if r["marker"] in waiting else "lost"
            r["verdict"], r["copies"] = verdict, count
            tally[verdict] += 1
        return tally

    # --- sessions in a row -----------------------------------------------------

    def usage(self) -> dict:
        pid = self.pid("submitd")
        with open(f"/proc/{pid}/status", encoding="ascii") as fp:
            rss = next(int(line.split()[1]) for line in fp if line.startswith("VmRSS:"))
        return {"open_files": len(os.listdir(f"/proc/{pid}/fd")), "rss_kb": rss}

    def sessions(self, count: int) -> dict:
        client = (
            "import socket, sys\n"
            "path, count = sys.argv[1], int(sys.argv[2])\n"
            "for n in range(count):\n"
            "    s = socket.socket(socket.AF_UNIX); s.connect(path); f = s.makefile('rb')\n"
            "    def reply():\n"
            "        while True:\n"
            "            line = f.readline()\n"
            "            if line[3:4] != b'-': return line\n"
            "    reply()\n"
            "    for c in (b'EHLO x', b'MAIL FROM:<sgtest1@example.org>', b'RCPT TO:<bob@example.net>', b'DATA'):\n"
            "        s.sendall(c + b'\\r\\n'); reply()\n"
            "    s.sendall(b'Subject: session %d\\r\\n\\r\\nx\\r\\n.\\r\\nQUIT\\r\\n' % n); reply(); reply()\n"
            "    s.close()\n")

        def run(n: int) -> None:
            subprocess.run(["runuser", "-u", "sgtest1", "--", "/usr/bin/python3", "-c", client, self.p.socket,
                            str(n)], check=True, timeout=3600, cwd="/")
        run(min(200, count))  # warm: pools, caches, the allocator
        before = self.usage()
        run(count)
        return {"sessions": count, "before": before, "after": self.usage()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faults/campaign.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pause", type=float, default=1.0, help="mean seconds between kills")
    parser.add_argument("--sessions", type=int, default=0)
    parser.add_argument("--dir", help="the stack's directory (default: a new one under /tmp, removed after)")
    parser.add_argument("--json", help="also write the report, every message's outcome included, to this file")
    args = parser.parse_args(argv)
    directory = args.dir or tempfile.mkdtemp(prefix="sendgate-faults-", dir="/tmp")
    os.chmod(directory, 0o755)
    campaign = Campaign(directory, args.seed, args.pause)
    campaign.up()
    try:
        results = campaign.run(args.messages, args.workers, args.seed)
        campaign.drain()
        report = {"messages": args.messages, "seed": args.seed, "kills": campaign.kills,
                  "outcomes": campaign.judge(results)}
        if args.sessions:
            report["sessions"] = campaign.sessions(args.sessions)
    finally:
        campaign.down()
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(report, sort_keys=True))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fp:
            json.dump({**report, "results": results}, fp, indent=1, sort_keys=True)
    bad = report["outcomes"]["lost"] + report["outcomes"]["exit0-saved"] + report["outcomes"]["waiting"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
