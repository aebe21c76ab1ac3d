"""End-to-end benchmark (issue 4): QMQP in, Maildir out, pyqmail beside Postfix on one machine in one run.

Usage: python scripts/bench_e2e.py [--plan 1,5,20] [-m 2000] [--systems pyqmail,postfix]
       [--listener tcpserver,qmail-tcpserver] [--drain 1000] [--profile] [--out docs/benchmarks-e2e.txt]
Run through scripts/bench-e2e, which installs everything first.

For each -s of the plan, and for each system in turn at that -s (so that the systems compared at one -s
are measured close together in time on this shared machine), a fresh system is set up in a private
directory, Postfix's `qmqp-source -c -s SESSIONS -m MESSAGES -l 2048` sends to it over loopback while a
probe thread (bench_probe.py) measures the acceptance latency, and the run ends when every message is
in the recipient's Maildir/new and the queue is empty. With --drain N, N more messages are queued with
the delivery side stopped, which is then started and timed alone (once per system).

A system is a class with setup(), start_server(), start_delivery(), cpu() (CPU seconds by process
kind), memory(), delivered_dir(), queue_size(), log_counts(), log_tail(), hot_pids() and stop():
PyQmail here (built on the test suite's helpers, tests/conftest.py and tests/mailsystem.py), Postfix in
bench_postfix.py. The results file gets every run's details and a summary table (bench_report.py);
the PNG chart goes beside it.
"""

import argparse
import functools
import grp
import os
import pwd
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
from bench_postfix import DOMAIN, RECIPIENT, Postfix  # noqa: E402
from bench_probe import LatencyProbe  # noqa: E402
from bench_procs import (ProcSampler, count_files, disk_counts, disk_delta, machine_cpu, own_cpu,  # noqa: E402
                         proc_name, remove_tree, spread_runs, subtree_cpu, wait_for_settled_frees,
                         FREED_SETTLE)  # noqa: E402
from bench_profile import profile_start, profile_summary  # noqa: E402
from bench_qmqp import children_cpu, fsync_rate  # noqa: E402
from bench_report import chart, report_run, summary  # noqa: E402
from conftest import Processes, tcpserver  # noqa: E402  (the test suite's process and server helpers)
from mailsystem import MailSystem, assign_users, make_home, make_system_tree  # noqa: E402

BIN = Path(sys.executable).parent
ROOT = os.geteuid() == 0
STALL = 60  # seconds without a new delivery before a run is declared failed


class PyQmail:
    """pyqmail on a private tree, set up and started as the end-to-end tests do (tests/mailsystem.py):
    tcpserver + qmail-qmqpd in, qmail-start (qmail-send, qmail-lspawn, qmail-rspawn, qmail-clean,
    qmail-pickup) out, every local part `bench` delivered to ./Maildir/ of a home under the work directory."""

    name = "pyqmail"
    log_name = "qmail-send log"

    def __init__(self, work, procs, qmaild=False, listener="tcpserver", queue_owner=False, scheduler=None,
                 controls=()):
        self.work, self.procs, self.qmaild = Path(work), procs, qmaild
        self.listener, self.queue_owner = listener, queue_owner
        self.scheduler = scheduler  # control/scheduler (qmail, oqmgr or qmgr), or None: the tree's default (qmail)
        self.controls = controls  # (name, value) control files written for the run, e.g. concurrencylocal
        self.tree = self.work / "qmail"
        self.server = self.mail = self.port = self.sampler = None

    def setup(self):
        """Make the tree (qmail's accounts as root, single-user otherwise) and the recipient's Maildir."""
        make_system_tree(self.tree, DOMAIN)
        (self.tree / "control" / "qmqpderrordelay").write_text("0\n")
        if self.scheduler:
            (self.tree / "control" / "scheduler").write_text(self.scheduler + "\n")
        for name, value in self.controls:
            (self.tree / "control" / name).write_text(value + "\n")
        self.home = make_home(self.work)  # owned by nobody as root: deliveries never run as root
        assign_users(self.tree, [("=", RECIPIENT.split("@")[0], str(self.home), "", "")])

    def start_server(self):
        """Start the QMQP server: tcpserver running qmail-qmqpd (which runs qmail-queue) per connection."""
        ids = []
        if self.qmaild:  # qmail-queue then drops the message into maildrop/ for qmail-pickup
            ids = ["-u", str(pwd.getpwnam("qmaild").pw_uid), "-g", str(grp.getgrnam("nofiles").gr_gid)]
        elif self.queue_owner:  # qmail-qmqpd may then write the queue itself (lib/queue/queuehere)
            st = (self.tree / "queue").stat()
            ids = ["-u", str(st.st_uid), "-g", str(st.st_gid)]
        server = self.listener if self.listener == "tcpserver" else str(BIN / self.listener)
        self.port = tcpserver(self.procs, self.tree, [str(self.tree / "bin" / "qmail-qmqpd")],
                              options=["-c", "100", *ids], server=server)
        self.server = self.procs.procs[-1]
        self.sampler = ProcSampler(self.roots)

    def prepare_delivery(self):
        """Nothing to do before qmail-start starts."""

    def start_delivery(self):
        """Start qmail-start ./Maildir/ (it becomes qmail-send); return once qmail-send logged its status."""
        self.mail = MailSystem(self.procs, self.tree, "./Maildir/")

    def processes(self):
        """Return {kind: [(pid, whole subtree?)]}: the long-running processes, and whether their children
        (reaped or running: the per-connection and per-delivery processes) count with them."""
        server = self.listener + "+qmail-qmqpd" + ("" if self.queue_owner else "+qmail-queue")
        kinds = {server: [(self.server.pid, True)]}
        if self.mail is None:
            return kinds
        kinds["qmail-send"] = [(self.mail.pid, False)]  # its children are the helpers, counted below
        for pid in self.mail.helpers:
            name = proc_name(pid)
            if name in ("qmail-lspawn", "qmail-rspawn"):
                kinds[name + "+children"] = [(pid, True)]
            elif name == "qmail-clean":
                kinds["qmail-clean"] = [(pid, False)]
            else:  # qmail-start's guard, which runs qmail-pickup
                kinds["qmail-pickup"] = [(pid, True)]
        return kinds

    def roots(self):
        """{pid: (kind, whole subtree?)} for ProcSampler."""
        return {pid: (kind, sub) for kind, procs in self.processes().items() for pid, sub in procs}

    def cpu(self, user=False):
        """CPU seconds used so far by each kind of process, with its children's (exited or running); in
        user mode only if asked."""
        return {kind: sum(subtree_cpu(pid, user) if sub else own_cpu(pid, user) for pid, sub in procs)
                for kind, procs in self.processes().items()}

    def memory(self):
        """Peak memory of the system's processes (see ProcSampler.memory)."""
        return self.sampler.memory()

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
            if self.sampler is not None:
                self.sampler.stop()


SYSTEMS = {"pyqmail": PyQmail}


class Acceptance:
    """qmqp-source with -c: follow its running counter of accepted messages in a thread."""

    def __init__(self, started, port, sessions, messages):
        self.accepted = 0
        self.ended = None  # when the client's output closed (follow)
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
                self.ended = time.time()  # its output closed: it has exited (finish() is polled 4 times a second)
                return
            tail = (tail + data)[-64:]
            numbers = [x for x in tail.replace(b"\n", b"\r").split(b"\r") if x.strip().isdigit()]
            if numbers:
                self.accepted = int(numbers[-1])

    def finish(self):
        """Wait for qmqp-source; return (elapsed seconds, its exit code, its stderr, its CPU seconds)."""
        err = self.proc.stderr.read()
        code = self.proc.wait()
        self.reader.join()
        elapsed = (self.ended if self.ended is not None else time.time()) - self.t0
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


def wait_delivered(system, label, expected, t0, source=None):
    """Show progress until qmqp-source (if any) has finished, expected() messages are in Maildir/new and
    the queue is empty; return qmqp-source's finish() answer (None without one)."""
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
        total = expected()
        accepted = total if source is None or accept is not None else source.accepted
        show("%s: %5.1fs  accepted %d/%d  delivered %d/%d  in queue %d" % (
            label, now - t0, accepted, total, delivered, total, queued))
        if (source is None or accept is not None) and delivered >= total and queued == 0:
            show("%s: done in %.1fs" % (label, now - t0), final=True)
            return accept
        if now - last_change > STALL:
            raise RuntimeError("no delivery for %ds (%d/%d delivered); %s ends:\n%s"
                               % (STALL, delivered, total, system.log_name, system.log_tail()))


def accept_only(system, source, label, messages):
    """Drain runs: wait for qmqp-source with nothing delivering; check that every message is queued."""
    while source.proc.poll() is None:
        time.sleep(0.25)
        show("%s: %5.1fs  accepted %d/%d" % (label, time.time() - source.t0, source.accepted, messages))
    accept = source.finish()
    deadline = time.time() + 10  # Postfix's cleanup may still be moving the last files into incoming/
    while system.queue_size() != messages and time.time() < deadline:
        time.sleep(0.1)
    if accept[1] != 0 or system.queue_size() != messages:
        raise RuntimeError("qmqp-source exited %d (%s); %d of %d queued"
                           % (accept[1], accept[2], system.queue_size(), messages))
    return accept


def measure(make, label, work, started, sessions, messages, profile=False, drain=False):
    """Set up and start one system, send `messages` over `sessions` QMQP sessions (and latency probes),
    wait until every message is in Maildir/new and the queue is empty; return the results as a dict.

    drain: start the delivery side only once every message is queued, and time the delivery alone."""
    system = make(work, started)
    system.setup()
    title = "%s -s %d -m %d%s" % (label, sessions, messages, " (drain)" if drain else "")
    probe = latency = None
    try:
        system.start_server()
        if not drain:
            system.start_delivery()
        cpu0, user0, own0, disk0 = system.cpu(), system.cpu(user=True), time.process_time(), disk_counts(work)
        machine0 = machine_cpu()
        spies = profile_start(started, system.hot_pids(), 600, work) if profile and not drain else []
        source = Acceptance(started, system.port, sessions, messages)
        t0 = source.t0
        if not drain:
            probe = LatencyProbe(system.port, lambda: source.accepted, "probe@" + DOMAIN, RECIPIENT)

            def expected():
                if source.proc.poll() is not None and not probe.done.is_set():
                    probe.done.set()  # qmqp-source finished: no more probes
                    probe.thread.join()
                return messages + len(probe.times)
            accept = wait_delivered(system, title, expected, t0, source)
            latency = probe.stop()
        else:
            accept = accept_only(system, source, title, messages)
            system.prepare_delivery()
            # the delivery side's processes count from 0
            cpu0, user0, own0, disk0 = system.cpu(), system.cpu(user=True), time.process_time(), disk_counts(work)
            machine0 = machine_cpu()
            t0 = time.time()
            system.start_delivery()
            spies = profile_start(started, system.hot_pids(), 600, work) if profile else []
            wait_delivered(system, title, lambda: messages, t0)
        time.sleep(0.3)  # let the spawners reap their last children and qmail-clean finish
        cpu1, user1, own, disk1 = system.cpu(), system.cpu(user=True), time.process_time() - own0, disk_counts(work)
        machine = [b - a for a, b in zip(machine0, machine_cpu())]
        memory = system.memory()
        profile_lines = profile_summary(started, spies) if spies else []
        mtimes = sorted(e.stat().st_mtime for e in os.scandir(system.delivered_dir()))
        log = system.log_counts()
    finally:
        if probe is not None and latency is None:
            probe.stop()
        system.stop()
    elapsed, _, _, client_cpu = accept
    cpu = {k: cpu1.get(k, 0.0) - cpu0.get(k, 0.0) for k in cpu1}
    user = {k: user1.get(k, 0.0) - user0.get(k, 0.0) for k in user1}
    if drain:  # the acceptance side's processes idle while the queue drains
        cpu = {k: v for k, v in cpu.items() if abs(v) >= 0.0005}
    disk = disk_delta(disk0, disk1)
    return {"label": label, "system": system.name, "sessions": sessions, "messages": messages,
            "delivered": len(mtimes), "drain": drain, "accept_rate": messages / elapsed, "accept_s": elapsed,
            "e2e_s": mtimes[-1] - t0, "e2e_rate": len(mtimes) / (mtimes[-1] - t0) if not drain else
            (len(mtimes) - 1) / (mtimes[-1] - mtimes[0]),  # a drain: from its first delivery, after start-up
            "first_delivery_s": mtimes[0] - t0, "cpu": cpu, "user_cpu": user, "disk": disk, "machine": machine,
            "client_cpu": client_cpu, "own_cpu": own, "latency": latency,
            "memory": memory, "log": log, "log_name": system.log_name, "profile": profile_lines}


def parse_plan(text, messages):
    """'1,5:1000' → [(1, messages), (5, 1000)]."""
    plan = []
    for part in text.split(","):
        s, _, m = part.partition(":")
        plan.append((int(s), int(m) if m else messages))
    return plan


def control_files(texts, program):
    """Parse NAME=VALUE texts into ((name, value), ...) for PyQmail's controls; exit naming program if one is not."""
    controls = tuple(tuple(t.split("=", 1)) for t in texts)
    if any(len(c) != 2 or not c[0] or "/" in c[0] for c in controls):
        sys.exit("%s: a control file is NAME=VALUE" % program)
    return controls


def control_label(controls):
    """'+name=value...' for a system's label."""
    return "".join("+%s=%s" % c for c in controls)


def variants(args):
    """[(label, class or partial)] for every system and, for pyqmail, every listener."""
    out = []
    for name in args.systems.split(","):
        name, *more = name.split(":")  # pyqmail:NAME=VALUE...: a pyqmail variant with more control files
        controls = control_files(args.control + more, "bench_e2e")
        if name == "pyqmail":
            for listener in args.listener.split(","):
                out.append(("pyqmail/" + listener + control_label(controls), functools.partial(
                    PyQmail, qmaild=args.qmaild, listener=listener, queue_owner=args.queue_owner,
                    controls=controls)))
        elif name == "postfix" and not more:
            if not ROOT or not shutil.which("postfix"):
                sys.exit("bench_e2e: --systems postfix needs root and Debian's postfix package")
            out.append(("postfix", Postfix))
        else:
            sys.exit("bench_e2e: unknown system %r (pyqmail, postfix)" % name)
    return out


def parse_args():
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plan", default="1,5,20",
                        help="SESSIONS[:MESSAGES],... (default %(default)s, each with -m messages)")
    parser.add_argument("-m", "--messages", type=int, default=2000,
                        help="messages per run of the plan (default %(default)s)")
    parser.add_argument("--systems", default="pyqmail,postfix", help="comma-separated: pyqmail, postfix;"
                        " pyqmail:NAME=VALUE[:NAME=VALUE] is a pyqmail variant with those control files"
                        " (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="run each -s of the plan N times on every system, in turn and in alternating"
                             " order; the summary gives each round's ratio to Postfix and their median"
                             " (default %(default)s)")
    parser.add_argument("--drain", type=int, default=1000, metavar="N",
                        help="then, per system, queue N messages (-s 20) with delivery stopped, and time the"
                             " delivery alone (0: skip; default %(default)s)")
    parser.add_argument("--profile", action="store_true",
                        help="sample qmail-send with py-spy in the largest run and the drain run")
    parser.add_argument("--qmaild", action="store_true",
                        help="(root) run qmail-qmqpd as qmaild, as scripts/run does: messages reach the queue"
                             " through maildrop/ and qmail-pickup (implies --no-queue-owner)")
    parser.add_argument("--listener", default="tcpserver,qmail-tcpserver",
                        help="comma-separated: what runs pyqmail's qmail-qmqpd per connection, tcpserver"
                             " and/or qmail-tcpserver; one pyqmail deployment each (default %(default)s)")
    parser.add_argument("--queue-owner", action=argparse.BooleanOptionalAction, default=ROOT,
                        help="(root) run qmail-qmqpd as the queue's owner, so that it queues in its own"
                             " process (default: on as root)")
    parser.add_argument("--control", action="append", default=[], metavar="NAME=VALUE",
                        help="a control file of pyqmail's for the runs (e.g. concurrencylocal=20); named in the label")
    parser.add_argument("--keep", action="store_true",
                        help="leave the run directories in place (named at the end) instead of removing them: "
                             "no inodes freed, so a following benchmark need not wait")
    parser.add_argument("--no-settle", action="store_true",
                        help="start at once even if a benchmark removed its trees in the last 400 s "
                             "(the freed inodes tax the runs' file creations: figures are then not comparable)")
    parser.add_argument("--out", default="docs/benchmarks-e2e.txt",
                        help="results file; the chart goes beside it as .png (default %(default)s)")
    args = parser.parse_args()
    if args.qmaild:
        args.queue_owner = False
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    if (args.qmaild or args.queue_owner) and not ROOT:
        parser.error("--qmaild and --queue-owner need root")
    if set(args.listener.split(",")) - {"tcpserver", "qmail-tcpserver"}:
        parser.error("--listener: tcpserver and/or qmail-tcpserver")
    return args


def code_version():
    """The commit measured: git's description of this checkout, else $PYQMAIL_COMMIT (an exported tree)."""
    r = subprocess.run(["git", "-C", HERE, "describe", "--always", "--dirty"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else os.environ.get("PYQMAIL_COMMIT", "unknown")


def workdir(base, name):
    """A fresh directory every user can traverse (the delivery account must reach its home inside),
    whose queue tree and home ext4 puts in block groups apart, as /var and /home are on a real host."""
    work = base / name.replace("/", "-")
    work.mkdir()
    os.chmod(work, 0o755)
    spread_runs(work)
    return work


def main():
    """Measure the disk, then each -s of the plan on each system, then the drains; write the report."""
    args = parse_args()
    for tool in ("tcpserver", "qmqp-source"):
        if not shutil.which(tool):
            sys.exit("bench_e2e: %s is not installed (run scripts/bench-e2e)" % tool)
    plan, systems = parse_plan(args.plan, args.messages), variants(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the finally clauses
    waited = 0 if args.no_settle else wait_for_settled_frees(lambda text: print(text, file=sys.stderr, flush=True))
    started = Processes()
    base = Path(tempfile.mkdtemp(prefix="pyqmail-e2e-"))
    os.chmod(base, 0o755)
    spread = spread_runs(base)
    lines, results = [], []

    def report(text):
        print(text, flush=True)
        lines.append(text)
    start = time.time()
    try:
        report("# End-to-end QMQP -> Maildir benchmark, %s, %s, %d cores, load average %.1f, as %s" % (
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.uname().nodename, os.cpu_count(),
            os.getloadavg()[0], "a plain user (single-user tree)" if not ROOT else
            "root (qmail's accounts; qmail-qmqpd as %s; deliveries as nobody)"
            % ("qmaild, through maildrop and qmail-pickup" if args.qmaild else
               "the queue's owner, queueing in its own process" if args.queue_owner else
               "root, running qmail-queue")))
        report("# command: scripts/bench-e2e %s; code: %s" % (" ".join(sys.argv[1:]), code_version()))
        report("# each run's tree, and in it the mail system's tree and the home, in ext4 block groups of "
               "their own (chattr +T on %s and on each run's directory): %s" % (
            base, "yes" if spread else "no, the flag did not take (not ext2/3/4?)"))
        report("# started %s" % ("at once (--no-settle)" if args.no_settle else
                                 "after waiting %.0f s for an earlier benchmark's freed inodes to settle" % waited
                                 if waited else "with no benchmark removal in the last %d s" % FREED_SETTLE))
        fs = workdir(base, "fsync")
        report("create+write(2 KB)+fsync+rename, 1 writer:   %7.0f files/s" % fsync_rate(fs, 1, 300))
        report("create+write(2 KB)+fsync+rename, 10 writers: %7.0f files/s" % fsync_rate(fs, 10, 100))
        # Trees are removed only at the end: on ext4 without a journal, the inodes one run frees make the
        # next run's file creations scan past them for a minute or more, charging one system for another.
        biggest = max(plan, key=lambda sm: sm[1] * sm[0])
        for k, (sessions, messages) in enumerate(plan):
            for rnd in range(args.rounds):  # the order alternates: neither system always follows the other
                for label, make in systems if rnd % 2 == 0 else systems[::-1]:
                    work = workdir(base, "%s-%d-%d" % (label, k, rnd))
                    results.append(measure(make, label, work, started, sessions, messages,
                                           profile=args.profile and (sessions, messages) == biggest and rnd == 0))
                    results[-1]["round"] = rnd
                    report_run(results[-1], report)
        drained = {}
        for label, make in systems:  # the delivery side does not depend on the listener: the last one
            drained[label.split("/")[0]] = (label, make)
        for label, make in drained.values() if args.drain else ():
            work = workdir(base, label + "-drain")
            results.append(measure(make, label, work, started, 20, args.drain, args.profile, drain=True))
            report_run(results[-1], report)
    except KeyboardInterrupt:
        print("\nbench_e2e: interrupted", file=sys.stderr)
        return 130
    finally:
        started.stop_all()
        if args.keep:
            print("bench_e2e: the run directories are kept in %s" % base, file=sys.stderr)
        else:
            remove_tree(base)
    summary(results, report)
    report("")
    report("# %.0f s in all; load average at the end: %.1f" % (time.time() - start, os.getloadavg()[0]))
    Path(args.out).write_text("\n".join(lines) + "\n")
    png = Path(args.out).with_suffix(".png")
    chart(results, png, "QMQP -> Maildir, qmqp-source -c -m %d -l 2048, every message fsynced; %s, %d cores"
          " (shared), %s" % (args.messages, os.uname().nodename, os.cpu_count(),
                             time.strftime("%Y-%m-%d", time.gmtime())))
    print("written to %s and %s" % (args.out, png), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
