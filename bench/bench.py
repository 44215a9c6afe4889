"""sendgate benchmarks against their anchors, side by side, in one run.

    sudo bench/run [--quick] [--out DIR] [--parts PART,...] [--no-plot] [--keep DIR]

Starts a private bench stack (benchstack.py) in a scratch directory, runs
the parts, prints every figure with its ratio to the anchor as it goes and
the targets at the end, writes DIR/results.json, DIR/report.md (the tables
of BENCHMARKS.md) and DIR/benchmarks.png, and stops the stack.

Parts: latency (1), throughput (2), scale, idle, big (3).  Targets (4) are
checked from whatever parts ran.  --quick runs every part small (for CI, well
under a minute); the full run takes about five minutes on two cores.

Exit status: 0 when the run completed (targets missed or not: they are
reported, not asserted), 1 when the bench could not run, 2 for usage.
Stopped with ^C or SIGTERM, it stops the bench stack first.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import sys
import time

import benchstack
import latency
import memory
import report
import scale
import throughput
from loadgen import wire_message

# Memory first, while the daemons have not yet grown their heaps on other work.
PARTS = ("idle", "big", "latency", "throughput", "scale")
FULL = {
    "latency_rounds": 4, "latency_runs": 50,
    "sessions": 20, "messages": 5000, "throughput_rounds": 3,
    "levels": [1, 10, 50, 200], "level_messages": {1: 200, 10: 1000, 50: 2000, 200: 2000}, "scale_rounds": 2,
    "idle_sessions": 500, "big_size": 50 * 1000 * 1000,
}
QUICK = {
    "latency_rounds": 2, "latency_runs": 10,
    "sessions": 20, "messages": 200, "throughput_rounds": 1,
    "levels": [1, 10], "level_messages": {1: 20, 10: 100}, "scale_rounds": 1,
    "idle_sessions": 50, "big_size": 5 * 1000 * 1000,
}
TOOLS = {"hyperfine": "hyperfine", "msmtp": "msmtp", "/usr/sbin/smtp-source": "postfix", "/usr/bin/time": "time"}
MESSAGE_1K = os.path.join(benchstack.BENCH_DIR, "message-1k.txt")


def say(text: str) -> None:
    print(text, flush=True)


def check_tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise benchstack.BenchError(f"missing tools; install them with: apt-get install {' '.join(missing)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small run of every part (CI)")
    parser.add_argument("--out", default=os.path.join(benchstack.BENCH_DIR, "results"),
                        help="where results.json, report.md and benchmarks.png go (default: bench/results)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    parser.add_argument("--keep", metavar="DIR", help="build the stack in DIR and leave its files there")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if not set(parts) <= set(PARTS):
        parser.error(f"unknown part in {args.parts!r}")
    p = QUICK if args.quick else FULL
    # SIGTERM unwinds like ^C, so that the stack is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not args.no_plot and importlib.util.find_spec("matplotlib") is None:
        print("bench: the plot needs matplotlib: SENDGATE_EXTRAS=bench scripts/bootstrap (or --no-plot)",
              file=sys.stderr)
        return 1
    try:
        check_tools()
        os.makedirs(args.out, exist_ok=True)
        say("bench: starting the bench stack")
        stack = benchstack.up(args.keep)
    except benchstack.BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 1
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "machine": f"{os.cpu_count()} CPUs, {platform.python_implementation()} "
                                f"{platform.python_version()}, {platform.machine()}",
                     "mode": "quick" if args.quick else "full", "parameters": p}
    started = time.monotonic()
    try:
        run_parts(stack, parts, p, results, args.out)
    except benchstack.BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 1
    finally:
        benchstack.down(stack, remove=args.keep is None)
    results["seconds"] = time.monotonic() - started
    results["targets"] = report.targets(results)
    for t in results["targets"]:
        say(f"target {t['target']}: {t['subject']} / {t['anchor']} = {t['ratio']:.2f}x, "
            f"{t['limit']}: {'met' if t['met'] else 'MISSED'}")
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as fp:
        json.dump(results, fp, indent=1)
    with open(os.path.join(args.out, "report.md"), "w", encoding="utf-8") as fp:
        fp.write(report.markdown(results))
    if not args.no_plot:
        report.plot(results, os.path.join(args.out, "benchmarks.png"))
    say(f"bench: done in {results['seconds']:.0f} s; results in {args.out}")
    return 0


def run_parts(stack: benchstack.BenchStack, parts: list[str], p: dict, results: dict, out: str) -> None:
    if "idle" in parts:
        say(f"3. memory: {p['idle_sessions']} idle sessions")
        idle = results["idle"] = memory.idle(stack, p["idle_sessions"])
        for which, data_ in idle.items():
            say(f"   behind {which} milter: before {data_['before_kb']} kB, during {data_['during_kb']} kB")
    if "big" in parts:
        say(f"3. memory: one {p['big_size'] // 1000000} MB message")
        path = os.path.join(out, "big-message.tmp")
        memory.big_message(path, p["big_size"])
        try:
            big = results["big"] = memory.big(stack, path)
        finally:
            os.unlink(path)
        say(f"   peak growth: {big['growth_kb']} kB in {big['socket_seconds']:.2f} s; "
            f"commands' peak RSS: { {n: c['peak_rss_kb'] for n, c in big['commands'].items()} } kB")
    if "latency" in parts:
        say(f"1. latency: hyperfine, {p['latency_rounds']} rounds x {p['latency_runs']} runs per command")
        lat = results["latency"] = latency.run(stack, MESSAGE_1K, p["latency_rounds"], p["latency_runs"])
        base = lat["median_ms"]["postfix sendmail"]
        for name, median in lat["median_ms"].items():
            say(f"   {name:24s} median {median:7.2f} ms  min {lat['min_ms'][name]:7.2f}  "
                f"max {lat['max_ms'][name]:7.2f}  {median / base:5.2f}x postfix sendmail")
    if "throughput" in parts:
        say(f"2. throughput: smtp-source -s {p['sessions']} -m {p['messages']}, {p['throughput_rounds']} rounds")
        tp = results["throughput"] = throughput.run(stack, MESSAGE_1K, p["sessions"], p["messages"],
                                                    p["throughput_rounds"])
        for name, rate in tp["median_per_s"].items():
            cpu = ", ".join(f"{d} {v:.2f}" for d, v in tp["cpu_ms_per_message"][name].items())
            say(f"   {name:26s} {rate:7.0f} msg/s" + (f"  CPU ms/msg: {cpu}" if cpu else ""))
    with open(MESSAGE_1K, "rb") as fp:
        data = wire_message(fp.read())
    if "scale" in parts:
        say(f"3. scale: {p['levels']} concurrent clients")
        sc = results["scale"] = scale.run(stack, data, p["levels"], p["level_messages"], p["scale_rounds"])
        for clients, r in sc["results"].items():
            s, d = r["socket"], r["direct"]
            failed = f" | failed sessions {s['errors']} / {d['errors']}" if s["errors"] or d["errors"] else ""
            say(f"   {clients:>4s} clients: socket {s['per_s']:6.0f} msg/s p99 {s['p99_ms']:7.1f} ms | "
                f"direct {d['per_s']:6.0f} msg/s p99 {d['p99_ms']:7.1f} ms | {s['per_s'] / d['per_s']:.2f}x{failed}")


if __name__ == "__main__":
    sys.exit(main())
