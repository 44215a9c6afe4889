"""Ratios, targets, the Markdown table and the plot, from one run's results."""

from __future__ import annotations

# Targets of issue 8, checked every run.
TARGETS = (
    # name, subject, anchor, how the ratio is read, limit
    ("sendmail-command latency", "latency", "sendgate-sendmail", "postfix sendmail", "at most", 1.5),
    ("socket throughput", "throughput", "socket, no milter", "direct, no milter", "at least", 0.8),
    ("milter throughput", "throughput", "socket, sendgate milter", "socket, null milter", "at least", 0.9),
)


def targets(results: dict) -> list[dict]:
    out = []
    for name, part, subject, anchor, sense, limit in TARGETS:
        if part not in results:
            continue
        values = results[part]["median_ms" if part == "latency" else "median_per_s"]
        ratio = values[subject] / values[anchor]
        met = ratio <= limit if sense == "at most" else ratio >= limit
        out.append({"target": name, "subject": subject, "anchor": anchor, "ratio": ratio,
                    "limit": f"{sense} {limit}x", "met": met})
    return out


def markdown(results: dict) -> str:
    lines = [f"Run: {results['when']}, {results['machine']}, mode {results['mode']}.", ""]
    if "latency" in results:
        lat = results["latency"]
        base = lat["median_ms"]["postfix sendmail"]
        lines += ["### 1. Submission latency, 1 KB message (hyperfine, all as root)", "",
                  "| command | runs | median ms | min ms | max ms | median / postfix sendmail |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name in lat["median_ms"]:
            lines.append(f"| {name} | {lat['runs'][name]} | {lat['median_ms'][name]:.2f} | "
                         f"{lat['min_ms'][name]:.2f} | {lat['max_ms'][name]:.2f} | "
                         f"{lat['median_ms'][name] / base:.2f}x |")
        lines.append("")
    if "throughput" in results:
        tp = results["throughput"]
        rate = tp["median_per_s"]
        anchors = {"socket, no milter": "direct, no milter", "socket, sendgate milter": "socket, null milter",
                   "direct, sendgate milter": "direct, null milter", "socket, null milter": "socket, no milter",
                   "direct, null milter": "direct, no milter"}
        lines += [f"### 2. Throughput, smtp-source, {tp['sessions']} sessions, {tp['messages']} messages of 1 KB, "
                  f"one message per session, median of {tp['rounds']} rounds", "",
                  "| path | messages/s | rounds | ratio | against | CPU ms/msg submitd | CPU ms/msg milter |",
                  "|---|---:|---|---:|---|---:|---:|"]
        for name, value in rate.items():
            anchor = anchors.get(name)
            ratio = f"{value / rate[anchor]:.2f}x" if anchor else ""
            rounds = " ".join(f"{x:.0f}" for x in tp["rates"][name])
            cpu = tp["cpu_ms_per_message"][name]
            daemons = " | ".join(f"{cpu[d]:.2f}" if d in cpu else "" for d in ("submitd", "milter"))
            lines.append(f"| {name} | {value:.0f} | {rounds} | {ratio} | {anchor or ''} | {daemons} |")
        lines.append("")
    if "scale" in results:
        sc = results["scale"]
        lines += ["### 3. Scale: concurrent clients, one message per session "
                  "(socket: submit daemon -> smtpd + sendgate-milter; direct: smtpd + sendgate-milter, relay mode)", "",
                  "| clients | socket msg/s | direct msg/s | ratio | socket p50 / p99 ms | direct p50 / p99 ms "
                  "| failed sessions socket / direct |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for clients, r in sc["results"].items():
            s, d = r["socket"], r["direct"]
            lines.append(f"| {clients} | {s['per_s']:.0f} | {d['per_s']:.0f} | {s['per_s'] / d['per_s']:.2f}x | "
                         f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} | {d['p50_ms']:.1f} / {d['p99_ms']:.1f} | "
                         f"{s['errors']} / {d['errors']} |")
        lines.append("")
    if "idle" in results:
        idle = results["idle"]
        sg, null = idle["sendgate"], idle["null"]
        n = sg["during_kb"]["sessions"]
        lines += [f"### 3. Resident memory with {n} idle sessions", "",
                  "| process | idle RSS MB | with sessions MB | per session KB |", "|---|---:|---:|---:|"]
        rows = (("sendgate-submitd", sg, "submitd"), ("sendgate-milter", sg, "milter"),
                ("null pymilter (anchor)", null, "milter"),
                (f"Postfix smtpd, PSS of {sg['during_kb']['smtpd_processes']} processes (anchor)", sg, "smtpd"))
        for label, data, key in rows:
            b, d = data["before_kb"][key], data["during_kb"][key]
            lines.append(f"| {label} | {b / 1024:.1f} | {d / 1024:.1f} | {(d - b) / n:.1f} |")
        lines.append("")
    if "big" in results:
        big = results["big"]
        mb = big["size"] / 1e6
        lines += [f"### 3. One {mb:.0f} MB message", "",
                  "| process | peak RSS growth MB | seconds |", "|---|---:|---:|",
                  f"| sendgate-submitd | {big['growth_kb']['submitd'] / 1024:.1f} | {big['socket_seconds']:.2f} |",
                  f"| sendgate-milter | {big['growth_kb']['milter'] / 1024:.1f} | |", "",
                  "| command | peak RSS MB | seconds |", "|---|---:|---:|"]
        for name, c in big["commands"].items():
            lines.append(f"| {name} | {c['peak_rss_kb'] / 1024:.1f} | {c['seconds']:.2f} |")
        lines.append("")
    lines += ["### 4. Targets", "", "| target | ratio | limit | |", "|---|---:|---|---|"]
    for t in results["targets"]:
        lines.append(f"| {t['target']}: {t['subject']} / {t['anchor']} | {t['ratio']:.2f}x | {t['limit']} | "
                     f"{'met' if t['met'] else 'MISSED'} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    if "latency" in results:
        ax = axes[0][0]
        samples = results["latency"]["samples_ms"]
        ax.boxplot(list(samples.values()), showfliers=False)
        ax.set_xticks(range(1, len(samples) + 1), [n.replace(" ", "\n", 1) for n in samples])
        ax.set_ylabel("ms per message")
        ax.set_title("1. Submission latency, 1 KB (box: quartiles, whiskers 1.5 IQR)")
        ax.tick_params(axis="x", labelsize=8)
    if "throughput" in results:
        ax = axes[0][1]
        rate = results["throughput"]["median_per_s"]
        names = list(rate)
        ax.barh(names, [rate[n] for n in names],
                color=["tab:blue" if n.startswith("socket") else "tab:gray" for n in names])
        ax.invert_yaxis()
        ax.set_xlabel("messages/s (median)")
        ax.set_title(f"2. Throughput, smtp-source -s {results['throughput']['sessions']}")
        ax.tick_params(axis="y", labelsize=8)
    if "scale" in results:
        sc = results["scale"]["results"]
        levels = [int(c) for c in sc]
        for name, color in (("socket", "tab:blue"), ("direct", "tab:gray")):
            axes[1][0].plot(levels, [sc[str(c)][name]["per_s"] for c in levels], "o-", color=color, label=name)
            axes[1][1].plot(levels, [sc[str(c)][name]["p99_ms"] for c in levels], "o-", color=color, label=name)
        for ax, label in ((axes[1][0], "messages/s"), (axes[1][1], "p99 latency ms")):
            ax.set_xscale("log")
            ax.set_xticks(levels, [str(c) for c in levels])
            ax.set_xlabel("concurrent clients")
            ax.set_ylabel(label)
            ax.legend()
        axes[1][0].set_title("3. Scale: throughput")
        axes[1][1].set_title("3. Scale: p99 latency")
    fig.suptitle(f"sendgate benchmarks ({results['mode']} run, {results['when']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
