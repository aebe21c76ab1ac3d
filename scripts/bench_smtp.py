"""SMTP benchmark (issues 5 and 23): Postfix's smtp-source into pyqmail's qmail-smtpd and into a private Postfix's
smtpd, into the queue and end to end into a Maildir, alternating rounds in one run.

Usage: python scripts/bench_smtp.py [--cases 20,5,20x10:300] [-m 1000] [--modes queue,e2e] [--rounds 3]
       [--listener qmail-tcpserver] [--systems pyqmail,pyqmail:NAME=VALUE,postfix] [--control NAME=VALUE]
       [--profile] [--scheduler S] [--keep] [--no-settle] [--out docs/benchmarks-smtp.txt]
Run through scripts/bench-smtp, which installs everything first. Needs root (qmail's accounts, Postfix).

A case is SESSIONS[xRECIPIENTS][t][:MESSAGES]: `smtp-source -c -s SESSIONS -r RECIPIENTS -m MESSAGES -l 2048`
(with t, scripts/smtp_tls_source.py, the same load with STARTTLS: smtp-source has none),
one message per connection (smtp-source's default), recipients bench@, 2bench@ ... RECIPIENTSbench@ of
bench.example, every one delivered into the same Maildir. For each case, mode and round, each system runs
on a fresh tree (the order alternating between rounds), and the run ends when every message is queued
(mode queue: nothing delivers; pyqmail without qmail-send, Postfix without qmgr) or when every recipient's
copy is a file in Maildir/new and the queue is empty (mode e2e).

  pyqmail   the tree of scripts/bench-e2e (tests/mailsystem.py: qmail's accounts, deliveries as nobody);
            qmail-smtpd under qmail-tcpserver -c 100 running as the queue's owner, so that its reused
            workers queue in their own process; no control/rcpthosts (every domain), as Postfix's
            mynetworks = 127.0.0.0/8 lets loopback relay
  postfix   bench_postfix's private instance with smtpd on loopback instead of qmqpd, no peer name lookup
            (tcpserver -H -R), virtual(8) delivery of every recipient into the Maildir

Both fsync every message before the 250 and every Maildir file before reporting it delivered.
The results file gets every run (rate, CPU per message by process) and a summary of the medians
with their ratios; the PNG chart goes beside it.
"""

import argparse
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
from bench_e2e import (Acceptance, PyQmail, accept_only, code_version, control_files, control_label, show,  # noqa: E402
                       wait_delivered, workdir)
from bench_postfix import DOMAIN, RECIPIENT, Postfix  # noqa: E402
from bench_procs import (disk_counts, disk_delta, machine_cpu, machine_shares, remove_tree, spread_runs,  # noqa: E402
                         wait_for_settled_frees)
from bench_qmqp import children_cpu  # noqa: E402
from conftest import Processes, tcpserver  # noqa: E402
from mailsystem import assign_users  # noqa: E402

ROOT = os.geteuid() == 0
LOCAL = RECIPIENT.split("@")[0]
MOST_RECIPIENTS = 50  # recipients per message a case may ask for (each needs a users/assign entry)


def recipients(count):
    """The recipients smtp-source -r count sends to: bench@ and 2bench@ ... count bench@ (-r prepends numbers)."""
    return [RECIPIENT] + ["%d%s" % (n, RECIPIENT) for n in range(2, count + 1)]


class PyQmailSmtp(PyQmail):
    """bench_e2e's pyqmail with qmail-smtpd in place of qmail-qmqpd and every -r recipient assigned."""

    tls = None  # the PEM file (certificate and key) for STARTTLS, or None

    def setup(self):
        """The e2e tree, and users/assign entries for every recipient a case may use, into one Maildir;
        control/servercert.pem for a TLS case."""
        super().setup()
        assign_users(self.tree, [("=", r.split("@")[0], str(self.home), "", "") for r in recipients(MOST_RECIPIENTS)])
        if self.tls:
            shutil.copy(self.tls, self.tree / "control" / "servercert.pem")

    def start_server(self):
        """qmail-smtpd under the listener, as the queue's owner (in-process queueing) when root."""
        from bench_procs import ProcSampler
        ids = []
        if self.queue_owner:
            st = (self.tree / "queue").stat()
            ids = ["-u", str(st.st_uid), "-g", str(st.st_gid)]
        server = self.listener if self.listener == "tcpserver" else str(Path(sys.executable).parent / self.listener)
        self.port = tcpserver(self.procs, self.tree, [str(self.tree / "bin" / "qmail-smtpd")],
                              options=["-c", "100", *ids], server=server)
        self.server = self.procs.procs[-1]
        self.sampler = ProcSampler(self.roots)

    def processes(self):
        """bench_e2e's kinds, the server's named for qmail-smtpd."""
        kinds = super().processes()
        old = next(k for k in kinds if "+qmail-qmqpd" in k)
        kinds[old.replace("qmail-qmqpd", "qmail-smtpd")] = kinds.pop(old)
        return kinds


class PostfixSmtp(Postfix):
    """bench_postfix's private instance with smtpd on the port instead of qmqpd, loopback trusted (mynetworks)."""

    tls = None  # the PEM file (certificate and key) for STARTTLS, or None

    def setup(self):
        """bench_postfix's settings, smtpd's, and every recipient a case may use in the Maildir map; for a TLS
        case, smtpd_tls_security_level may with the certificate, and tlsmgr."""
        super().setup()
        if self.tls:
            self.settings.update({"smtpd_tls_cert_file": self.tls, "smtpd_tls_key_file": self.tls,
                                  "smtpd_tls_security_level": "may"})
            self.extra_services = ["tlsmgr unix - - n 1000? 1 tlsmgr"]
        self.settings.update({
            "mynetworks": "127.0.0.0/8", "smtpd_peername_lookup": "no", "smtpd_client_restrictions": "",
            "virtual_mailbox_maps": "inline:{ %s }" % ", ".join("%s=Maildir/" % r for r in recipients(MOST_RECIPIENTS)),
        })

    def write_config(self, delivering):
        """master.cf with smtpd where bench_postfix has qmqpd."""
        super().write_config(delivering)
        master = self.conf / "master.cf"
        master.write_text(master.read_text().replace("inet n - n - - qmqpd", "inet n - n - - smtpd"))


class SmtpSource(Acceptance):
    """smtp-source -c (or scripts/smtp_tls_source.py, its load with STARTTLS), followed as bench_e2e follows
    qmqp-source."""

    def __init__(self, started, port, sessions, messages, rcpts, tls=False):
        self.accepted = 0
        self.ended = None  # when the client's output closed (follow)
        self.started = started
        self.cpu_before = children_cpu()
        self.t0 = time.time()
        source = [sys.executable, os.path.join(HERE, "smtp_tls_source.py")] if tls else ["smtp-source"]
        self.proc = started.start([*source, "-c", "-s", str(sessions), "-m", str(messages), "-r", str(rcpts),
                                   "-l", "2048", "-M", "client.example", "-f", "sender@" + DOMAIN, "-t", RECIPIENT,
                                   "127.0.0.1:%d" % port], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        import threading
        self.reader = threading.Thread(target=self.follow, daemon=True)
        self.reader.start()


def profile_start(started, system, work):
    """py-spy on the listener and its workers (--subprocesses) for the run; return (Popen, raw output path)."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not spy:
        print("  (py-spy not installed: no profile)", file=sys.stderr)
        return None
    path = work / "profile.txt"
    p = started.start([spy, "record", "--pid", str(system.server.pid), "--subprocesses", "--rate", "500",
                       "--format", "raw", "--nonblocking", "--duration", "600", "--output", str(path)],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)  # py-spy attaches to every process of the tree
    return p, path


WAITING = ("Worker.run (", "Listener.run (")  # the workers' accept and the listener's poll: no connection to serve


def profile_summary(started, spy, top=20):
    """Stop py-spy; return report lines: where the workers' busy samples (on CPU or in a system call such as
    fsync or poll for the client's next command) went, by source line, own and inclusive."""
    from collections import Counter
    p, path = spy
    started.stop(p, signal.SIGINT, timeout=20)  # py-spy writes its output on SIGINT
    if not path.exists():
        return ["profile: py-spy wrote nothing (ptrace not allowed?)"]
    own, incl, total = Counter(), Counter(), 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f.split("site-packages/pyqmail/")[-1] for f in stack.split(";")
                  if not f.startswith(("process ", "thread "))]  # py-spy's heads: which process and thread
        if not n.isdigit() or not frames or frames[-1].startswith(WAITING):
            continue
        total += int(n)
        own[frames[-1]] += int(n)
        for f in set(frames):
            incl[f] += int(n)
    lines = ["profile of qmail-tcpserver and its qmail-smtpd workers (py-spy --subprocesses, 500 Hz, wall time"
             " not waiting for a connection: %d samples), by source line:" % total, "  own:"]
    lines += ["    %5.1f%%  %s" % (100 * n / max(total, 1), f) for f, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += ["    %5.1f%%  %s" % (100 * n / max(total, 1), f) for f, n in incl.most_common(top + 10)]
    return lines


def measure(make, label, work, started, case, e2e, profile=False, cert=None):
    """One run: set up and start the system, send the case's messages; return the results as a dict."""
    sessions, rcpts, messages, tls = case
    system = make(work, started)
    system.tls = str(cert) if tls else None
    system.setup()
    title = "%s %s -s %d -r %d -m %d" % (label, "e2e" if e2e else "queue", sessions, rcpts, messages)
    spy = None
    try:
        system.start_server()
        if e2e:
            system.start_delivery()
        if profile:
            spy = profile_start(started, system, work)
        cpu0, user0, machine0, disk0 = system.cpu(), system.cpu(user=True), machine_cpu(), disk_counts(work)
        source = SmtpSource(started, system.port, sessions, messages, rcpts, tls)
        if e2e:
            accept = wait_delivered(system, title, lambda: messages * rcpts, source.t0, source)
            time.sleep(0.3)  # the spawners reap their last children, qmail-clean finishes
            files = sorted(e.stat().st_mtime for e in os.scandir(system.delivered_dir()))
            seconds = files[-1] - source.t0
        else:
            accept = accept_only(system, source, title, messages)
            seconds = accept[0]
        cpu1, user1, machine = system.cpu(), system.cpu(user=True), [b - a for a, b in zip(machine0, machine_cpu())]
        disk = disk_delta(disk0, disk_counts(work))
        profiled = profile_summary(started, spy) if spy else []
    finally:
        system.stop()
    if accept[1] != 0:
        raise RuntimeError("smtp-source exited %d: %s" % (accept[1], accept[2]))
    return {"label": label, "case": case, "mode": "e2e" if e2e else "queue", "rate": messages / seconds,
            "seconds": seconds, "accept_s": accept[0], "client_cpu": accept[3],
            "cpu": {k: cpu1.get(k, 0.0) - cpu0.get(k, 0.0) for k in cpu1},
            "user_cpu": {k: user1.get(k, 0.0) - user0.get(k, 0.0) for k in user1}, "machine": machine,
            "disk": disk, "profile": profiled}


def case_name(case):
    """'-s 20 -r 10' for a case, ' STARTTLS' after a TLS case."""
    return "-s %d" % case[0] + (" -r %d" % case[1] if case[1] > 1 else "") + (" STARTTLS" if case[3] else "")


def report_run(r, report):
    """Lines for one run: the rate, then CPU per message by process."""
    messages = r["case"][2]
    total = sum(r["cpu"].values())
    shares = machine_shares(r["machine"])
    report("%s, %s, %s %s -m %d%s: %.1f msg/s (%.2f s; the client %.2f s, %.2f ms of its CPU per message);"
           " machine busy %.0f%%, steal %.0f%%" % (
               r["label"], r["mode"], "smtp_tls_source" if r["case"][3] else "smtp-source", case_name(r["case"]), messages, ", round %d" % (r["round"] + 1),
               r["rate"], r["seconds"], r["accept_s"], 1000 * r["client_cpu"] / messages,
               100 * shares[0] if shares else 0, 100 * shares[3] if shares else 0))
    report("  CPU per message: %.2f ms in all, %.2f ms in user mode" % (
        1000 * total / messages, 1000 * sum(r["user_cpu"].get(k, 0.0) for k in r["cpu"]) / messages))
    for kind, seconds in sorted(r["cpu"].items(), key=lambda kv: -kv[1]):
        if seconds >= 0.0005:
            report("    %-42s %6.3f ms  (user mode %6.3f ms)" % (
                kind, 1000 * seconds / messages, 1000 * r["user_cpu"].get(kind, 0.0) / messages))
    d = r.get("disk")
    if d:  # the whole device: other processes' writes count too (the machine should be quiet)
        report("  the disk (whole device, over the run): %.1f block writes, %.1f cache flushes, %.2f discards per"
               " message; busy %.2f ms per message (%.0f%% of the run)" % (
                   d.writes / messages, d.flushes / messages, d.discards / messages, d.busy_ms / messages,
                   100 * d.busy_ms / 1000 / r["seconds"]))
    for line in r["profile"]:
        report("  " + line)


def summary(results, report):
    """The medians per case, mode and system, and each pyqmail system's ratio to Postfix's median."""
    report("")
    report("| case | mode | system | msg/s, each round | median msg/s | CPU ms/msg (median) | ÷ Postfix (median)"
           " | ÷ Postfix, each round |")
    report("| --- | --- | --- | --- | --- | --- | --- | --- |")
    keys = []
    for r in results:
        if (r["case"], r["mode"]) not in keys:
            keys.append((r["case"], r["mode"]))
    for case, mode in keys:
        runs = [r for r in results if (r["case"], r["mode"]) == (case, mode)]
        pf = {r["round"]: r for r in runs if r["label"] == "postfix"}
        pf_median = median(r["rate"] for r in pf.values()) if pf else None
        for label in sorted({r["label"] for r in runs}, key=lambda x: x == "postfix"):
            mine = [r for r in runs if r["label"] == label]
            rate = median(r["rate"] for r in mine)
            cpu = median(1000 * sum(r["cpu"].values()) / r["case"][2] for r in mine)
            each = ["%.2fx" % (r["rate"] / pf[r["round"]]["rate"]) for r in mine if r["round"] in pf]
            report("| %s | %s | %s | %s | **%.0f** | %.2f | %s | %s |" % (
                case_name(case), mode, label, ", ".join("%.0f" % r["rate"] for r in mine), rate, cpu,
                "%.2fx" % (rate / pf_median) if pf_median and label != "postfix" else "-",
                ", ".join(each) if label != "postfix" else "-"))


def chart(results, path, title):
    """Grouped bars: median msg/s per case and mode for each system, the ratio to Postfix under pyqmail's."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = []
    for r in results:
        if (r["case"], r["mode"]) not in groups:
            groups.append((r["case"], r["mode"]))
    labels = sorted({r["label"] for r in results}, key=lambda x: (x != "postfix", x))
    rate = {}
    for r in results:
        rate.setdefault((r["label"], r["case"], r["mode"]), []).append(r["rate"])
    rate = {k: median(v) for k, v in rate.items()}
    colors = {"postfix": "tab:blue", "pyqmail/qmail-tcpserver": "tab:orange", "pyqmail/tcpserver": "tab:green"}
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=100)
    for k, label in enumerate(labels):
        values = [rate.get((label, c, m), 0) for c, m in groups]
        xs = [i + (k - (len(labels) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, values, width * 0.95, label=label, color=colors.get(label))
        texts = []
        for (c, m), v in zip(groups, values):
            pf = rate.get(("postfix", c, m))
            texts.append("%.0f" % v + ("\n(%.2fx)" % (v / pf) if label != "postfix" and pf and v else ""))
        ax.bar_label(bars, labels=texts, fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(["%s\n%s" % (case_name(c), "into the queue" if m == "queue" else "into a Maildir")
                        for c, m in groups], fontsize=8)
    ax.set_ylabel("messages per second (median of the rounds)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_ylim(0, max(rate.values()) * 1.3)
    ax.grid(axis="y", alpha=0.3)
    fig.text(0.01, 0.01, "(0.50x): that bar's median divided by Postfix's median for the same case and mode, same run;"
             " the machine was shared with other work.", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def parse_cases(text, messages):
    """'20,5,20x10:300,20t' -> [(20, 1, m, False), (5, 1, m, False), (20, 10, 300, False), (20, 1, m, True)]:
    a t after the numbers asks for STARTTLS (scripts/smtp_tls_source.py instead of smtp-source)."""
    cases = []
    for part in text.split(","):
        head, _, m = part.partition(":")
        tls = head.endswith("t")
        s, _, r = head.rstrip("t").partition("x")
        rcpts = int(r) if r else 1
        if not 1 <= rcpts <= MOST_RECIPIENTS:
            sys.exit("bench_smtp: recipients per message: 1 to %d" % MOST_RECIPIENTS)
        cases.append((int(s), rcpts, int(m) if m else messages, tls))
    return cases


def main():
    """Measure every case, mode and round on every system; write the report and the chart."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="20,5,20x10:300", help="SESSIONS[xRECIPIENTS][:MESSAGES],... (%(default)s)")
    p.add_argument("-m", "--messages", type=int, default=1000, help="messages per run (default %(default)s)")
    p.add_argument("--modes", default="queue,e2e", help="queue and/or e2e (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="runs per case, mode and system (default %(default)s)")
    p.add_argument("--systems", default="pyqmail,postfix",
                   help="pyqmail and/or postfix; pyqmail:NAME=VALUE[:NAME=VALUE] is a pyqmail variant with those"
                        " control files, e.g. pyqmail,pyqmail:concurrencylocal=20,postfix (default %(default)s)")
    p.add_argument("--listener", default="qmail-tcpserver",
                   help="what runs pyqmail's qmail-smtpd: qmail-tcpserver and/or tcpserver (default %(default)s)")
    p.add_argument("--profile", action="store_true",
                   help="then one more pyqmail run (the first case, into the queue) sampled by py-spy, not in the summary")
    p.add_argument("--out", default="docs/benchmarks-smtp.txt", help="results; the chart goes beside it as .png")
    p.add_argument("--scheduler", choices=("qmail", "oqmgr", "qmgr"),
                   help="pyqmail's control/scheduler (default: none, qmail-send's own, qmail); named in the label")
    p.add_argument("--control", action="append", default=[], metavar="NAME=VALUE",
                   help="a control file of pyqmail's for the runs (e.g. concurrencylocal=20); named in the label")
    p.add_argument("--keep", action="store_true", help="leave the run directories in place (named at the end) instead"
                   " of removing them: no inodes freed, so a following benchmark need not wait")
    p.add_argument("--no-settle", action="store_true", help="start at once even if a benchmark removed its trees"
                   " in the last 400 s (every new file then scans past the freed inodes: figures not comparable)")
    args = p.parse_args()
    if not ROOT:
        sys.exit("bench_smtp: needs root (qmail's accounts, Postfix)")
    for tool in ("tcpserver", "smtp-source", "postfix"):
        if not shutil.which(tool):
            sys.exit("bench_smtp: %s is not installed (run scripts/bench-smtp)" % tool)
    cases = parse_cases(args.cases, args.messages)
    systems = []
    for name in args.systems.split(","):
        name, *more = name.split(":")  # pyqmail:NAME=VALUE...: a pyqmail variant with more control files
        controls = control_files(args.control + more, "bench_smtp")
        if name == "pyqmail":
            systems += [("pyqmail/" + listener + ("+" + args.scheduler if args.scheduler else "")
                         + control_label(controls),
                         functools.partial(PyQmailSmtp, listener=listener, queue_owner=True, scheduler=args.scheduler,
                                           controls=controls))
                        for listener in args.listener.split(",")]
        elif name == "postfix" and not more:
            systems.append(("postfix", PostfixSmtp))
        else:
            sys.exit("bench_smtp: unknown system %r" % name)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    waited = 0 if args.no_settle else wait_for_settled_frees(lambda text: print(text, file=sys.stderr, flush=True))
    started = Processes()
    base = Path(tempfile.mkdtemp(prefix="pyqmail-smtp-"))
    os.chmod(base, 0o755)
    spread_runs(base)
    cert = None
    if any(case[3] for case in cases):  # one self-signed certificate and key, for both servers
        cert = base / "cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(base / "key.pem"),
                        "-out", str(cert), "-days", "2", "-subj", "/CN=bench.example"], check=True, capture_output=True)
        cert.write_bytes(cert.read_bytes() + (base / "key.pem").read_bytes())
        os.chmod(cert, 0o644)  # qmail-smtpd reads it as the queue's owner; Postfix's smtpd as root at start
    lines, results = [], []

    def report(text):
        print(text, flush=True)
        lines.append(text)
    begun = time.time()
    report("# SMTP benchmark, %s, %s, %d cores (shared with other work: figures are noisy, compare within the run),"
           " load average %.1f at the start" % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                os.uname().nodename, os.cpu_count(), os.getloadavg()[0]))
    report("# command: scripts/bench-smtp %s; code: %s; started %s" % (
        " ".join(sys.argv[1:]), code_version(), "at once (--no-settle)" if args.no_settle else
        "after waiting %.0f s for an earlier benchmark's freed inodes to settle" % waited if waited else
        "with no benchmark removal in the last 400 s"))
    report("# smtp-source -c -l 2048 -M client.example, one message per connection; every message fsynced before its"
           " 250, every Maildir file before it counts as delivered")
    try:
        # every case into the queue first: nothing is removed there, while an end-to-end run frees its queue
        # files, and ext4 without a journal makes files created soon after scan past them (recently_deleted)
        for mode in args.modes.split(","):
            for k, case in enumerate(cases):
                for rnd in range(args.rounds):
                    for label, make in systems if rnd % 2 == 0 else systems[::-1]:
                        work = workdir(base, "%s-%d-%s-%d" % (label, k, mode, rnd))
                        r = measure(make, label, work, started, case, mode == "e2e", cert=cert)
                        r["round"] = rnd
                        results.append(r)
                        report_run(r, report)
                        show("%s %s %s round %d: %.0f msg/s" % (label, mode, case_name(case), rnd + 1, r["rate"]),
                             final=True)
        for label, make in systems[:1] if args.profile and systems[0][0] != "postfix" else ():
            report("")  # a run of its own, left out of the summary: py-spy slows what it samples
            report("# profile: one more run of %s, queue, %s, sampled by py-spy" % (label, case_name(cases[0])))
            r = measure(make, label, workdir(base, "profile"), started, cases[0], False, profile=True, cert=cert)
            r["round"] = 0
            report_run(r, report)
    except (KeyboardInterrupt, SystemExit):  # SystemExit: TERM (see the handler above)
        print("\nbench_smtp: interrupted", file=sys.stderr)
        started.stop_all()
        remove_tree(base)
        return 130
    finally:
        started.stop_all()
    summary(results, report)
    report("")
    report("# %.0f s in all; load average at the end: %.1f" % (time.time() - begun, os.getloadavg()[0]))
    Path(args.out).write_text("\n".join(lines) + "\n")
    png = Path(args.out).with_suffix(".png")
    client = "smtp-source" + (" and smtp_tls_source" if cert else "")
    chart(results, png, "SMTP in, %s -l 2048, one message per connection, every message fsynced; %s, %d"
          " cores (shared), %s" % (client, os.uname().nodename, os.cpu_count(), time.strftime("%Y-%m-%d", time.gmtime())))
    if args.keep:
        print("written to %s and %s; the run directories are kept in %s" % (args.out, png, base), file=sys.stderr)
        return 0
    print("written to %s and %s; removing the run directories" % (args.out, png), file=sys.stderr)
    remove_tree(base)  # after the report: removing tens of thousands of files takes a while on a busy disk
    return 0


if __name__ == "__main__":
    sys.exit(main())
