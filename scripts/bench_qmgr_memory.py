"""qmail-send's memory with a big remote queue (issue 19): N messages of R remote recipients each (100,000 x 50 by
default) written straight into a tree's queue (info/N, remote/N, mess/N, as qmail-send's todo pass leaves them),
one destination that accepts connections but never greets (the simulator's slow greeting, longer than the run),
then qmail-start; qmail-send's VmHWM and VmRSS (/proc) are sampled while it schedules the queue and its
deliveries hang, for each control/scheduler given.

Usage: python scripts/bench_qmgr_memory.py [--messages 100000] [--recipients 50] [--seconds 60]
       [--schedulers qmgr,qmail]
Prints one line per scheduler; run it as root or as the tree's single user (tests/mailsystem.py decides).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
import smtpsim  # noqa: E402
from conftest import Processes  # noqa: E402
from mailsystem import MailSystem, make_system_tree  # noqa: E402

SPLIT = 23
SENDER = b"list-owner@bench.example"


def fill(tree, messages, recipients):
    """Write the queue files of the messages, owned as the split directories they are in."""
    queue = Path(tree) / "queue"
    owners = {d: os.stat(queue / d / "0") for d in ("mess", "info", "remote")}
    body = b"Subject: memory\n\n" + b"A line of text.\n" * 20
    for n in range(1, messages + 1):
        records = b"".join(b"Tr%d.%d@d%d.example\0" % (n, j, j % 10) for j in range(recipients))
        for d, data in (("mess", body), ("info", b"F" + SENDER + b"\0"), ("remote", records)):
            fd = os.open("%s/%s/%d/%d" % (queue, d, n % SPLIT, n), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o644 if d == "mess" else 0o600)
            try:
                os.write(fd, data)
                os.fchown(fd, owners[d].st_uid, owners[d].st_gid)
            finally:
                os.close(fd)
        if n % 10000 == 0:
            print("  %d messages written" % n, file=sys.stderr, flush=True)


def memory(pid):
    """Return (VmHWM, VmRSS) in MB of a process."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) / 1024
    return out.get("VmHWM", 0.0), out.get("VmRSS", 0.0)


def measure(base, scheduler, args, procs):
    """One tree, one scheduler: fill, start, sample; return a result line."""
    tree = make_system_tree(base / scheduler, "bench.example")
    control = tree / "control"
    (control / "scheduler").write_text(scheduler + "\n")
    (control / "concurrencyremote").write_text("100\n")
    (control / "timeoutremote").write_text("%d\n" % (args.seconds * 10))
    began = time.time()
    fill(tree, args.messages, args.recipients)
    filled = time.time() - began
    domains = [("d%d.example" % k, smtpsim.slow_greeting(args.seconds * 10)) for k in range(10)]
    with smtpsim.Simulator(domains, prefix="127.0.26.") as sim:
        sim.write_routes(tree)
        system = MailSystem(procs, tree)
        peak, rss, started = 0.0, 0.0, time.time()
        while time.time() - started < args.seconds:
            peak, rss = memory(system.pid)
            time.sleep(0.5)
        log = system.log()
        system.kill()
    starts = log.count(b"starting delivery ")
    return ("%-6s %d messages x %d recipients: qmail-send VmHWM %.1f MB, VmRSS %.1f MB after %d s; %d "
            "deliveries started (each run hanging at a mute greeting); queue written in %.0f s"
            % (scheduler, args.messages, args.recipients, peak, rss, args.seconds, starts, filled))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100000)
    parser.add_argument("--recipients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--schedulers", default="qmgr,qmail")
    args = parser.parse_args()
    procs = Processes()
    base = Path(tempfile.mkdtemp(prefix="pyqmail-memory-"))
    os.chmod(base, 0o755)
    try:
        for scheduler in args.schedulers.split(","):
            print(measure(base, scheduler, args, procs), flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
