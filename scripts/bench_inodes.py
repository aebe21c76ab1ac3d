"""The file-creation cost behind qmail-clean's pool (issue 4): a queue's file operations, with and without reuse.

Usage: python3 scripts/bench_inodes.py [--messages N] [--live N] [DIR]

Per message, `create` does what qmail-queue and qmail-local did before the pool: create mess (2 KB),
intd (50 bytes) and a Maildir file, each written and fsynced, and, once more than --live messages are
in flight, unlink the oldest message's mess and intd files. `reuse` does the same with qmail-clean's
pool: the finished files are renamed into a pool and renamed back, overwritten and truncated, so only
the Maildir file is a new inode. Each run uses a fresh directory under DIR (default /var/tmp), removed
only at the end (a removal's freed inodes would tax the next run), and reports the CPU (user and
system) per message and the rate. Run it on the file system the queue is on.
"""

import argparse
import os
import shutil
import tempfile
import time
from collections import deque

MESSAGE = b"x" * 2048
ENVELOPE = b"u0\0p1\0Fa@example.org\0Tbench@bench.example\0"


def write_file(name, data, pool):
    """Write data to a new file name (from the pool when it has one), fsync and close it."""
    if pool:
        os.rename(pool.pop(), name)
        fd = os.open(name, os.O_WRONLY)
        os.write(fd, data)
        os.ftruncate(fd, len(data))
    else:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
    os.fsync(fd)
    os.close(fd)


def run(mode, base, messages, live):
    """Run one mode in a fresh directory under base; return (user ms, system ms, messages/s)."""
    work = tempfile.mkdtemp(prefix="%s-" % mode, dir=base)
    for sub in ("pool", "mess", "intd", "new"):
        os.mkdir(os.path.join(work, sub))
    here = os.getcwd()
    os.chdir(work)
    pools = {"mess": [], "intd": []}
    flight = deque()
    before, start = os.times(), time.time()
    try:
        for i in range(messages):
            write_file("mess/%d" % i, MESSAGE, pools["mess"] if mode == "reuse" else None)
            write_file("intd/%d" % i, ENVELOPE, pools["intd"] if mode == "reuse" else None)
            write_file("new/%d" % i, MESSAGE, None)
            flight.append(i)
            if len(flight) > live:
                old = flight.popleft()
                for kind in ("mess", "intd"):
                    if mode == "reuse":
                        os.rename("%s/%d" % (kind, old), "pool/%s.%d" % (kind, old))
                        pools[kind].append("pool/%s.%d" % (kind, old))
                    else:
                        os.unlink("%s/%d" % (kind, old))
        after, took = os.times(), time.time() - start
    finally:
        os.chdir(here)
    return ((after.user - before.user) * 1000 / messages, (after.system - before.system) * 1000 / messages,
            messages / took)


def main():
    """Run both modes, twice each, alternating, and print one line per run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--live", type=int, default=100, help="messages in flight (default 100)")
    parser.add_argument("dir", nargs="?", default="/var/tmp")
    args = parser.parse_args()
    print("# %s, %d messages, %d in flight, on %s" % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                        args.messages, args.live, args.dir))
    base = tempfile.mkdtemp(prefix="bench-inodes-", dir=args.dir)
    try:
        for mode in ("create", "reuse", "create", "reuse"):
            user, system, rate = run(mode, base, args.messages, args.live)
            print("%-6s  CPU per message: user %.3f ms, system %.3f ms;  %6.0f msg/s" % (mode, user, system, rate),
                  flush=True)
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
