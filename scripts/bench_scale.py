"""Scale check (issue 4): qmail-send with 100,000 messages queued: its memory, and its delivery rate
against the same system draining a small queue.

Usage: python scripts/bench_scale.py [--messages 100000] [--baseline 10000] [--out docs/benchmarks-scale.txt]
Run through scripts/bench-scale, which installs everything first.

Three runs: the baseline, the big queue, the baseline again (two runs of one size differ by 10 % or
more, and the machine drifts over minutes: the big run is judged against the mean of the two). Each
fills a fresh tree with its count of 2 KB messages to one local Maildir recipient, written by the
real queueing code (lib/queue/queuehere) from 4 processes running as the queue's owner. The filling skips
fsync: it is set-up, not what is measured; one sync(2) then puts it on the disk, as qmail-queue's
fsyncs would have, so that the delivery is not charged with its writeback (before that sync, the
100,000-message run was). Then qmail-start starts the delivery side on the full todo/ (nothing
preprocessed yet); every 0.1 s the success lines in qmail-send's log are counted and its
VmRSS/VmHWM sampled, until all are delivered. Each run reports the CPU per message of each program
and of the whole machine (kernel threads included), and the disk's requests per message.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
from bench_procs import (disk_counts, disk_delta, machine_cpu, machine_shares, own_cpu, proc_name,  # noqa: E402
                         remove_tree, spread_runs, subtree_cpu, wait_for_settled_frees)  # noqa: E402
from conftest import Processes  # noqa: E402
from mailsystem import MailSystem, assign_users, make_home, make_system_tree  # noqa: E402

FILLERS = 4
SAMPLE = 0.1  # seconds between looks at the log: a 10,000-message baseline lasts about 5 s
MESSAGE = b"From: sender@bench.example\nTo: bench@bench.example\nSubject: scale\n\n" + b"x" * 70 + b"\n"
MESSAGE += (b"y" * 79 + b"\n") * ((2048 - len(MESSAGE)) // 80)


def fill(tree, count, part):
    """In a child: become the queue's owner and queue count messages the way qmail-queue does, unsynced."""
    from pyqmail.lib.queue import queue
    from pyqmail.lib.queue.queuehere import QueueHere
    st = os.stat(os.path.join(tree, "queue"))
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(st.st_gid)
        os.setuid(st.st_uid)
    import posix  # lib/queue/queue calls posix.fsync (os's start-up cost)
    os.fsync = posix.fsync = lambda fd: None  # set-up only: the measured delivery side fsyncs as always
    queue.fsync_dir = lambda name: None
    for i in range(count):
        qq = QueueHere(tree)
        qq.put(MESSAGE)
        if qq.close(b"sender@bench.example", [b"bench@bench.example"]):
            os._exit(1)
    os._exit(0)


def queue_messages(tree, count):
    """Queue count messages from FILLERS processes; return the seconds it took."""
    t0 = time.time()
    pids = []
    for part in range(FILLERS):
        share = count // FILLERS + (1 if part < count % FILLERS else 0)
        pid = os.fork()
        if pid == 0:
            try:
                fill(str(tree), share, part)
            finally:
                os._exit(1)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if status:
            raise RuntimeError("a filler failed (status %d)" % status)
    return time.time() - t0


def memory(pid):
    """Return (VmRSS, VmHWM) of a process in MB."""
    values = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def cpu_by_program(mail):
    """CPU seconds so far of qmail-send, qmail-clean, and qmail-lspawn with its delivery workers."""
    cpu = {"qmail-send": own_cpu(mail.pid)}
    for pid in mail.helpers:
        name = proc_name(pid)
        if name == "qmail-lspawn":
            cpu[name] = subtree_cpu(pid)
        elif name == "qmail-clean":
            cpu[name] = own_cpu(pid)
    return cpu


def count_new(directory):
    """Number of files in a Maildir/new."""
    with os.scandir(directory) as it:
        return sum(1 for _ in it)


class Successes:
    """Counts the `success` lines qmail-send's log gains, reading only what was appended. (Listing a
    Maildir/new of 100,000 files every second cost the benchmark tens of ms of CPU each time, and held
    the directory's lock that every delivery's link into it needs.)"""

    def __init__(self, path):
        self.path, self.offset, self.partial, self.count = path, 0, b"", 0

    def __call__(self):
        """Return the number of successful deliveries logged so far."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        data = self.partial + data
        whole = data.rfind(b"\n") + 1
        self.count += data[:whole].count(b": success:")
        self.partial = data[whole:]
        return self.count


def run(work, count, report):
    """Fill a fresh tree with count messages, deliver them all, report rate and qmail-send's memory."""
    os.makedirs(work)
    os.chmod(work, 0o755)
    spread_runs(work)  # the queue and the home in block groups apart, as /var and /home are
    tree = make_system_tree(os.path.join(work, "qmail"), "bench.example")
    home = make_home(work)
    assign_users(tree, [("=", "bench", str(home), "", "")])
    seconds = queue_messages(tree, count)
    # the filling's own writes, deferred by the kernel, would otherwise be written back while the
    # delivery is measured (200 MB and 200,000 inodes for 100,000 messages, 30 s after they were made);
    # a queue filled by qmail-queue is on the disk already
    synced = time.time()
    os.sync()
    report("%d messages queued in %.0f s (unsynced set-up, then sync: %.1f s); delivering..."
           % (count, seconds, time.time() - synced))
    procs = Processes()
    new = home / "Maildir" / "new"
    samples = []
    try:
        disk0 = disk_counts(work)
        mail = MailSystem(procs, tree, "./Maildir/")
        successes = Successes(mail.log_path)
        cpu0, machine0 = cpu_by_program(mail), machine_cpu()
        t0 = time.time()
        moved = (0.0, 0)  # when the count last grew, and to what
        while True:
            time.sleep(SAMPLE)
            done = successes()
            rss, hwm = memory(mail.pid)
            now = time.time() - t0
            samples.append((now, done, rss, hwm))
            if len(samples) % round(1 / SAMPLE) == 0 or done >= count:
                print("\r  %6.0fs  delivered %d/%d  qmail-send RSS %.1f MB (peak %.1f)"
                      % (now, done, count, rss, hwm), end="", file=sys.stderr, flush=True)
            if done >= count:
                break
            if done > moved[1]:
                moved = (now, done)
            elif now - moved[0] > 60:
                raise RuntimeError("no delivery for 60 s at %d/%d" % (done, count))
        print(file=sys.stderr)
        disk1 = disk_counts(work)
        cpu1, machine1 = cpu_by_program(mail), machine_cpu()
        log = mail.log()
        mail.stop()
        if count_new(new) != count:  # once, at the end: every success is a file in Maildir/new
            raise RuntimeError("%d files in Maildir/new after %d successes" % (count_new(new), done))
    finally:
        procs.stop_all()
    elapsed = samples[-1][0]
    peak = max(s[3] for s in samples)
    report("%d messages: all delivered in %.1f s = %.1f msg/s; qmail-send peak RSS (VmHWM) %.1f MB, "
           "RSS at the end %.1f MB; log: %d success, %d warning, %d alert"
           % (count, elapsed, count / elapsed, peak, samples[-1][2], log.count(b": success:"),
              log.count(b"\nwarning:"), log.count(b"\nalert:")))
    report("  CPU per message while delivering: " + ", ".join(
        "%s %.3f ms" % (name, 1000 * (cpu1[name] - cpu0.get(name, 0.0)) / count) for name in sorted(cpu1)))
    machine = [b - a for a, b in zip(machine0, machine1)]
    busy = machine[0]
    report("  the whole machine while delivering: %.3f ms busy per message (kernel threads included); "
           "idle %.0f %%, iowait %.0f %%, steal %.0f %% of its CPU time"
           % (1000 * busy / count, *(100 * x for x in (machine_shares(machine) or (0, 0, 0, 0))[1:])))
    d = disk_delta(disk0, disk1)
    if d:  # reads: queue files the kernel paged out before they were delivered
        report("  the disk (whole device) while delivering: %.2f reads, %.1f block writes (%.1f kB) and %.1f cache"
               " flushes per message; %.2f ms per write or flush request; %.2f discards per message,"
               " %.2f ms each" % (d.reads / count, d.writes / count, d.kb_written / count, d.flushes / count,
                                  d.write_ms / max(1, d.writes + d.flushes), d.discards / count,
                                  d.discard_ms / max(1, d.discards)))
    for frac in (0.1, 0.5, 0.9):  # the rate between successive tenths: does it fall as the queue empties?
        lo = next(s for s in samples if s[1] >= count * (frac - 0.1))
        hi = next(s for s in samples if s[1] >= count * frac)
        if hi[0] > lo[0]:
            report("  %3.0f%%-%3.0f%% delivered: %.1f msg/s" % (100 * (frac - 0.1), 100 * frac,
                                                            (hi[1] - lo[1]) / (hi[0] - lo[0])))
    return count / elapsed, peak, busy / count


def main():
    """Baseline, the big queue, the baseline again; write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--baseline", type=int, default=10000)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "docs", "benchmarks-scale.txt"))
    args = parser.parse_args()
    import tempfile
    lines = []

    def report(line):
        """Print a result line and keep it for the file."""
        print(line, file=sys.stderr, flush=True)
        lines.append(line)
    wait_for_settled_frees(lambda text: print(text, file=sys.stderr, flush=True))
    report("# qmail-send scale check, %s, %d cores, load average %.1f, %s" % (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count(), os.getloadavg()[0],
        "as root (qmail's accounts; deliveries as nobody)" if os.geteuid() == 0 else "single-user tree"))
    base = tempfile.mkdtemp(prefix="pyqmail-scale-")
    os.chmod(base, 0o755)  # the queue owner and the recipient must reach the trees
    spread_runs(base)  # each run's tree in fresh block groups, see bench_procs.py
    # the baseline before and after the big run: two runs of the same size differ by 10 % or more, and
    # the machine's speed drifts over minutes, so the big run is judged against both
    before = run(os.path.join(base, "small-before"), args.baseline, report)
    big = run(os.path.join(base, "big"), args.messages, report)
    after = run(os.path.join(base, "small-after"), args.baseline, report)
    rates = (before[0], after[0])
    report("rate with %d queued / with %d queued: %.2f (%.2f against the run before, %.2f against the run after);"
           " busy CPU per message: %.2f; qmail-send peak RSS %.1f MB with %d queued (limit 200 MB)"
           % (args.messages, args.baseline, big[0] / (sum(rates) / 2), big[0] / rates[0], big[0] / rates[1],
              big[2] / ((before[2] + after[2]) / 2), big[1], args.messages))
    report("# load average at the end: %.1f" % os.getloadavg()[0])
    remove_tree(base)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("written to %s" % args.out, file=sys.stderr)


if __name__ == "__main__":
    main()
