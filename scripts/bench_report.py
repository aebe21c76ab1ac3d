"""Reporting for the end-to-end benchmark: per-run details, the summary table with ratios, the PNG chart."""

import os
from statistics import median

from bench_procs import machine_shares

# Issue 4's figures for notqmail 1.09 under tcpserver (quiet period, this machine kind). notqmail is in
# no package registry reachable here, so it is never run: a reference line, not a measurement.
NOTQMAIL = {1: 315, 5: 350, 20: 350}
NOTQMAIL_CPU_MS = 4.3
NOTQMAIL_LABEL = "notqmail 1.09 (issue 4's figure, NOT measured in this run)"
POSTFIX = "postfix"
LEGEND = {POSTFIX: "Postfix 3.7, private instance (measured)",
          "pyqmail/tcpserver": "pyqmail, qmail-qmqpd under tcpserver (measured)",
          "pyqmail/qmail-tcpserver": "pyqmail, qmail-qmqpd under qmail-tcpserver (measured)"}
COLORS = {POSTFIX: "tab:blue", "pyqmail/tcpserver": "tab:green", "pyqmail/qmail-tcpserver": "tab:orange"}


def mb(kb):
    """kB as MB with one decimal."""
    return "%.1f" % (kb / 1024)


def ms(value):
    """Milliseconds with one decimal, or '-'."""
    return "-" if value is None else "%.1f" % value


def user_total(r):
    """CPU seconds of the run's processes in user mode, or None where the run did not record them."""
    user = r.get("user_cpu")
    return sum(user.get(k, 0.0) for k in r["cpu"]) if user else None


def report_run(r, report):
    """Report lines for one run."""
    n = r["messages"]
    per = r["delivered"]  # CPU per message: over every message handled, the probes included
    report("%s, qmqp-source -c -s %d -m %d -l 2048%s%s: %d delivered" % (
        r["label"], r["sessions"], n, ", delivery started after all were queued" if r["drain"] else "",
        ", round %d" % (r["round"] + 1) if r.get("round") else "", r["delivered"]))
    report("  accepted:   %6.1f msg/s (qmqp-source %.1f s%s)" % (
        r["accept_rate"], r["accept_s"], ", nothing delivering" if r["drain"] else ""))
    if r["drain"]:
        report("  delivered:  %6.1f msg/s (%d messages, first to last Maildir file; the first %.2f s and the"
               " last %.1f s after starting the delivery side)"
               % (r["e2e_rate"], r["delivered"], r["first_delivery_s"], r["e2e_s"]))
    else:
        report("  end to end: %6.1f msg/s (%d messages, start of qmqp-source to last Maildir file %.1f s;"
               " first after %.2f s)" % (r["e2e_rate"], r["delivered"], r["e2e_s"], r["first_delivery_s"]))
    lat = r.get("latency")
    if lat:
        report("  acceptance latency (probe, connect to reply): p50 %s ms, p99 %s ms, max %s ms over %d probes%s"
               % (ms(lat["p50_ms"]), ms(lat["p99_ms"]), ms(lat["max_ms"]), lat["accepted"],
                  "; %d FAILED: %s" % (lat["failed"], lat["errors"]) if lat["failed"] else ""))
    total = sum(r["cpu"].values())
    busy = 100 * total / r["e2e_s"] / os.cpu_count()
    report("  CPU per message (over the %d delivered): %.1f ms in all%s (%.0f%% of %d cores over that time)%s"
           % (per, 1000 * total / per, " delivering" if r["drain"] else "", busy, os.cpu_count(),
              "" if r["drain"] else "; qmqp-source itself %.1f ms" % (1000 * r["client_cpu"] / n)))
    if "own_cpu" in r:
        report("  the benchmark's own CPU meanwhile (sampling /proc, probes): %.2f ms per message"
               % (1000 * r["own_cpu"] / per))
    user, in_user = r.get("user_cpu") or {}, user_total(r)
    if in_user is not None:
        report("  of which in user mode (the programs' own code): %.2f ms; in the kernel: %.2f ms"
               % (1000 * in_user / per, 1000 * (total - in_user) / per))
    for kind, seconds in sorted(r["cpu"].items(), key=lambda kv: -kv[1]):
        report("    %-30s %5.2f ms  (%4.1f%%)%s" % (
            kind, 1000 * seconds / per, 100 * seconds / max(total, 1e-9),
            "  user mode %5.2f ms" % (1000 * user[kind] / per) if kind in user else ""))
    d = r.get("disk")
    if d:
        report("  the disk (whole device, over the run): %.1f block writes, %.1f cache flushes and %.2f reads"
               " per message; busy %.2f ms per message%s" % (
                   d.writes / per, d.flushes / per, d.reads / per, d.busy_ms / per,
                   " (%.0f%% of the run)" % (100 * d.busy_ms / 1000 / r["e2e_s"]) if r.get("e2e_s") else ""))
    shares = machine_shares(r["machine"]) if r.get("machine") else None
    if shares:  # steal: the host's other guests
        report("  the whole machine over the run: busy %.0f%%, idle %.0f%%, iowait %.0f%%, steal %.0f%% of its CPU"
               " time" % tuple(100 * x for x in shares))
    m = r["memory"]
    report("  peak memory: sum of Pss %s MB, sum of VmRSS %s MB (sampled every 0.5 / 0.1 s);"
           " largest VmHWM %s MB (%s)" % (mb(m["pss_sum"]), mb(m["rss_sum"]), mb(m["hwm_max"]), m["hwm_kind"]))
    report("  %s: %s" % (r["log_name"], ", ".join("%s %d" % kv for kv in sorted(r["log"].items()))))
    for line in r["profile"]:
        report("  " + line)


def ratio(a, b):
    """a/b as '0.42x', or '-'."""
    return "%.2fx" % (a / b) if a and b else "-"


def steal(r):
    """The share of the machine's CPU time the host took (steal) over run r, or 0 if not recorded."""
    shares = machine_shares(r["machine"]) if r.get("machine") else None
    return shares[3] if shares else 0.0


STEAL_MAX = 0.05  # a round where either run lost more of the machine to the host is left out of the median


def rounds_summary(runs, report):
    """With several rounds: each round's end-to-end ratio to Postfix, per system and -s, and the median of
    the rounds in which neither run lost over STEAL_MAX of the machine to the host."""
    postfix = {(r["sessions"], r.get("round", 0)): r for r in runs if r["label"] == POSTFIX}
    report("")
    report("| system | -s | end to end ÷ Postfix, each round (host's steal over 5 %: *) | median | median of"
           " the rounds without * |")
    report("| --- | --- | --- | --- | --- |")
    for label in sorted({r["label"] for r in runs} - {POSTFIX}):
        for s in sorted({r["sessions"] for r in runs}):
            pairs = [(r, postfix[(s, r.get("round", 0))]) for r in runs
                     if r["label"] == label and r["sessions"] == s and (s, r.get("round", 0)) in postfix]
            if not pairs:
                continue
            rounds = [(r["e2e_rate"] / pf["e2e_rate"], max(steal(r), steal(pf)) <= STEAL_MAX) for r, pf in pairs]
            clean = [q for q, ok in rounds if ok]
            report("| %s | %d | %s | %.2fx | %s |" % (
                label, s, ", ".join("%.2fx%s" % (q, "" if ok else "*") for q, ok in rounds),
                median([q for q, _ in rounds]), "%.2fx" % median(clean) if clean else "-"))


def summary(results, report):
    """The summary table (markdown) of the load runs, with the ratios to Postfix and to notqmail's figures."""
    runs = [r for r in results if not r["drain"]]
    postfix = {(r["sessions"], r.get("round", 0)): r for r in runs if r["label"] == POSTFIX}
    several = any(r.get("round") for r in runs)  # then each row's system is followed by its round, #1 ...
    report("")
    report("| system | -s | accepted msg/s | end to end msg/s | accept latency p50 / p99 ms | CPU ms/msg (user mode) |"
           " peak Pss sum / RSS sum / largest HWM MB | ÷ Postfix: accepted / end to end |"
           " end to end ÷ notqmail's figure |")
    report("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        pf, lat, m = postfix.get((r["sessions"], r.get("round", 0))), r["latency"], r["memory"]
        vs_pf = "-" if pf is None or r is pf else "%s / %s" % (ratio(r["accept_rate"], pf["accept_rate"]),
                                                               ratio(r["e2e_rate"], pf["e2e_rate"]))
        in_user = user_total(r)
        report("| %s | %d | %.0f | **%.0f** | %s / %s | %.2f%s | %s / %s / %s | %s | %s |" % (
            r["label"] + (" #%d" % (r["round"] + 1) if several else ""), r["sessions"], r["accept_rate"],
            r["e2e_rate"], ms(lat["p50_ms"]), ms(lat["p99_ms"]),
            1000 * sum(r["cpu"].values()) / r["delivered"],
            " (%.2f)" % (1000 * in_user / r["delivered"]) if in_user is not None else "",
            mb(m["pss_sum"]), mb(m["rss_sum"]),
            mb(m["hwm_max"]), vs_pf, ratio(r["e2e_rate"], NOTQMAIL.get(r["sessions"]))))
    for s in sorted({r["sessions"] for r in runs}):
        if s in NOTQMAIL:
            report("| %s | %d | - | ~%d | - | ~%.1f | - | - | (reference) |" % (
                NOTQMAIL_LABEL, s, NOTQMAIL[s], NOTQMAIL_CPU_MS))
    if several:
        rounds_summary(runs, report)
    drains = [r for r in results if r["drain"]]
    if drains:
        report("")
        report("Delivery alone (drain): " + "; ".join(
            "%s %.0f msg/s at %.2f ms CPU per message" % (r["label"], r["e2e_rate"],
                                                        1000 * sum(r["cpu"].values()) / r["delivered"])
            for r in drains))


def chart(results, path, title):
    """Write a PNG: grouped bars of end-to-end msg/s per -s for each system, and notqmail's figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results if not r["drain"]]
    sessions = sorted({r["sessions"] for r in runs})
    present = {r["label"] for r in runs}
    labels = [label for label in LEGEND if label in present] + sorted(present - set(LEGEND))
    rate = {}  # with several rounds, each bar is the median run's
    for r in runs:
        rate.setdefault((r["label"], r["sessions"]), []).append(r["e2e_rate"])
    rate = {key: median(values) for key, values in rate.items()}
    series = [(LEGEND.get(label, label), [rate.get((label, s), 0) for s in sessions],
               [ratio(rate.get((label, s)), rate.get((POSTFIX, s))) for s in sessions] if label != POSTFIX
               else None, {"color": COLORS.get(label)}) for label in labels]
    series.append((NOTQMAIL_LABEL, [NOTQMAIL.get(s, 0) for s in sessions], None,
                   {"color": "white", "edgecolor": "dimgray", "hatch": "//"}))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=100)
    for k, (label, values, ratios, style) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(sessions))]
        bars = ax.bar(xs, values, width * 0.95, label=label, **style)
        texts = ["%.0f" % v if v else "" for v in values]
        if ratios:  # the measured ratio to Postfix under each pyqmail bar's figure
            texts = ["%s\n(%s)" % (t, q) if t and q != "-" else t for t, q in zip(texts, ratios)]
        ax.bar_label(bars, labels=texts, fontsize=8, padding=2)
    ax.set_xticks(range(len(sessions)))
    ax.set_xticklabels(["qmqp-source -s %d" % s for s in sessions])
    ax.set_ylabel("messages per second, QMQP in to Maildir file (end to end)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_ylim(0, max(max(v) for _, v, _, _ in series) * 1.3)
    ax.grid(axis="y", alpha=0.3)
    fig.text(0.01, 0.01, "(0.25x): that pyqmail bar's rate divided by Postfix's at the same -s in this run"
             " (several rounds: each bar is the median of its rounds)."
             " Hatched: issue 4's figures for notqmail on this machine kind, for reference only.", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
