"""CPU per message and per delivery of qmail-send and qmail-clean alone (issue 23): the real qmail-send and
qmail-clean over a queue on tmpfs, the spawners replaced by a stand-in that answers every delivery `K`.

Usage (root, or a single-user tree when not): python scripts/bench_send.py [-n 1000] [-r 10] [--dir /dev/shm]
       [--rounds 3] [--rate 0] [--delay 0] [--baseline DIR] [--profile FILE]
-n messages of -r local recipients each (smtp-source -r's bench, 2bench, ...@test.example) are queued in this
process with lib/queue's Injection (as qmail-smtpd queues in its own process), their todo/N names set aside;
then qmail-send is started wired by hand to a stand-in qmail-lspawn and qmail-rspawn (a small Python program
speaking the spawner protocol: the limit byte, then `K` for every request, at once or --delay ms after it, so
that reports come back one by one as qmail-lspawn's do) and the real qmail-clean.
Once qmail-send has logged its status line, the todo/N names are put back, at once or --rate a second (each
then with its own trigger pull, as qmail-queue pulls it, so qmail-send takes them as they come); the round ends
when every message has been logged `end msg` and its files are gone. Prints, per message and per delivery,
the user and system CPU qmail-send and qmail-clean used from the release to the end (their start-up is not
counted). The tree lives under --dir: on tmpfs (the default) fsync costs nothing, so the figure is the
Python work and the system calls.

--baseline DIR: a directory holding another `pyqmail` package (e.g. a copy of the installed one made before a
change); rounds then alternate between it (PYTHONPATH=DIR) and the installed package, and both are printed.
--profile FILE: run qmail-send (into FILE) and qmail-clean (into FILE.clean) under cProfile, counting CPU time
(one round, the installed package, or the one PYTHONPATH names) and print their top functions; the profiles
cover the whole runs, start-up included, and the profiler's own cost (a clock read per call) inflates the
figures printed beside them, calls most.
"""

import argparse
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
from bench_procs import own_cpu  # noqa: E402
from conftest import program, qenv  # noqa: E402
from mailsystem import make_system_tree  # noqa: E402

STANDIN = r'''
import os, select, sys, time
delay = float(sys.argv[1])  # seconds each delivery takes (0: answered at once)
os.write(1, bytes([120]))
buf, due = b"", []
while True:
    timeout = None if not due else max(0.0, due[0][0] - time.monotonic())
    if select.select([0], [], [], timeout)[0]:
        data = os.read(0, 65536)
        if not data:
            break
        buf += data
        now = time.monotonic()
        while True:
            i = buf.find(b"\0", 1)
            i = buf.find(b"\0", i + 1) if i > 0 else -1
            i = buf.find(b"\0", i + 1) if i > 0 else -1
            if i < 0:
                break
            due.append((now + delay, buf[:1] + b"Kdid 0+0+1/\n\0"))
            buf = buf[i + 1:]
    now = time.monotonic()
    out = []
    while due and due[0][0] <= now:
        out.append(due.pop(0)[1])
    if out:
        os.write(1, b"".join(out))
'''

PROFILED = r'''
import cProfile, sys, time
from pyqmail.commands import qmail_send as m
from pyqmail.lib.send.sendstart import start
profile = cProfile.Profile(time.process_time)  # CPU, not wall time: a write that wakes a peer is not charged its run
profile.enable()
m.serve(m.Send(*start()))
profile.disable()
m.flush_log()
profile.dump_stats(sys.argv[1])
'''

CLEAN_PROFILED = r'''
import cProfile, sys, time
from pyqmail.commands import qmail_clean as m
profile = cProfile.Profile(time.process_time)
profile.enable()
try:
    m.body([])
finally:
    profile.disable()
    profile.dump_stats(sys.argv[1])
'''

BODY = b"Subject: bench\n\n" + (b"x" * 70 + b"\n") * 28  # 2 KB, as bench_lspawn.py's


def locals_(recipients):
    """bench, 2bench, 3bench ...: smtp-source -r's recipients."""
    return ["bench"] + ["%dbench" % i for i in range(2, recipients + 1)]


def setup(base, count, recipients):
    """Make the tree and queue count messages; return (tree, hold), hold holding their todo/N names."""
    from pyqmail.lib.queue.queue import Injection
    os.chmod(base, 0o755)
    tree = make_system_tree(base / "qmail")
    hold = base / "hold"
    hold.mkdir()
    rcpts = [b"%s@test.example" % r.encode() for r in locals_(recipients)]
    queue = os.open(tree / "queue", os.O_RDONLY | os.O_DIRECTORY)
    umask = os.umask(0o033)
    try:
        for _ in range(count):
            i = Injection(os.getpid(), os.getuid(), queue)
            fd, _ = i.open_mess()
            i.write_message(fd, [BODY])
            i.commit(b"sender@bench.example", rcpts)
    finally:
        os.umask(umask)
        os.close(queue)
    for name in os.listdir(tree / "queue" / "todo"):
        os.rename(tree / "queue" / "todo" / name, hold / name)
    return tree, hold


def start_send(base, tree, env, profile, delay):
    """Start the stand-ins, qmail-clean and qmail-send wired as qmail-start wires them; return (send, clean,
    helpers, log path)."""
    standin = base / "standin.py"
    standin.write_text(STANDIN)
    procs, ends = [], []
    standins = [[sys.executable, str(standin), str(delay)]] * 2
    clean = [program("qmail-clean")] if not profile else [sys.executable, "-c", CLEAN_PROFILED, profile + ".clean"]
    for argv in standins + [clean]:
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        procs.append(subprocess.Popen(argv, stdin=to_r, stdout=from_w, env=env))
        os.close(to_r)
        os.close(from_w)
        ends += [to_w, from_r]
    log = base / "send.log"
    logfd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 20) for fd in [logfd] + ends]

    def wire():
        for target, fd in enumerate(high):
            os.dup2(fd, target)
    argv = [program("qmail-send")]
    if profile:
        argv = [sys.executable, "-c", PROFILED, profile]
    send = subprocess.Popen(argv, env=env, preexec_fn=wire, pass_fds=(3, 4, 5, 6))
    for fd in [logfd] + ends + high:
        os.close(fd)
    return send, procs[2], procs, log


class LogCount:
    """Counts of a text in a growing log, read from where the last look ended."""

    def __init__(self, path):
        self.path, self.offset, self.tail, self.counts = path, 0, b"", {}

    def count(self, text):
        """How many lines so far contain text (text is one of the few asked for; lines are read once)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            data = b""
        self.offset += len(data)
        data, self.tail = (self.tail + data).rpartition(b"\n")[0::2] if b"\n" in data else (b"", self.tail + data)
        for key in list(self.counts) + ([text] if text not in self.counts else []):
            self.counts[key] = self.counts.get(key, 0) + data.count(key)
        return self.counts[text]


def wait_for(condition, what, timeout=600):
    """Poll condition until true or the deadline."""
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise SystemExit("bench_send: timed out waiting for %s" % what)
        time.sleep(0.01)


def queue_empty(tree):
    """True when no message file is left in mess/ (qmail-clean removes it last)."""
    mess = tree / "queue" / "mess"
    return not any(os.listdir(mess / d) for d in os.listdir(mess))


def release(tree, hold, rate):
    """Put the held todo/N names back and pull the trigger: all at once, or rate messages a second, each
    with its own pull (as qmail-queue pulls it)."""
    from pyqmail.lib.queue.queue import pull_trigger
    todo, trigger = tree / "queue" / "todo", str(tree / "queue" / "lock" / "trigger")
    start = time.time()
    for i, name in enumerate(sorted(os.listdir(hold), key=int)):
        if rate:
            ahead = start + i / rate - time.time()
            if ahead > 0:
                time.sleep(ahead)
        os.rename(hold / name, todo / name)
        if rate:
            pull_trigger(trigger)
    pull_trigger(trigger)


def run(base, tree, hold, count, baseline, profile, rate, delay):
    """One round: start qmail-send, release the messages, wait for the end; return (seconds, send user,
    send system, clean user, clean system)."""
    env = qenv(tree)
    if baseline:
        env["PYTHONPATH"] = baseline
    send, clean, procs, log = start_send(base, tree, env, profile, delay)
    try:
        counter = LogCount(log)
        counter.count(b"end msg ")
        wait_for(lambda: counter.count(b"status: local ") >= 1, "qmail-send's status line", 60)
        s0 = own_cpu(send.pid, user=True), own_cpu(send.pid)
        c0 = own_cpu(clean.pid, user=True), own_cpu(clean.pid)
        start = time.time()
        release(tree, hold, rate)
        wait_for(lambda: counter.count(b"end msg ") >= count and queue_empty(tree), "every message to end")
        seconds = time.time() - start
        s1 = own_cpu(send.pid, user=True), own_cpu(send.pid)
        c1 = own_cpu(clean.pid, user=True), own_cpu(clean.pid)
    finally:
        send.send_signal(signal.SIGTERM)
        send.wait(60)
        for p in procs:
            p.wait(60)
    failed = counter.count(b": failure: ") + counter.count(b": deferral: ") + counter.count(b"warning:")
    if failed:
        raise SystemExit("bench_send: %d failures, deferrals or warnings in the log" % failed)
    return (seconds, s1[0] - s0[0], (s1[1] - s1[0]) - (s0[1] - s0[0]),
            c1[0] - c0[0], (c1[1] - c1[0]) - (c0[1] - c0[0]))


def median(values):
    """The middle value (the mean of the two middle ones for an even count)."""
    v = sorted(values)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def print_profile(path, top=25):
    """Print the profile's top functions by own time and by cumulative time."""
    import pstats
    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main():
    """Run the rounds and print CPU per message and per delivery."""
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("-n", type=int, default=1000, help="messages per round (%(default)s)")
    a.add_argument("-r", type=int, default=10, help="recipients per message (%(default)s)")
    a.add_argument("--dir", default="/dev/shm", help="where the tree goes (%(default)s)")
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--rate", type=float, default=0,
                   help="messages released a second, each with a trigger pull (0: all at once, the default)")
    a.add_argument("--delay", type=float, default=0,
                   help="milliseconds the stand-in takes per delivery (0: answered at once, the default)")
    a.add_argument("--baseline", help="a directory holding another pyqmail package: rounds alternate")
    a.add_argument("--profile", help="cProfile qmail-send into this file (one round)")
    args = a.parse_args()
    variants = [("installed", None)]
    if args.baseline:
        variants = [("baseline", os.path.abspath(args.baseline)), ("installed", None)]
    rounds = 1 if args.profile else args.rounds
    results = {name: [] for name, _ in variants}
    deliveries = args.n * args.r
    print("qmail-send and qmail-clean alone: %d messages x %d recipients, released %s, deliveries taking %g ms, "
          "tree under %s" % (args.n, args.r, "%g a second" % args.rate if args.rate else "at once", args.delay,
                             args.dir))
    for r in range(rounds):
        for name, baseline in (variants if r % 2 == 0 else variants[::-1]):
            base = Path(tempfile.mkdtemp(prefix="pyqmail-bench-send-", dir=args.dir))
            try:
                tree, hold = setup(base, args.n, args.r)
                figures = run(base, tree, hold, args.n, baseline, args.profile, args.rate, args.delay / 1000)
            finally:
                shutil.rmtree(base, ignore_errors=True)
            results[name].append(figures)
            seconds, su, ss, cu, cs = figures
            print("round %d %-9s %.2f s; qmail-send %.0f+%.0f us/msg (%.1f+%.1f us/delivery); "
                  "qmail-clean %.0f+%.0f us/msg (user+system)"
                  % (r + 1, name, seconds, 1e6 * su / args.n, 1e6 * ss / args.n, 1e6 * su / deliveries,
                     1e6 * ss / deliveries, 1e6 * cu / args.n, 1e6 * cs / args.n), flush=True)
    for name, rows in results.items():
        med = [median(col) for col in zip(*rows)]
        send, clean = median([su + ss for _, su, ss, _, _ in rows]), median([cu + cs for _, _, _, cu, cs in rows])
        print("median %-9s qmail-send %.0f us/msg (%.0f user, %.0f system; %.1f us/delivery); qmail-clean %.0f us/msg "
              "(%.0f user, %.0f system)" % (name, 1e6 * send / args.n, 1e6 * med[1] / args.n, 1e6 * med[2] / args.n,
                                            1e6 * send / deliveries, 1e6 * clean / args.n, 1e6 * med[3] / args.n,
                                            1e6 * med[4] / args.n))
    if args.profile:
        print_profile(args.profile)
        print("qmail-clean:")
        print_profile(args.profile + ".clean")


if __name__ == "__main__":
    main()
