"""Part 1: per-message submission latency of the sendmail command, with
hyperfine, against Postfix's own sendmail (postdrop) and msmtp, all into
the bench stack's Postfix and all run as root.

Why root: Postfix's sendmail and its set-gid postdrop accept a private
configuration directory (-C DIR, or MAIL_CONFIG) from a non-root caller
only when the default main.cf lists it in alternate_config_directories; the
bench never touches /etc/postfix, so it runs the commands as root, where
-C DIR just works.  sendgate-sendmail runs as root too (login "root"), so
the three commands run under the same conditions.

hyperfine runs one command's runs in a row; to interleave, every round runs
each command `runs` times, in an order that rotates from round to round, and
the rounds' samples are pooled.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import tempfile

from benchstack import VENV_BIN, BenchError, BenchStack


def commands(stack: BenchStack, message: str) -> dict[str, str]:
    host, port = stack.inbound
    msg = shlex.quote(message)
    config = f"SENDGATE_CONFIG={shlex.quote(stack.submit_config('sendgate'))}"
    return {
        # As /usr/sbin/sendmail runs once `sendgate install-shim` put it there.
        "sendgate-sendmail": f"{config} {shlex.quote(stack.launcher())} -t -i < {msg}",
        # The pip entry point: the same command with the venv's site start-up.
        "sendgate-sendmail (venv entry point)":
            f"{config} {shlex.quote(os.path.join(VENV_BIN, 'sendgate-sendmail'))} -t -i < {msg}",
        "postfix sendmail": f"/usr/sbin/sendmail -C {shlex.quote(stack.postfix_config)} -t -i < {msg}",
        "msmtp": (f"msmtp --file=/dev/null --host={host} --port={port} --domain=localhost "
                  f"--from=root@example.org -t < {msg}"),
        # Not an anchor: the floor under any sendmail written in Python.
        "python3 -I -S -c pass": "/usr/bin/python3 -I -S -c pass",
    }


def run(stack: BenchStack, message: str, rounds: int, runs: int) -> dict:
    cmds = commands(stack, message)
    names = list(cmds)
    times: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            out = os.path.join(tmp, f"round{r}.json")
            argv = ["hyperfine", "--style", "none", "--warmup", "3", "--runs", str(runs),
                    "--export-json", out]
            for name in order:
                argv += ["--command-name", name, cmds[name]]
            result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                raise BenchError(f"hyperfine failed:\n{result.stdout}{result.stderr}")
            with open(out, encoding="utf-8") as fp:
                for entry in json.load(fp)["results"]:
                    times[entry["command"]].extend(entry["times"])
    return {
        "commands": cmds,
        "runs": {n: len(t) for n, t in times.items()},
        "median_ms": {n: statistics.median(t) * 1000 for n, t in times.items()},
        "min_ms": {n: min(t) * 1000 for n, t in times.items()},
        "max_ms": {n: max(t) * 1000 for n, t in times.items()},
        "samples_ms": {n: [x * 1000 for x in t] for n, t in times.items()},
    }
