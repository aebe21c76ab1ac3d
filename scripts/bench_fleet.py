"""Fleet benchmark (issue 24): messages per second through N mini-qmail nodes to M QMQP hubs, each in a
network namespace of its own (tests/netns.py), for N, M in {1, 2, 4}.

Usage: python scripts/bench_fleet.py [--nodes 1,2,4] [--hubs 1,2,4] [-m 240] [--concurrency 4] [--rounds 1]
       [--out docs/benchmarks-fleet.txt]
Run through scripts/bench-fleet (as root), which installs everything first.

Per run a fresh fleet is built: every node a `qmail-setup --mini` tree naming every hub, with
control/qmqpspread 1; every hub a full pyqmail (qmail-tcpserver + qmail-qmqpd as the queue's owner,
qmail-send delivering to ./Maildir/ as nobody). The -m messages are split over the nodes; each node's
injector runs qmail-inject and sendmail (alternately) as nobody, --concurrency injections at once over the
whole fleet (so --concurrency / N per node), retrying on exit 111. Measured: the injection rate (messages
accepted per second, first attempt to last exit 0), the end-to-end rate (to the last Maildir file), the
messages each hub took, duplicates, exit codes. Results: the text file and a PNG chart beside it.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
import netns  # noqa: E402
from conftest import Processes, note_freed  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "docs", "benchmarks-fleet.txt")


def say(text):
    """A progress line on stderr."""
    sys.stderr.write("bench-fleet: %s\n" % text)
    sys.stderr.flush()


def run_one(nodes, hubs, messages, concurrency):
    """Build a fleet of nodes → hubs, push messages through it; return the run's figures."""
    base = Path(tempfile.mkdtemp(prefix="pyqmail-fleet-"))
    os.chmod(base, 0o755)
    procs = Processes()
    try:
        with netns.Fleet(base, procs, nodes=nodes, hubs=hubs) as fleet:
            share = [messages // nodes + (1 if i < messages % nodes else 0) for i in range(nodes)]
            workers = max(1, concurrency // nodes)
            start = time.time()
            for node, count in zip(fleet.nodes, share):
                node.inject(count, workers=workers)
            last = 0
            deadline = start + 600
            while True:
                accepted = len(fleet.accepted())
                copies, per_hub = fleet.delivered()
                if time.time() - last >= 2:
                    say("N=%d M=%d: %d/%d accepted, %d delivered, %.1f s" % (
                        nodes, hubs, accepted, messages, len(copies), time.time() - start))
                    last = time.time()
                if len(copies) >= messages and all(h.queue_empty() for h in fleet.hubs):
                    break
                if time.time() > deadline:
                    raise RuntimeError("N=%d M=%d: stalled at %d delivered" % (nodes, hubs, len(copies)))
                time.sleep(0.05)
            end = time.time()
            fleet.wait_injectors(60)
            attempts = fleet.attempts()
            accepted_at = [a[4] for a in attempts if a[3] == 0]
            codes = {}
            for a in attempts:
                codes[a[3]] = codes.get(a[3], 0) + 1
            return {"nodes": nodes, "hubs": hubs, "messages": messages, "workers": workers,
                    "inject_rate": len(accepted_at) / max(1e-9, max(accepted_at) - start),
                    "e2e_rate": messages / (end - start), "seconds": end - start,
                    "per_hub": [per_hub[j] for j in range(hubs)],
                    "duplicates": sum(v - 1 for v in copies.values() if v > 1), "codes": codes}
    finally:
        import shutil
        shutil.rmtree(base, ignore_errors=True)
        note_freed()


def chart(results, path):
    """Grouped bars: end-to-end msg/s for each N, one bar per M."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    nodes = sorted({r["nodes"] for r in results})
    hubs = sorted({r["hubs"] for r in results})
    width = 0.8 / len(hubs)
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    for k, m in enumerate(hubs):
        values = []
        for n in nodes:
            runs = [r["e2e_rate"] for r in results if r["nodes"] == n and r["hubs"] == m]
            values.append(sorted(runs)[len(runs) // 2] if runs else 0)
        xs = [i + (k - (len(hubs) - 1) / 2) * width for i in range(len(nodes))]
        bars = ax.bar(xs, values, width * 0.95, label="%d hub%s" % (m, "" if m == 1 else "s"))
        ax.bar_label(bars, labels=["%.1f" % v if v else "" for v in values], fontsize=8, padding=2)
    ax.set_xticks(range(len(nodes)))
    ax.set_xticklabels(["%d node%s" % (n, "" if n == 1 else "s") for n in nodes])
    ax.set_ylabel("messages per second, injection to Maildir file")
    ax.set_title("pyqmail fleet: N mini-qmail nodes -> M QMQP hubs (network namespaces, one 2-core\n"
                 "machine shared with other work: every node and hub competes for the same CPUs)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(results, args, elapsed):
    """Return the results file's text."""
    lines = [
        "# pyqmail fleet benchmark: N mini-qmail nodes -> M QMQP hubs (scripts/bench-fleet, issue 24)",
        "#",
        "# command: scripts/bench-fleet %s" % " ".join(args),
        "# date: %s, %.0f s in all" % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), elapsed),
        "# machine: %d CPUs, SHARED with other helpers' work during the run: figures are indicative only."
        % os.cpu_count(),
        "# Every node and hub is a network namespace on one machine, so all of them share the same CPUs and",
        "# disk: more hubs or nodes add no hardware here, only concurrency. What the table shows is the",
        "# spreading (messages per hub) and that nothing is lost or duplicated, more than a scaling curve.",
        "# Each message: qmail-inject or sendmail (as nobody) -> qmail-qmqpc (control/qmqpspread 1) -> hub's",
        "# qmail-tcpserver + qmail-qmqpd (queues in process) -> qmail-send -> qmail-local -> Maildir/new.",
        "#",
        "# inject/s: messages accepted (exit 0) per second; e2e/s: messages per second to the last Maildir file.",
        "",
        "%5s %5s %6s %8s %9s %7s %8s  %-24s %s" % ("nodes", "hubs", "msgs", "workers", "inject/s", "e2e/s",
                                                 "seconds", "messages per hub", "duplicates, exit codes"),
    ]
    for r in results:
        lines.append("%5d %5d %6d %8d %9.1f %7.1f %8.1f  %-24s %d, %s" % (
            r["nodes"], r["hubs"], r["messages"], r["workers"], r["inject_rate"], r["e2e_rate"], r["seconds"],
            " ".join(str(n) for n in r["per_hub"]), r["duplicates"],
            " ".join("%s:%d" % kv for kv in sorted(r["codes"].items()))))
    return "\n".join(lines) + "\n"


def main():
    """Parse options, run the plan, write the results and the chart."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,2,4")
    parser.add_argument("--hubs", default="1,2,4")
    parser.add_argument("-m", "--messages", type=int, default=240)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    reason = netns.available()
    if reason:
        sys.exit("bench-fleet: " + reason)
    plan = [(n, m) for n in map(int, args.nodes.split(",")) for m in map(int, args.hubs.split(","))]
    results, began = [], time.time()
    for round_ in range(args.rounds):
        order = plan if round_ % 2 == 0 else list(reversed(plan))  # alternate, so no shape always runs first
        for n, m in order:
            say("round %d: %d node(s) -> %d hub(s), %d messages" % (round_ + 1, n, m, args.messages))
            r = run_one(n, m, args.messages, args.concurrency)
            say("N=%d M=%d: %.1f msg/s injected, %.1f msg/s end to end, per hub %s, %d duplicates" % (
                n, m, r["inject_rate"], r["e2e_rate"], r["per_hub"], r["duplicates"]))
            results.append(r)
    results.sort(key=lambda r: (r["nodes"], r["hubs"]))
    text = report(results, sys.argv[1:], time.time() - began)
    Path(args.out).write_text(text)
    chart(results, os.path.splitext(args.out)[0] + ".png")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
