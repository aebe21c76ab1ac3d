"""Outbound benchmark (issue 19): the same outbound mail through pyqmail (control/scheduler `qmail` and `qmgr`)
and through a private Postfix, each delivering by SMTP to the destination simulator (tests/smtpsim.py) on
127.0.1.x, in one run, in alternating rounds.

Usage: python scripts/bench_outbound.py [--scale 0.5] [--rounds 2] [--scenarios 1,2,3]
       [--systems pyqmail/qmail,pyqmail/qmgr,postfix] [--out docs/benchmarks-outbound.txt]
Run through scripts/bench-outbound, which installs everything first.

Scenarios (sizes times --scale; --scale 1 is issue 19's full size):
  1. one message to N recipients over D domains (5,000 over 50): time until every recipient is at its sink,
     SMTP sessions, recipients per transaction;
  2. that list, then 200 single messages 1 s after the delivery started, every sink slow (greeting after
     0.2 s, the reply to DATA's dot after 1 s): the singles' delay (from their injection to their arrival at
     the sink) p50/p95/max;
  3. 1,000 one-recipient messages over 20 domains, 2 of them mute and 2 greeting after 5 s: time until the 16
     healthy ones are done (and the slow ones), connection attempts to the mute ones meanwhile.
  4. 1,000 one-recipient messages to one destination that greets with 421 above 5 connections at once: time
     until all are delivered, 421 greetings given. A refused delivery is deferred, so the retry schedule is
     part of the time: pyqmail (qmgr) and Postfix both retry after BACKOFF4 seconds (minimalbackofftime and
     maximalbackofftime; minimal/maximal_backoff_time and queue_run_delay); pyqmail/qmail, whose retry
     schedule is fixed (about 400 s), is left out of this scenario.

Every run starts from a fresh tree (or Postfix instance) and a fresh simulator; the mail is injected with
the delivery side stopped (pyqmail: qmail-queue; Postfix: QMQP into qmqpd with no qmgr), then the delivery
side is started and timed from that moment. Deliveries are counted at the sinks: every expected recipient
exactly once, and no bounce (the senders' domain has a sink of its own), is checked and printed.
"""

import argparse
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
import smtpsim  # noqa: E402
from bench_postfix import Postfix  # noqa: E402
from bench_procs import own_cpu, proc_name, subtree_cpu  # noqa: E402
from conftest import Processes, note_freed, queue_message  # noqa: E402
from mailsystem import MailSystem, make_system_tree  # noqa: E402

ROOT = os.geteuid() == 0
ME = "bench.example"
BOUNCES = "bounces.example"  # the senders' domain: a bounce would arrive at its sink
SENDER = "bench@" + BOUNCES
TIMEOUT_CONNECT = 10  # pyqmail control/timeoutconnect = Postfix smtp_connect_timeout
TIMEOUT_REMOTE = 10  # pyqmail control/timeoutremote = Postfix smtp_helo_timeout (the greeting's wait)
CONCURRENCY_REMOTE = 100  # pyqmail control/concurrencyremote; Postfix default_process_limit
DESTINATION_LIMIT = 20  # Postfix default_destination_concurrency_limit (pyqmail qmgr's default limit is 20 too)
BACKOFF4 = 5  # scenario 4: the retry delay of a deferred message, in both systems
TOO_MANY4 = 5  # scenario 4: the sink greets with 421 above this many connections
STALL = 60  # seconds without a new delivery before a run is declared failed
MSG = b"Subject: outbound benchmark\nMessage-ID: <%d.outbound@bench.example>\n\n" + b"x" * 60 + b"\n" * 1 + (
    b"A line of text, as a small message has a few of them.\n" * 20)


def netstring(data):
    return b"%d:%s," % (len(data), data)


def qmqp_send(port, message, sender, recipients):
    """Send one message by QMQP to 127.0.0.1:port; raise unless the server answers K."""
    body = netstring(message) + netstring(sender.encode()) + b"".join(netstring(r.encode()) for r in recipients)
    with socket.create_connection(("127.0.0.1", port), 60) as s:
        s.sendall(netstring(body))
        reply = b""
        while len(reply) < 1024:
            data = s.recv(1024)
            if not data:
                break
            reply += data
    text = reply.partition(b":")[2]
    if not text.startswith(b"K"):
        raise RuntimeError("QMQP refused: %r" % reply)


class PyQmail:
    """pyqmail on a private tree (tests/mailsystem.py), control/scheduler as given, smtproutes to the sinks."""

    def __init__(self, work, procs, scheduler):
        self.work, self.procs, self.scheduler = Path(work), procs, scheduler
        self.tree = self.work / "qmail"
        self.mail = None
        self.name = "pyqmail/" + scheduler
        self.backoff = None

    def setup(self, sim):
        make_system_tree(self.tree, ME)
        control = self.tree / "control"
        (control / "scheduler").write_text(self.scheduler + "\n")
        (control / "concurrencyremote").write_text("%d\n" % CONCURRENCY_REMOTE)
        (control / "timeoutconnect").write_text("%d\n" % TIMEOUT_CONNECT)
        (control / "timeoutremote").write_text("%d\n" % TIMEOUT_REMOTE)
        if self.backoff is not None:
            (control / "minimalbackofftime").write_text("%d\n" % self.backoff)
            (control / "maximalbackofftime").write_text("%d\n" % self.backoff)
        sim.write_routes(self.tree)

    def inject(self, n, recipients):
        envelope = b"F" + SENDER.encode() + b"\0" + b"".join(b"T" + r.encode() + b"\0" for r in recipients) + b"\0"
        code = queue_message(self.tree, MSG % n, envelope)
        if code != 0:
            raise RuntimeError("qmail-queue exited %d" % code)

    def prepare(self):
        """Nothing to do before qmail-start starts."""

    def start_delivery(self):
        self.mail = MailSystem(self.procs, self.tree, "./Maildir/")

    def processes(self):
        """{kind: [(pid, whole subtree?)]}: qmail-send alone, each spawner with its delivery children."""
        if self.mail is None:
            return {}
        kinds = {"qmail-send": [(self.mail.pid, False)]}
        for pid in self.mail.helpers:
            name = proc_name(pid)
            sub = name in ("qmail-lspawn", "qmail-rspawn")
            kinds.setdefault(name + ("+children" if sub else ""), []).append((pid, sub))
        return kinds

    def cpu(self, user=False):
        """CPU seconds used so far by each kind of process (the delivery side started with qmail-start)."""
        return {kind: sum(subtree_cpu(pid, user) if sub else own_cpu(pid, user) for pid, sub in procs)
                for kind, procs in self.processes().items()}

    def log_tail(self, lines=15):
        if self.mail is None:
            return "(qmail-send not started)"
        return b"\n".join(self.mail.log().splitlines()[-lines:]).decode(errors="replace")

    def stop(self):
        if self.mail is not None and self.mail.proc.poll() is None:
            self.mail.stop()
        self.mail = None


class PostfixOut(Postfix):
    """A private Postfix (bench_postfix.py): qmqpd in, smtp(8) out through a transport map to the sinks."""

    name = "postfix"
    extra_services = ["smtp unix - - n - - smtp"]
    backoff = None

    def setup(self, sim):
        """main.cf: the shared settings, smtp(8) to the sinks through a transport map, no DNS, no TLS."""
        self.settings = self.base_settings(ME)
        transport = self.conf / "transport"
        transport.write_text("".join("%s smtp:[%s]:%d\n" % (d, s.host, s.port) for d, s in sim.sinks.items()))
        self.settings.update({
            "relayhost": "", "transport_maps": "texthash:%s" % transport,
            "smtp_dns_support_level": "disabled", "smtp_host_lookup": "native",
            "smtp_connect_timeout": "%ds" % TIMEOUT_CONNECT, "smtp_helo_timeout": "%ds" % TIMEOUT_REMOTE,
            "default_destination_concurrency_limit": DESTINATION_LIMIT,
            "default_process_limit": CONCURRENCY_REMOTE,
            "smtp_tls_security_level": "none",
        })
        if self.backoff is not None:
            self.settings.update({"minimal_backoff_time": "%ds" % self.backoff,
                                  "maximal_backoff_time": "%ds" % self.backoff,
                                  "queue_run_delay": "%ds" % self.backoff})

    def inject(self, n, recipients):
        if self.master is None:
            self.start_server()
        qmqp_send(self.port, MSG % n, SENDER, recipients)

    def prepare(self):
        """Stop the queueing-only instance and write the delivering configuration (untimed)."""
        self.prepare_delivery()

    def start_delivery(self):
        """Start with qmgr (which picks up incoming/ at once)."""
        self.start()


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, math.ceil(p / 100.0 * len(values)) - 1))]


def progress(text, shown=[0.0], final=False):
    if final or time.time() - shown[0] >= 2:
        shown[0] = time.time()
        print(text, file=sys.stderr, flush=True)


def delivered(records, domains):
    """Counter of recipients that arrived at the sinks of domains."""
    got = Counter()
    for d in domains:
        for t in records[d]["transactions"]:
            got.update(t["recipients"])
    return got


def run(kind, scenario, sizes, work, procs, label):
    """Set up one system and one simulator, inject the scenario's mail, deliver, measure; return a dict."""
    if scenario == 3:
        n_domains = 20
        behaviours = {}
        for k in range(n_domains):
            d = "d%d.example" % (k + 1)
            behaviours[d] = (smtpsim.mute() if k in (0, 1) else smtpsim.slow_greeting(5) if k in (2, 3)
                             else smtpsim.healthy())
    elif scenario == 2:  # issue 19's slow remotes: the singles' delay shows who waits for whom
        n_domains = sizes["domains"]
        behaviours = {"d%d.example" % (k + 1): smtpsim.slow_greeting(0.2) + smtpsim.slow_data(1.0)
                      for k in range(n_domains)}
    elif scenario == 4:
        n_domains = 1
        behaviours = {"d1.example": smtpsim.too_many(TOO_MANY4)}
    else:
        n_domains = sizes["domains"]
        behaviours = {"d%d.example" % (k + 1): smtpsim.healthy() for k in range(n_domains)}
    domains = list(behaviours)
    mute = domains[:2] if scenario == 3 else []
    slow = domains[2:4] if scenario == 3 else []
    healthy = [d for d in domains if d not in mute and d not in slow]
    sim = smtpsim.Simulator([(d, b) for d, b in behaviours.items()] + [(BOUNCES, smtpsim.healthy())],
                            prefix="127.0.1.").start()
    system = PostfixOut(work, procs) if kind == "postfix" else PyQmail(work, procs, kind.split("/")[1])
    result = {"system": kind, "scenario": scenario, "label": label}
    if scenario == 4:
        system.backoff = BACKOFF4
    try:
        system.setup(sim)
        expected = Counter()
        t_inject = time.time()
        if scenario in (1, 2):
            rcpts = ["u%d@%s" % (i, domains[i % n_domains]) for i in range(sizes["recipients"])]
            system.inject(0, rcpts)
            expected.update(rcpts)
        else:
            for i in range(sizes["messages"]):
                r = "m%d@%s" % (i, domains[i % n_domains])
                system.inject(i, [r])
                expected[r] += 1
        result["inject_s"] = time.time() - t_inject
        singles = {}
        system.prepare()
        t0 = time.time()
        system.start_delivery()
        result["start_s"] = time.time() - t0
        last_count, last_change, healthy_done, slow_done = -1, time.time(), None, None
        targets = set(healthy) if scenario == 3 else set(domains)
        want_healthy = sum(v for r, v in expected.items() if r.split("@")[1] in targets)
        while True:
            now = time.time()
            if scenario == 2 and not singles and now - t0 >= 1.0:
                for i in range(sizes["singles"]):
                    r = "single%d@%s" % (i, domains[i % n_domains])
                    system.inject(1000000 + i, [r])
                    singles[r] = time.time()
                    expected[r] += 1
                want_healthy = sum(expected.values())
            records = sim.records()
            got = delivered(records, domains)
            count = sum(got.values())
            if count != last_count:
                last_count, last_change = count, now
            in_targets = sum(v for r, v in got.items() if r.split("@")[1] in targets)
            if healthy_done is None and in_targets >= want_healthy and (scenario != 2 or singles):
                healthy_done = now
                result["mute_connections_at_done"] = sum(records[d]["connections_opened"] for d in mute)
            if scenario == 3 and slow_done is None and \
                    sum(v for r, v in got.items() if r.split("@")[1] in slow) >= \
                    sum(v for r, v in expected.items() if r.split("@")[1] in slow):
                slow_done = now
            progress("%s: %5.1fs  delivered %d/%d%s" % (
                label, now - t0, count, sum(expected.values()),
                "  (mute: %d connections)" % sum(records[d]["connections_opened"] for d in mute) if mute else ""))
            if healthy_done is not None and (scenario != 3 or slow_done is not None):
                break
            if now - last_change > STALL:
                raise RuntimeError("%s: no delivery for %d s (%d/%d); log ends:\n%s" % (
                    label, STALL, count, sum(expected.values()), system.log_tail()))
            time.sleep(0.05)
        records = sim.records()
        result["cpu"], result["user_cpu"] = system.cpu(), system.cpu(user=True)
        progress("%s: done in %.1fs" % (label, healthy_done - t0), final=True)
    finally:
        sim.stop()
        system.stop()
    got = delivered(records, domains)
    arrivals = {}
    for d in domains:
        for t in records[d]["transactions"]:
            for r in t["recipients"]:
                arrivals.setdefault(r, t["time"])
    reachable = Counter({r: v for r, v in expected.items() if r.split("@")[1] not in mute})
    result.update(
        t_done=healthy_done - t0, t_last=max(arrivals.values()) - t0 if arrivals else float("nan"),
        t_slow=(slow_done - t0) if slow_done else None,
        expected=sum(reachable.values()),
        lost=sum((reachable - got).values()), extra=sum((got - expected).values()),
        bounces=records[BOUNCES]["transaction_count"],
        sessions=sum(records[d]["connections_opened"] for d in domains if d not in mute),
        transactions=sum(records[d]["transaction_count"] for d in domains),
        rcpt_per_txn=[n for d in domains for n in records[d]["recipients_per_transaction"]],
        max_concurrent=max(records[d]["max_concurrent"] for d in domains),
        mute_connections=sum(records[d]["connections_opened"] for d in mute),
        refused_421=sum(records[d]["refused_421"] for d in domains),
        errors=sum(len(records[d]["errors"]) for d in domains))
    if singles:
        delays = [arrivals[r] - t for r, t in singles.items() if r in arrivals]
        result["single_delays"] = delays
    return result


def describe(r):
    """One line per run."""
    rpt = r["rcpt_per_txn"]
    text = "  %-14s round %d: done %6.2fs (last arrival %6.2fs)  sessions %4d  transactions %4d  rcpt/txn " \
           "mean %.1f max %d  max conc %3d" % (r["system"], r["round"], r["t_done"], r["t_last"], r["sessions"],
                                              r["transactions"], statistics.mean(rpt) if rpt else 0,
                                              max(rpt) if rpt else 0, r["max_concurrent"])
    if "single_delays" in r:
        d = r["single_delays"]
        text += "  singles p50 %.2fs p95 %.2fs max %.2fs" % (percentile(d, 50), percentile(d, 95), max(d))
    if r["scenario"] == 4:
        text += "  421 greetings %d" % r["refused_421"]
    if r["scenario"] == 3:
        text += "  slow done %.2fs  mute connections %d at done, %d at end" % (
            r["t_slow"], r["mute_connections_at_done"], r["mute_connections"])
    text += "  | start %.2fs; lost %d, extra %d, bounced %d (injection %.1fs, untimed)" % (
        r["start_s"], r["lost"], r["extra"], r["bounces"], r["inject_s"])
    delivered_n = max(1, r["expected"] - r["lost"])
    cpu, user = r.get("cpu", {}), r.get("user_cpu", {})
    text += "\n    CPU per delivered recipient: %.3f ms in all, %.3f ms in user mode" % (
        1000 * sum(cpu.values()) / delivered_n, 1000 * sum(user.get(k, 0.0) for k in cpu) / delivered_n)
    for kind, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        text += "\n      %-40s %8.3f ms  (user mode %6.3f ms)" % (
            kind, 1000 * seconds / delivered_n, 1000 * user.get(kind, 0.0) / delivered_n)
    return text


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def table(results, scenarios, systems, sizes, report):
    """The summary: medians over rounds."""
    report("")
    report("# Summary (median over rounds; every time counts from the delivery side's start command, so it"
           " includes the start, shown apart)")
    if 1 in scenarios:
        report("# (1) one message to %d recipients over %d domains" % (sizes["recipients"], sizes["domains"]))
        report("%-14s %10s %9s %9s %13s %9s" % ("system", "done (s)", "start (s)", "sessions", "rcpt/txn",
                                                "max conc"))
        for s in systems:
            rs = [r for r in results if r["scenario"] == 1 and r["system"] == s]
            if rs:
                report("%-14s %10.2f %9.2f %9d %13.1f %9d" % (
                    s, med([r["t_done"] for r in rs]), med([r["start_s"] for r in rs]), med([r["sessions"] for r in rs]),
                    med([statistics.mean(r["rcpt_per_txn"]) for r in rs]), med([r["max_concurrent"] for r in rs])))
    if 2 in scenarios:
        report("# (2) the same list, then %d single messages 1 s after the start" % sizes["singles"])
        report("%-14s %10s %9s %10s %10s %10s" % ("system", "done (s)", "start (s)", "single p50", "single p95",
                                                  "single max"))
        for s in systems:
            rs = [r for r in results if r["scenario"] == 2 and r["system"] == s]
            if rs:
                report("%-14s %10.2f %9.2f %10.2f %10.2f %10.2f" % (
                    s, med([r["t_done"] for r in rs]), med([r["start_s"] for r in rs]), med([percentile(r["single_delays"], 50) for r in rs]),
                    med([percentile(r["single_delays"], 95) for r in rs]),
                    med([max(r["single_delays"]) for r in rs])))
    if 3 in scenarios:
        report("# (3) %d messages over 20 domains, 2 mute, 2 greeting after 5 s" % sizes["messages"])
        report("%-14s %12s %9s %12s %16s %9s" % ("system", "16 healthy", "start (s)", "2 slow done",
                                                  "mute connections", "sessions"))
        for s in systems:
            rs = [r for r in results if r["scenario"] == 3 and r["system"] == s]
            if rs:
                report("%-14s %11.2fs %9.2f %11.2fs %16d %9d" % (
                    s, med([r["t_done"] for r in rs]), med([r["start_s"] for r in rs]), med([r["t_slow"] for r in rs]),
                    med([r["mute_connections_at_done"] for r in rs]), med([r["sessions"] for r in rs])))
    if 4 in scenarios:
        report("# (4) %d messages to one destination greeting 421 above %d connections (retry after %d s)"
               % (sizes["messages"], TOO_MANY4, BACKOFF4))
        report("%-14s %10s %9s %9s %14s %9s" % ("system", "done (s)", "start (s)", "sessions", "421 greetings",
                                                "max conc"))
        for s in systems:
            rs = [r for r in results if r["scenario"] == 4 and r["system"] == s]
            if rs:
                report("%-14s %10.2f %9.2f %9d %14d %9d" % (
                    s, med([r["t_done"] for r in rs]), med([r["start_s"] for r in rs]),
                    med([r["sessions"] for r in rs]), med([r["refused_421"] for r in rs]),
                    med([r["max_concurrent"] for r in rs])))
    report("# CPU per delivered recipient, ms (median; all processes of the delivery side, the sinks excluded)")
    report("%-14s %s" % ("system", " ".join("%14s" % ("scenario %d" % sc) for sc in scenarios)))
    for s in systems:
        cells = []
        for sc in scenarios:
            rs = [r for r in results if r["scenario"] == sc and r["system"] == s and "cpu" in r]
            cells.append("%14.3f" % med([1000 * sum(r["cpu"].values()) / max(1, r["expected"] - r["lost"])
                                         for r in rs]) if rs else "%14s" % "-")
        report("%-14s %s" % (s, " ".join(cells)))
    bad = [r for r in results if r["lost"] or r["extra"] or r["bounces"] or r["errors"]]
    report("# deliveries checked at the sinks: %s" % (
        "every run: 0 lost, 0 duplicated, 0 bounced" if not bad else
        "PROBLEMS in %d runs: %s" % (len(bad), ", ".join("%s (%d) lost %d extra %d bounced %d" % (
            r["system"], r["scenario"], r["lost"], r["extra"], r["bounces"]) for r in bad))))
    return not bad


def chart(results, scenarios, systems, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = []
    if 1 in scenarios:
        panels.append(("(1) one message, many recipients:\ntime until all delivered (s)", 1,
                       lambda r: r["t_done"]))
    if 2 in scenarios:
        panels.append(("(2) singles behind the list:\np95 delay (s)", 2,
                       lambda r: percentile(r["single_delays"], 95)))
    if 3 in scenarios:
        panels.append(("(3) 2 mute + 2 slow of 20 domains:\ntime until the 16 healthy are done (s)", 3,
                       lambda r: r["t_done"]))
    if 4 in scenarios:
        panels.append(("(4) one destination, 421 above %d:\ntime until all delivered (s)" % TOO_MANY4, 4,
                       lambda r: r["t_done"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    colours = ["#4c72b0", "#55a868", "#c44e52", "#8172b2"]
    for ax, (name, sc, value) in zip(axes[0], panels):
        meds, points = [], []
        shown = [s for s in systems if any(r["scenario"] == sc and r["system"] == s for r in results)]
        for k, s in enumerate(shown):
            vals = [value(r) for r in results if r["scenario"] == sc and r["system"] == s]
            meds.append(med(vals))
            points.append(vals)
        ax.bar(range(len(shown)), meds, color=[colours[systems.index(x) % len(colours)] for x in shown])
        for k, vals in enumerate(points):
            ax.plot([k] * len(vals), vals, "k.", markersize=5)
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels(shown, fontsize=8)
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=0.5,
                        help="sizes times this; 1 is issue 19's full size (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, the systems' order alternating"
                        " (default %(default)s)")
    parser.add_argument("--scenarios", default="1,2,3,4", help="comma-separated, of 1,2,3,4 (default %(default)s)")
    parser.add_argument("--systems", default="pyqmail/qmail,pyqmail/oqmgr,pyqmail/qmgr,postfix",
                        help="comma-separated (default %(default)s)")
    parser.add_argument("--out", default="docs/benchmarks-outbound.txt",
                        help="results file; the chart goes beside it as .png (default %(default)s)")
    args = parser.parse_args()
    scenarios = [int(x) for x in args.scenarios.split(",")]
    systems = args.systems.split(",")
    if set(scenarios) - {1, 2, 3, 4} or set(systems) - {"pyqmail/qmail", "pyqmail/oqmgr", "pyqmail/qmgr", "postfix"}:
        parser.error("unknown scenario or system")
    if "postfix" in systems and (not ROOT or not shutil.which("postfix")):
        sys.exit("bench_outbound: postfix needs root and Debian's postfix package")
    s = args.scale
    sizes = {"recipients": max(2, round(5000 * s)), "domains": max(2, round(50 * s)),
             "singles": max(5, round(200 * s)), "messages": max(20, round(1000 * s))}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    procs = Processes()
    base = Path(tempfile.mkdtemp(prefix="pyqmail-outbound-"))
    os.chmod(base, 0o755)
    lines, results = [], []

    def report(text):
        print(text, flush=True)
        lines.append(text)
    start = time.time()
    try:
        report("# Outbound benchmark (issue 19), %s, %s, %d cores, load average %.1f" % (
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.uname().nodename, os.cpu_count(),
            os.getloadavg()[0]))
        report("# command: scripts/bench-outbound %s (scale %g: %d recipients over %d domains, %d singles, "
               "%d messages over 20 domains)" % (" ".join(sys.argv[1:]), s, sizes["recipients"],
                                                 sizes["domains"], sizes["singles"], sizes["messages"]))
        report("# sinks: tests/smtpsim.py on 127.0.1.x, one per domain, in this process; pyqmail routes by "
               "control/smtproutes, Postfix by a transport map (texthash, smtp:[127.0.1.k]:port), no DNS")
        report("# pyqmail: concurrencyremote %d, timeoutconnect %d, timeoutremote %d, qmgr defaults (initial "
               "window 5, limit 20, 50 recipients per transaction); Postfix %s: default_process_limit %d, "
               "default_destination_concurrency_limit %d, initial_destination_concurrency 5 (default), "
               "smtp_destination_recipient_limit 50 (default), smtp_connect_timeout %ds, smtp_helo_timeout %ds"
               % (CONCURRENCY_REMOTE, TIMEOUT_CONNECT, TIMEOUT_REMOTE, postfix_version(), CONCURRENCY_REMOTE,
                  DESTINATION_LIMIT, TIMEOUT_CONNECT, TIMEOUT_REMOTE))
        report("# each run: fresh tree/instance and sinks; mail injected with delivery stopped (untimed), "
               "times from the start of the delivery side (qmail-start until qmail-send's first status line; "
               "postfix start with qmgr until master runs and the QMQP port answers): the start is part of each time")
        for sc in scenarios:
            report("")
            report("# scenario %d" % sc)
            for rnd in range(args.rounds):
                order = systems if rnd % 2 == 0 else systems[::-1]
                if sc == 4:
                    order = [k for k in order if k != "pyqmail/qmail"]  # its fixed retry schedule (~400 s)
                for kind in order:
                    work = base / ("%d-%d-%s" % (sc, rnd, kind.replace("/", "-")))
                    work.mkdir()
                    os.chmod(work, 0o755)
                    label = "(%d) %s round %d" % (sc, kind, rnd)
                    r = run(kind, sc, sizes, work, procs, label)
                    r["round"] = rnd
                    results.append(r)
                    report(describe(r))
    except KeyboardInterrupt:
        print("\nbench_outbound: interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(base, ignore_errors=True)
        note_freed()  # as the other benchmarks do: a following one waits for the freed inodes
    ok = table(results, scenarios, systems, sizes, report)
    report("# %.0f s in all; load average at the end: %.1f" % (time.time() - start, os.getloadavg()[0]))
    Path(args.out).write_text("\n".join(lines) + "\n")
    png = Path(args.out).with_suffix(".png")
    chart(results, scenarios, systems, png, "outbound SMTP to smtpsim, scale %g, %d rounds; %s, %d cores, %s" % (
        s, args.rounds, os.uname().nodename, os.cpu_count(), time.strftime("%Y-%m-%d", time.gmtime())))
    print("written to %s and %s" % (args.out, png), file=sys.stderr)
    return 0 if ok else 1


def postfix_version():
    r = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
