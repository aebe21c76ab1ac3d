"""End-to-end benchmark (issue 3's closing note): QMQP in, Maildir out, messages/s and CPU per delivery.

Usage: python scripts/bench_e2e.py [--plan 1:300,5:1000,20:2000] [--profile] [--out docs/benchmarks-e2e.txt]
Run through scripts/bench-e2e, which installs everything first.

For each SESSIONS:MESSAGES of the plan, a fresh system is set up in a private directory, Postfix's
`qmqp-source -c -s SESSIONS -m MESSAGES -l 2048` sends to it over loopback, and the run ends when every
message is in the recipient's Maildir/new and the queue is empty. With --drain N, N more messages are
queued with the delivery side stopped, which is then started and timed alone.

A system is a class with setup(), start_server(), start_delivery(), cpu() (CPU seconds by process kind),
delivered_dir(), queue_size(), log_counts(), log_tail(), hot_pids() and stop(): pyqmail's is PyQmail,
built on the test suite's helpers (tests/conftest.py, tests/mailsystem.py). Issue 4 adds Postfix beside
it in SYSTEMS and runs the same measure() on both (--systems pyqmail,postfix).
"""

import argparse
import functools
import grp
import linecache
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
from bench_qmqp import children_cpu, fsync_rate  # noqa: E402
from conftest import Processes, tcpserver  # noqa: E402  (the test suite's process and server helpers)
from mailsystem import MailSystem, assign_users, children, make_home, make_system_tree  # noqa: E402

BIN = Path(sys.executable).parent
ROOT = os.geteuid() == 0
TICK = os.sysconf("SC_CLK_TCK")
DOMAIN = "bench.example"
RECIPIENT = "bench@" + DOMAIN
STALL = 60  # seconds without a new delivery before a run is declared failed


def proc_times(pid):
    """Return (own, reaped children's) CPU seconds of a process (/proc/<pid>/stat), or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def proc_name(pid):
    """Return the program a process runs: its first argument not naming the interpreter."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            args = [os.path.basename(a.decode(errors="replace")) for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    for a in args:
        if not a.startswith("python"):
            return a
    return args[0] if args else "?"


def count_files(directory):
    """Number of entries in a directory (0 if it cannot be read)."""
    try:
        with os.scandir(directory) as it:
            return sum(1 for _ in it)
    except OSError:
        return 0


class PyQmail:
    """pyqmail on a private tree, set up and started as the end-to-end tests do (tests/mailsystem.py):
    tcpserver + qmail-qmqpd in, qmail-start (qmail-send, qmail-lspawn, qmail-rspawn, qmail-clean,
    qmail-pickup) out, every local part `bench` delivered to ./Maildir/ of a home under the work directory."""

    name = "pyqmail"

    def __init__(self, work, procs, qmaild=False, listener="tcpserver", queue_owner=False):
        self.work, self.procs, self.qmaild = Path(work), procs, qmaild
        self.listener, self.queue_owner = listener, queue_owner
        self.tree = self.work / "qmail"
        self.server = self.mail = self.port = None

    def setup(self):
        """Make the tree (qmail's accounts as root, single-user otherwise) and the recipient's Maildir."""
        make_system_tree(self.tree, DOMAIN)
        (self.tree / "control" / "qmqpderrordelay").write_text("0\n")
        self.home = make_home(self.work)  # owned by nobody as root: deliveries never run as root
        assign_users(self.tree, [("=", RECIPIENT.split("@")[0], str(self.home), "", "")])

    def start_server(self):
        """Start the QMQP server: tcpserver running qmail-qmqpd (which runs qmail-queue) per connection."""
        ids = []
        if self.qmaild:  # qmail-queue then drops the message into maildrop/ for qmail-pickup
            ids = ["-u", str(pwd.getpwnam("qmaild").pw_uid), "-g", str(grp.getgrnam("nofiles").gr_gid)]
        elif self.queue_owner:  # qmail-qmqpd may then write the queue itself (lib/queuehere)
            st = (self.tree / "queue").stat()
            ids = ["-u", str(st.st_uid), "-g", str(st.st_gid)]
        server = self.listener if self.listener == "tcpserver" else str(BIN / self.listener)
        self.port = tcpserver(self.procs, self.tree, [str(self.tree / "bin" / "qmail-qmqpd")],
                              options=["-c", "100", *ids], server=server)
        self.server = self.procs.procs[-1]

    def start_delivery(self):
        """Start qmail-start ./Maildir/ (it becomes qmail-send); return once qmail-send logged its status."""
        self.mail = MailSystem(self.procs, self.tree, "./Maildir/")

    def processes(self):
        """Return {kind: [(pid, count reaped children too)]}: the long-running processes to sample."""
        kinds = {"tcpserver+qmqpd+qmail-queue": [(self.server.pid, True)]}
        if self.mail is None:
            return kinds
        kinds["qmail-send"] = [(self.mail.pid, False)]
        for pid in self.mail.helpers:
            name = proc_name(pid)
            if name == "qmail-lspawn":
                kinds["qmail-lspawn+qmail-local"] = [(pid, True)]
            elif name == "qmail-clean":
                kinds["qmail-clean"] = [(pid, False)]
            elif name == "qmail-rspawn":
                kinds["qmail-rspawn"] = [(pid, True)]
            else:  # qmail-start's guard, which runs qmail-pickup
                kinds["qmail-pickup"] = [(pid, True)] + [(p, True) for p in children(pid)]
        return kinds

    def cpu(self):
        """CPU seconds used so far by each kind of process (with reaped per-message children)."""
        total = {}
        for kind, procs in self.processes().items():
            total[kind] = 0.0
            for pid, with_children in procs:
                t = proc_times(pid)
                if t is not None:
                    total[kind] += t[0] + (t[1] if with_children else 0)
        return total

    def delivered_dir(self):
        """The Maildir/new every message must reach."""
        return self.home / "Maildir" / "new"

    def queue_size(self):
        """Messages still in the queue (mess/ files) or in maildrop/ for qmail-pickup."""
        mess = self.tree / "queue" / "mess"
        return sum(count_files(mess / str(n)) for n in range(23)) + count_files(self.tree / "maildrop")

    def log_counts(self):
        """Counts of qmail-send's log lines by kind: deliveries by result, warnings, alerts."""
        counts = Counter()
        for line in self.mail.log().splitlines():
            if line.startswith(b"delivery "):
                counts[line.split(b": ", 1)[1].split(b":")[0].decode(errors="replace")] += 1
            elif line.startswith((b"warning:", b"alert:")):
                counts[line.split(b":")[0].decode()] += 1
        return counts

    def log_tail(self, lines=15):
        """The end of qmail-send's log."""
        if self.mail is None:
            return "(qmail-send not started)"
        return b"\n".join(self.mail.log().splitlines()[-lines:]).decode(errors="replace")

    def hot_pids(self):
        """Processes worth profiling: qmail-send."""
        return {"qmail-send": self.mail.pid}

    def stop(self):
        """TERM qmail-send and wait for it and its helpers; then stop tcpserver's session."""
        try:
            if self.mail is not None and self.mail.proc.poll() is None:
                self.mail.stop()
        finally:
            if self.server is not None:
                self.procs.stop(self.server)


SYSTEMS = {"pyqmail": PyQmail}


class Acceptance:
    """qmqp-source with -c: follow its running counter of accepted messages in a thread."""

    def __init__(self, started, port, sessions, messages):
        self.accepted = 0
        self.started = started
        self.cpu_before = children_cpu()
        self.t0 = time.time()
        self.proc = started.start(["qmqp-source", "-c", "-s", str(sessions), "-m", str(messages),
                                   "-l", "2048",
                                   "-f", "sender@" + DOMAIN, "-t", RECIPIENT, "127.0.0.1:%d" % port],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.reader = threading.Thread(target=self.follow, daemon=True)
        self.reader.start()

    def follow(self):
        """Read the counter (numbers separated by CRs) until qmqp-source exits."""
        tail = b""
        while True:
            data = self.proc.stdout.read1(4096)
            if not data:
                return
            tail = (tail + data)[-64:]
            numbers = [x for x in tail.replace(b"\n", b"\r").split(b"\r") if x.strip().isdigit()]
            if numbers:
                self.accepted = int(numbers[-1])

    def finish(self):
        """Wait for qmqp-source; return (elapsed seconds, its exit code, its stderr, its CPU seconds)."""
        err = self.proc.stderr.read()
        code = self.proc.wait()
        elapsed = time.time() - self.t0
        self.reader.join()
        self.started.procs.remove(self.proc)  # waited for: nothing left to stop
        return elapsed, code, err.decode(errors="replace").strip(), children_cpu() - self.cpu_before


def show(text, final=False, shown=[0.0]):
    """Progress on one terminal line (or a line every 5 seconds when not a terminal)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + text + ("\n" if final else ""))
        sys.stderr.flush()
    elif final or time.time() - shown[0] >= 5:
        shown[0] = time.time()
        print(text, file=sys.stderr, flush=True)


def profile_start(started, pids, seconds, work):
    """Start py-spy on each pid for the run, if it is installed; return [(name, Popen, raw output path)]."""
    spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if not spy:
        print("  (py-spy not installed: no profile)", file=sys.stderr)
        return []
    out = []
    for name, pid in pids.items():
        path = work / ("profile-%s.txt" % name)
        p = started.start([spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                           "--nonblocking", "--idle",
                           "--duration", str(seconds), "--output", str(path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append((name, p, path))
    return out


def waits_in_select(frame):
    """True if a py-spy frame ("function (path:line)") is a call of select(): the event loop idling."""
    m = re.search(r"\((.*):(\d+)\)$", frame)
    return bool(m) and "select(" in linecache.getline(m.group(1), int(m.group(2)))


def profile_summary(started, spies, top=8):
    """Stop the profilers; return report lines: where the wall time went, by source line."""
    lines = []
    for name, p, path in spies:
        started.stop(p, signal.SIGINT, timeout=20)  # py-spy writes its output on SIGINT
        if not path.exists():
            lines.append("profile of %s: py-spy wrote nothing (ptrace not allowed?)" % name)
            continue
        own, incl, total, idle = Counter(), Counter(), 0, 0
        for line in path.read_text(errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            n, frames = int(n), stack.split(";")
            total += n
            if waits_in_select(frames[-1]):
                idle += n
                continue
            frames = [re.sub(r" \((?:.*/)?([^/]*)\)$", r" (\1)", f) for f in frames]
            own[frames[-1]] += n
            for f in set(frames):
                incl[f] += n
        share = 100 / max(total, 1)
        lines.append("profile of %s (py-spy --idle, %d samples of its wall time): %.0f%% waiting in select,"
                     " %.0f%% busy (on CPU or in other system calls: fsync, unlink, ...):"
                     % (name, total, idle * share, (total - idle) * share))
        for f, n in own.most_common(top):
            lines.append("  self %5.1f%%  %s" % (n * share, f))
        for f, n in incl.most_common(top + 6):
            if n < 0.98 * (total - idle):  # not the frames every busy sample shares (the loop's callers)
                lines.append("  incl %5.1f%%  %s" % (n * share, f))
    return lines


def wait_delivered(system, label, messages, t0, source=None):
    """Show progress until qmqp-source (if any) has finished, all messages are in Maildir/new and the
    queue is empty; return qmqp-source's finish() answer (None without one)."""
    new, delivered, last_change, accept = system.delivered_dir(), 0, time.time(), None
    while True:
        time.sleep(0.25)
        now = time.time()
        if source is not None and accept is None and source.proc.poll() is not None:
            accept = source.finish()
            if accept[1] != 0:
                raise RuntimeError("qmqp-source exited %d: %s" % (accept[1], accept[2]))
        count = count_files(new)
        if count != delivered or (source is not None and accept is None):
            delivered, last_change = count, now
        queued = system.queue_size()
        accepted = messages if source is None or accept is not None else source.accepted
        show("%s: %5.1fs  accepted %d/%d  delivered %d/%d  in queue %d" % (
            label, now - t0, accepted, messages, delivered, messages, queued))
        if (source is None or accept is not None) and delivered >= messages and queued == 0:
            show("%s: done in %.1fs" % (label, now - t0), final=True)
            return accept
        if now - last_change > STALL:
            raise RuntimeError("no delivery for %ds (%d/%d delivered); qmail-send's log ends:\n%s"
                               % (STALL, delivered, messages, system.log_tail()))


def measure(system_class, work, started, sessions, messages, profile=False, drain=False):
    """Set up and start one system, send `messages` over `sessions` QMQP sessions, wait until every
    message is in Maildir/new and the queue is empty; return the results as a dict.

    drain: start the delivery side only once every message is queued, and time the delivery alone."""
    system = system_class(work, started)
    system.setup()
    label = "%s -s %d -m %d%s" % (system.name, sessions, messages, " (drain)" if drain else "")
    try:
        system.start_server()
        if not drain:
            system.start_delivery()
        cpu0 = system.cpu()
        spies = profile_start(started, system.hot_pids(), 600, work) if profile and not drain else []
        source = Acceptance(started, system.port, sessions, messages)
        t0 = source.t0
        if not drain:
            accept = wait_delivered(system, label, messages, t0, source)
        else:
            while source.proc.poll() is None:  # nothing delivers yet
                time.sleep(0.25)
                show("%s: %5.1fs  accepted %d/%d" % (label, time.time() - t0, source.accepted, messages))
            accept = source.finish()
            if accept[1] != 0 or system.queue_size() != messages:
                raise RuntimeError("qmqp-source exited %d (%s); %d of %d queued"
                                   % (accept[1], accept[2], system.queue_size(), messages))
            t0 = time.time()
            system.start_delivery()
            cpu0.update({k: v for k, v in system.cpu().items() if k not in cpu0})
            spies = profile_start(started, system.hot_pids(), 600, work) if profile else []
            wait_delivered(system, label, messages, t0)
        time.sleep(0.3)  # let the spawners reap their last children and qmail-clean finish
        cpu1 = system.cpu()
        profile_lines = profile_summary(started, spies) if spies else []
        mtimes = sorted(e.stat().st_mtime for e in os.scandir(system.delivered_dir()))
        log = system.log_counts()
    finally:
        system.stop()
    elapsed, _, _, client_cpu = accept
    cpu = {k: cpu1.get(k, 0.0) - cpu0.get(k, 0.0) for k in cpu1}
    if drain:
        del cpu["tcpserver+qmqpd+qmail-queue"]
    return {"system": system.name, "sessions": sessions, "messages": messages, "delivered": len(mtimes),
            "drain": drain, "accept_rate": messages / elapsed, "accept_s": elapsed,
            "e2e_s": mtimes[-1] - t0, "e2e_rate": messages / (mtimes[-1] - t0),
            "first_delivery_s": mtimes[0] - t0, "cpu": cpu, "client_cpu": client_cpu,
            "log": log, "profile": profile_lines}


def report_run(r, report):
    """Report lines for one run."""
    n = r["messages"]
    report("%s, qmqp-source -c -s %d -m %d -l 2048%s: %d delivered" % (
        r["system"], r["sessions"], n, ", delivery started after all were queued" if r["drain"] else "",
        r["delivered"]))
    report("  accepted:   %6.1f msg/s (qmqp-source %.1f s%s)" % (
        r["accept_rate"], r["accept_s"], ", nothing delivering" if r["drain"] else ""))
    if r["drain"]:
        report("  delivered:  %6.1f msg/s (start of the delivery side to last Maildir file %.1f s;"
               " first after %.2f s)"
               % (r["e2e_rate"], r["e2e_s"], r["first_delivery_s"]))
    else:
        report("  end to end: %6.1f msg/s (start of qmqp-source to last Maildir file %.1f s;"
               " first after %.2f s)"
               % (r["e2e_rate"], r["e2e_s"], r["first_delivery_s"]))
    total = sum(r["cpu"].values())
    report("  CPU per message: %.1f ms in all%s (%.0f%% of %d cores over that time)%s" % (
        1000 * total / n, " delivering" if r["drain"] else "", 100 * total / r["e2e_s"] / os.cpu_count(),
        os.cpu_count(), "" if r["drain"] else "; qmqp-source itself %.1f ms" % (1000 * r["client_cpu"] / n)))
    for kind, seconds in sorted(r["cpu"].items(), key=lambda kv: -kv[1]):
        report("    %-30s %5.1f ms  (%4.1f%%)" % (kind, 1000 * seconds / n, 100 * seconds / max(total, 1e-9)))
    report("  qmail-send log: " + ", ".join("%s %d" % kv for kv in sorted(r["log"].items())))
    for line in r["profile"]:
        report("  " + line)


def parse_plan(text):
    """'1:300,5:1000' → [(1, 300), (5, 1000)]."""
    plan = []
    for part in text.split(","):
        s, _, m = part.partition(":")
        plan.append((int(s), int(m)))
    return plan


def main():
    """Measure the disk, then each run of the plan on each system; write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plan", default="1:300,5:1000,20:2000",
                        help="SESSIONS:MESSAGES,... (default %(default)s)")
    parser.add_argument("--systems", default="pyqmail", help="comma-separated: " + ",".join(SYSTEMS))
    parser.add_argument("--drain", type=int, default=1000, metavar="N",
                        help="then queue N messages (-s 20) with delivery stopped, and time the delivery"
                             " alone (0: skip; default %(default)s)")
    parser.add_argument("--profile", action="store_true",
                        help="sample qmail-send with py-spy in the largest run and the drain run")
    parser.add_argument("--qmaild", action="store_true",
                        help="(root) run qmail-qmqpd as qmaild, as scripts/run does: messages reach the queue"
                             " through maildrop/ and qmail-pickup")
    parser.add_argument("--listener", default="tcpserver", choices=("tcpserver", "qmail-tcpserver"),
                        help="what runs qmail-qmqpd per connection (default %(default)s)")
    parser.add_argument("--queue-owner", action="store_true",
                        help="(root) run qmail-qmqpd as the queue's owner, so that it queues in its own process")
    parser.add_argument("--out", default="docs/benchmarks-e2e.txt")
    args = parser.parse_args()
    if (args.qmaild or args.queue_owner) and not ROOT:
        parser.error("--qmaild and --queue-owner need root")
    for tool in ("tcpserver", "qmqp-source"):
        if not shutil.which(tool):
            sys.exit("bench_e2e: %s is not installed (run scripts/bench-e2e)" % tool)
    plan = parse_plan(args.plan)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the finally clauses
    started = Processes()
    base = Path(tempfile.mkdtemp(prefix="pyqmail-e2e-"))
    os.chmod(base, 0o755)  # the delivery account must reach its home inside
    lines = []

    def report(text):
        print(text, flush=True)
        lines.append(text)
    try:
        report("# End-to-end QMQP -> Maildir benchmark, %s, %s, %d cores, load average %.1f, as %s" % (
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.uname().nodename, os.cpu_count(),
            os.getloadavg()[0], "a plain user (single-user tree)" if not ROOT else
            "root (qmail's accounts; qmail-qmqpd as %s; deliveries as nobody)"
            % ("qmaild, through maildrop and qmail-pickup" if args.qmaild else "root, queueing directly")))
        fs = base / "fsync"
        fs.mkdir()
        report("create+write(2 KB)+fsync+rename, 1 writer:   %7.0f files/s" % fsync_rate(fs, 1, 300))
        report("create+write(2 KB)+fsync+rename, 10 writers: %7.0f files/s" % fsync_rate(fs, 10, 100))
        shutil.rmtree(fs)
        biggest = max(plan, key=lambda sm: sm[1] * sm[0])
        for name in args.systems.split(","):
            make = functools.partial(SYSTEMS[name], **({"qmaild": True} if args.qmaild else {}),
                                     **({"listener": args.listener, "queue_owner": args.queue_owner}
                                        if name == "pyqmail" else {}))
            for k, (sessions, messages) in enumerate(plan):
                work = base / ("%s-%d" % (name, k))
                work.mkdir()
                os.chmod(work, 0o755)
                r = measure(make, work, started, sessions, messages,
                            profile=args.profile and (sessions, messages) == biggest)
                report_run(r, report)
                shutil.rmtree(work, ignore_errors=True)
            if args.drain:
                work = base / ("%s-drain" % name)
                work.mkdir()
                os.chmod(work, 0o755)
                report_run(measure(make, work, started, 20, args.drain, args.profile, drain=True), report)
                shutil.rmtree(work, ignore_errors=True)
    except KeyboardInterrupt:
        print("\nbench_e2e: interrupted", file=sys.stderr)
        return 130
    finally:
        started.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    report("# load average at the end: %.1f" % os.getloadavg()[0])
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("written to %s" % args.out, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
