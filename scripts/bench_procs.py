"""Reading /proc for the end-to-end benchmark: CPU and memory of a mail system's processes.

ProcSampler walks the process trees of a system's long-running processes every 0.1 s and keeps, for
every process it saw, its kind and the CPU it had used when last seen; it also keeps the peak of the
summed VmRSS (every sample) and of the summed Pss (every fifth sample, from smaps_rollup), and the
largest VmHWM (the kernel's own peak RSS of one process) by kind.
"""

import os
import shutil
import subprocess
import threading
import time
from collections import namedtuple

from conftest import FREED_STAMP, note_freed  # tests/: bench_e2e and bench_scale put it on sys.path
from mailsystem import children

TICK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid):
    """Return (comm, own CPU s, reaped children's CPU s, start time in ticks, and the same two CPU figures
    in user mode only: the program's own code, not the kernel's) of a process, or None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except OSError:
        return None
    head, _, tail = text.rpartition(")")
    fields = tail.split()
    if fields[0] == "Z":  # a zombie's times are being handed to its parent
        return None
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (head.partition("(")[2], (utime + stime) / TICK, (cutime + cstime) / TICK, int(fields[19]),
            utime / TICK, cutime / TICK)


Disk = namedtuple("Disk", "writes flushes reads kb_written write_ms discards discard_ms busy_ms")
Disk.__doc__ = ("A device's counts from /proc/diskstats: block writes (an fsync's cache flush is a request of "
                "its own that the device's write count also includes: writes here are the others, data and "
                "metadata), cache flushes, reads, kB written, ms spent writing, discards (blocks freed on a "
                "mount with `discard`), ms spent discarding, and ms the device had any request in flight (busy).")


def disk_counts(path):
    """Return the Disk counts so far of the device holding path, or None if /proc/diskstats does not list
    it (tmpfs, overlay)."""
    st = os.stat(path)
    try:
        with open("/proc/diskstats") as f:
            for line in f:
                fields = line.split()
                if (int(fields[0]), int(fields[1])) == (os.major(st.st_dev), os.minor(st.st_dev)):
                    writes, flushes = int(fields[7]), int(fields[18]) if len(fields) > 18 else 0
                    discards = (int(fields[14]), int(fields[17])) if len(fields) > 17 else (0, 0)
                    return Disk(writes - flushes, flushes, int(fields[3]), int(fields[9]) / 2, int(fields[10]),
                                *discards, int(fields[12]))
    except (OSError, ValueError, IndexError):
        pass
    return None


def disk_delta(before, after):
    """Return the Disk counts between two disk_counts() results, or None if either is None."""
    return Disk(*(b - a for a, b in zip(before, after))) if before and after else None


def machine_cpu():
    """Return the whole machine's CPU seconds so far as (busy, idle, iowait, steal), from /proc/stat:
    busy counts user, nice, system, irq and softirq time, the kernel threads' (writeback, discard) too."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return tuple(x / TICK for x in (user + nice + system + irq + softirq, idle, iowait, steal))


def machine_shares(delta):
    """Return the (busy, idle, iowait, steal) shares of the machine's CPU time in a machine_cpu() difference,
    or None when it covers no time."""
    total = sum(delta)
    return tuple(x / total for x in delta) if total > 0 else None


def proc_times(pid):
    """Return (own, reaped children's) CPU seconds of a process, or None if it is gone."""
    st = proc_stat(pid)
    return None if st is None else (st[1], st[2])


def own_cpu(pid, user=False):
    """CPU seconds a process used itself, in user mode only if asked (0 if it is gone)."""
    st = proc_stat(pid)
    return 0.0 if st is None else st[4 if user else 1]


def subtree_cpu(pid, user=False):
    """CPU seconds of a process and all its descendants, exited or running: each running process's own
    time plus its reaped children's (a reaped child's time includes the children it reaped)."""
    total = 0.0
    for p in [pid] + descendants(pid):
        st = proc_stat(p)
        if st is not None:
            total += st[4] + st[5] if user else st[1] + st[2]
    return total


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


def descendants(pid):
    """Return pid's children, their children, and so on."""
    found, todo = [], children(pid)
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children(p))
    return found


def status_kb(pid, keys=("VmRSS", "VmHWM")):
    """Return {key: kB} from /proc/<pid>/status (missing keys are 0)."""
    out = dict.fromkeys(keys, 0)
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in out:
                    out[name] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def pss_kb(pid):
    """Return the proportional set size of a process in kB (shared pages divided among their users)."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def count_files(directory):
    """Number of entries in a directory (0 if it cannot be read)."""
    try:
        with os.scandir(directory) as it:
            return sum(1 for _ in it)
    except OSError:
        return 0


def spread_runs(base):
    """Mark base as a top directory (chattr +T) so ext4 puts each run's tree under it in a block group of
    its own; return True if the flag took."""
    # Without it every new tree lands in the block groups right after base's, which are the ones the
    # previous benchmark's trees freed; on ext4 without a journal each file created there then scans past
    # the inodes freed in the last 60-360 s (recently_deleted), taxing whichever system runs first.
    try:
        return subprocess.run(["chattr", "+T", str(base)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0
    except OSError:
        return False


FREED_SETTLE = 400  # seconds: ext4 without a journal skips an inode freed 60 s ago, 360 s if its block is dirty


def remove_tree(base):
    """Remove a benchmark's directory tree and note when (see wait_for_settled_frees)."""
    shutil.rmtree(base, ignore_errors=True)
    note_freed()


def wait_for_settled_frees(say, settle=FREED_SETTLE):
    """Sleep until `settle` seconds have passed since a benchmark last removed its trees; return the
    seconds waited."""
    # Tens of thousands of inodes freed minutes ago make every file a run creates in those block groups
    # scan past them (recently_deleted): 10-20 % of all CPU in perf, and far more for one system than the
    # other depending on where its tree lands.
    try:
        left = os.stat(FREED_STAMP).st_mtime + settle - time.time()
    except OSError:
        return 0
    if left <= 0:
        return 0
    say("waiting %.0f s: a benchmark removed its trees %.0f s ago, and ext4 without a journal makes every "
        "new file scan the inodes freed in the last 60-360 s" % (left, settle - left))
    time.sleep(left)
    return left


class ProcSampler:
    """Samples every process under a system's roots in a thread until stop().

    roots() returns {pid: (kind, whole subtree?)}: a root's descendants are sampled too if asked, with the
    root's kind, or with their own comm when kind is None."""

    def __init__(self, roots, interval=0.1, pss_every=5):
        self.roots, self.interval, self.pss_every = roots, interval, pss_every
        self.seen = {}  # (pid, start time) -> [kind, CPU s when last seen, alive at the last sample, user CPU s]
        self.rss_peak = self.pss_peak = self.samples = 0
        self.hwm = {}  # kind -> largest VmHWM (kB) of one process of that kind
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        """Sample until stopped."""
        while not self.done.wait(self.interval):
            self.sample()

    def sample(self):
        """Read every process once: CPU, VmRSS, VmHWM (and Pss every pss_every samples)."""
        with self.lock:
            self.samples += 1
            with_pss = self.samples % self.pss_every == 1
            rss = pss = 0
            for v in self.seen.values():
                v[2] = False
            for root, (kind, subtree) in list(self.roots().items()):
                for pid in [root] + (descendants(root) if subtree else []):
                    st = proc_stat(pid)
                    if st is None:
                        continue
                    name = kind if kind is not None else st[0]
                    self.seen[(pid, st[3])] = [name, st[1], True, st[4]]
                    mem = status_kb(pid)
                    rss += mem["VmRSS"]
                    self.hwm[name] = max(self.hwm.get(name, 0), mem["VmHWM"])
                    if with_pss:
                        pss += pss_kb(pid)
            self.rss_peak = max(self.rss_peak, rss)
            self.pss_peak = max(self.pss_peak, pss)

    def cpu_by_kind(self, user=False):
        """Sample now; return ({kind: CPU seconds of every process seen, as last seen}, CPU seconds
        of the processes seen that have exited since, as last seen); in user mode only if asked."""
        self.sample()
        with self.lock:
            total, exited = {}, 0.0
            for kind, cpu, alive, user_cpu in self.seen.values():
                cpu = user_cpu if user else cpu
                total[kind] = total.get(kind, 0.0) + cpu
                if not alive:
                    exited += cpu
            return total, exited

    def memory(self):
        """Return {"rss_sum", "pss_sum", "hwm_max", "hwm_kind"} in kB, as peaks so far."""
        with self.lock:
            kind = max(self.hwm, key=self.hwm.get) if self.hwm else "-"
            return {"rss_sum": self.rss_peak, "pss_sum": self.pss_peak, "hwm_max": self.hwm.get(kind, 0),
                    "hwm_kind": kind}

    def stop(self):
        """Stop sampling."""
        self.done.set()
        self.thread.join()


def wait_gone(pids, timeout):
    """Wait until none of pids is alive (zombies count as gone); return those still alive."""
    deadline = time.time() + timeout
    left = list(pids)
    while left and time.time() < deadline:
        left = [p for p in left if proc_stat(p) is not None]
        if left:
            time.sleep(0.05)
    return left
