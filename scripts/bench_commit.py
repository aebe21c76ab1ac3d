"""The queue's commit, qmail's order against pyqmail's (issue 23): in-process queueing (lib/queue/queuehere, what
qmail-smtpd's workers do) by K processes at once, alternating rounds, with the journal commits per message.

Usage (root): .venv/bin/python scripts/bench_commit.py [--dir DIR | --loop-mb 1024] [-k 1,4] [-n 150] [--rounds 5]
Without --dir, it makes a journaling ext4 (mkfs.ext4 on a file, mounted on a loop device) for the tree and
removes it at the end. `old` is qmail's order (mess/N fsynced as soon as written, then intd/N created, written
and fsynced); `new` is pyqmail's (both files' writeback started, then both fsynced): todo/N is linked after
both fsyncs either way. Journal commits come from /proc/fs/jbd2/<device>/info.
"""

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from statistics import median

MESSAGE = b"Subject: bench\n\n" + b"x" * 2000 + b"\n"


def inject(home, n, old):
    """In a child, as the queue's owner: queue n messages in this process; exits 0 when all are queued."""
    from pyqmail.lib.queue import queue, queuehere
    if old:  # qmail's order: fsync mess/N at once (commit's settle then has nothing left to do; intd/N's
        # writeback hint, right before its own fsync, changes nothing)
        queue.Injection.sync_behind = queue.Injection.sync
    st = os.stat(os.path.join(home, "queue"))
    os.chdir("/")
    os.setgroups([])
    os.setgid(st.st_gid)
    os.setuid(st.st_uid)
    for _ in range(n):
        q = queuehere.QueueHere(home, os.getuid())
        q.put(MESSAGE)
        if q.close(b"bench@example.org", [b"rcpt@example.org"]):
            os._exit(1)
    os._exit(0)


def commits(device):
    """Journal commits so far on device (None without a journal)."""
    try:
        names = [d for d in os.listdir("/proc/fs/jbd2") if d.startswith(device + "-")]
        with open("/proc/fs/jbd2/%s/info" % names[0]) as f:
            return int(f.readline().split()[0])
    except (OSError, IndexError):
        return None


def run(home, device, k, n, old):
    """K processes queueing n messages each at once; return (msg/s, journal commits per message or None)."""
    before = commits(device)
    start = time.perf_counter()
    pids = []
    for _ in range(k):
        pid = os.fork()
        if pid == 0:
            try:
                inject(home, n, old)
            finally:
                os._exit(1)
        pids.append(pid)
    failed = [pid for pid in pids if os.waitpid(pid, 0)[1] != 0]
    took = time.perf_counter() - start
    if failed:
        sys.exit("bench_commit: an injector failed")
    after = commits(device)
    return k * n / took, None if before is None else (after - before) / (k * n)


def main():
    """Parse the options, make the file system and tree, run the rounds, print the table."""
    p = argparse.ArgumentParser()
    p.add_argument("--dir", help="make the tree here instead of on a new loop-mounted ext4")
    p.add_argument("--loop-mb", type=int, default=1024)
    p.add_argument("-k", default="1,4", help="injecting processes at once, comma-separated (%(default)s)")
    p.add_argument("-n", type=int, default=150, help="messages per process (%(default)s)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_commit: needs root (qmail's accounts, mount)")
    base = tempfile.mkdtemp(prefix="pyqmail-commit-")
    os.chmod(base, 0o755)
    mounted = False
    try:
        where = args.dir or os.path.join(base, "fs")
        if not args.dir:
            image = os.path.join(base, "ext4.img")
            with open(image, "wb") as f:
                f.truncate(args.loop_mb << 20)
            subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
            os.mkdir(where)
            subprocess.run(["mount", "-o", "loop", image, where], check=True)
            mounted = True
        os.chmod(where, 0o755)
        home = os.path.join(where, "qmail-%d" % os.getpid())
        setup = os.path.join(os.path.dirname(sys.executable), "qmail-setup")
        subprocess.run([setup, home], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        device = os.path.basename(os.path.realpath(subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", "--target", where], capture_output=True, text=True).stdout.strip()))
        print("# bench_commit, %s UTC, %s, load average %.1f; tree on %s (%s)" % (
            time.strftime("%Y-%m-%d %H:%M", time.gmtime()), os.uname().nodename, os.getloadavg()[0], where,
            device), flush=True)
        for k in [int(x) for x in args.k.split(",")]:
            res = {"old": [], "new": []}
            for r in range(args.rounds):
                for label in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    rate, per = run(home, device, k, args.n, label == "old")
                    res[label].append((rate, per))
                    print("k=%d round %d %s: %.0f msg/s%s" % (k, r + 1, label, rate,
                          "" if per is None else ", %.2f journal commits per message" % per), flush=True)
            for label in ("old", "new"):
                rates = [x[0] for x in res[label]]
                pers = [x[1] for x in res[label] if x[1] is not None]
                print("k=%d %s: median %.0f msg/s (%s)%s" % (
                    k, label, median(rates), ", ".join("%.0f" % x for x in rates),
                    ", journal commits per message %.2f-%.2f" % (min(pers), max(pers)) if pers else ""))
    finally:
        if mounted:
            subprocess.run(["umount", os.path.join(base, "fs")])
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
