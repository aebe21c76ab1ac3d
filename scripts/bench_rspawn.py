"""qmail-rspawn alone: CPU per remote delivery of qmail-rspawn and everything it runs (its workers, or a forked
qmail-remote per delivery in older code), driven as qmail-send drives it, to Postfix's smtp-sink on loopback.

Usage: .venv/bin/python scripts/bench_rspawn.py [-n 2000] [-c 20]
(the interpreter of the environment pyqmail is installed in: scripts/test or scripts/bench-outbound make it)

It queues one message with qmail-queue, starts qmail-rspawn on a private tree whose control/smtproutes sends
remote.example to smtp-sink on 127.0.0.2, keeps -c deliveries of that message in flight until -n are done,
and prints the CPU of qmail-rspawn's whole process tree per delivery (user and kernel, from /proc), the rate,
and the memory of qmail-rspawn and its workers (Pss, from smaps_rollup) at the end.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
from bench_procs import pss_kb, subtree_cpu  # noqa: E402
from conftest import Processes, free_port, program, qenv, wait_port  # noqa: E402
from mailsystem import children, make_system_tree  # noqa: E402
from test_spawners import Spawner, queue_message  # noqa: E402


def main():
    """Run the deliveries and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="deliveries timed (default %(default)s)")
    parser.add_argument("-c", type=int, default=20, help="deliveries in flight (default %(default)s)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pyqmail-rspawn-"))
    os.chmod(base, 0o755)  # the tree's programs run as its accounts
    procs = Processes()
    try:
        tree = base / "qmail"
        make_system_tree(tree)
        port = free_port("127.0.0.2")
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        procs.start(["smtp-sink", *user, "127.0.0.2:%d" % port, "200"], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
        wait_port("127.0.0.2", port)
        (tree / "control" / "smtproutes").write_text(":[127.0.0.2]:%d\n" % port)
        messid, _ = queue_message(tree, rcpt=b"c@remote.example")
        s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))
        for d in range(args.c):  # warm up: workers started, connections made
            s.send(d, messid, b"s@example.org", b"c@remote.example")
        for _ in range(args.c):
            s.report()
        cpu0, user0, t0 = subtree_cpu(s.p.pid), subtree_cpu(s.p.pid, True), time.time()
        sent = got = 0
        free = list(range(args.c))
        while got < args.n:
            while free and sent < args.n:
                s.send(free.pop(), messid, b"s@example.org", b"c@remote.example")
                sent += 1
            delnum, report = s.report()
            if not report.startswith(b"K"):
                raise SystemExit("delivery failed: %r" % report)
            free.append(delnum)
            got += 1
        seconds = time.time() - t0
        cpu, user = subtree_cpu(s.p.pid) - cpu0, subtree_cpu(s.p.pid, True) - user0
        kids = children(s.p.pid)
        print("qmail-rspawn -n %d -c %d: %.3f ms CPU per delivery (%.3f in user mode), %.0f deliveries/s; "
              "%d processes below it, Pss with qmail-rspawn %.1f MB"
              % (args.n, args.c, 1000 * cpu / args.n, 1000 * user / args.n, args.n / seconds, len(kids),
                 (pss_kb(s.p.pid) + sum(pss_kb(k) for k in kids)) / 1024))
        s.finish()
    finally:
        procs.stop_all()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
