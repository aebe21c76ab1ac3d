"""Per-message Python CPU with hot caches (issue 4): qmail-qmqpd's connection() and qmail-local's
Maildir delivery, each called in a loop in one process, every call's user-mode and kernel CPU summed.

Usage: python scripts/bench_hot.py [-n 5000] [--rounds 5] [--no-settle] [--out docs/benchmarks-hot.txt]
Run through scripts/bench-hot, which installs everything first.

bench_e2e.py shows what a message costs with every process of the pipeline taking turns on the cores;
this shows what the Python code itself costs without the cache misses of those turns, so that a change
to it can be measured to a few microseconds. Each round runs in a fresh process:
- qmail-qmqpd, as the queue's owner (so it queues in its own process, as in bench_e2e.py): each call
  gets a 2 KB QMQP request on a socketpair as fds 0 and 1, tcpserver's TCP* variables set; after it,
  the reply is checked and the message's files go back to the pool as qmail-clean gives them.
- qmail-local, as the delivery account (nobody as root): each call delivers a 2 KB message to
  ./Maildir/ of a home of its own, with the arguments qmail-lspawn gives.
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]

DOMAIN = "bench.example"
HEADER = b"".join(b"X-Header-%d: a header line of moderate length\n" % i for i in range(10))
MESSAGE = HEADER + b"\n" + (b"x" * 79 + b"\n") * 24
TCP_ENV = {"PROTO": "TCP", "TCPREMOTEIP": "127.0.0.1", "TCPREMOTEPORT": "40000",
           "TCPLOCALIP": "127.0.0.1", "TCPLOCALPORT": "628"}


def user_sys():
    """This process's user-mode and kernel CPU seconds so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def give_back(tree):
    """Hand every queued message's files to qmail-clean's code, as qmail-send's requests would."""
    from pyqmail.commands import qmail_clean
    here = os.open(".", os.O_RDONLY)
    os.chdir(os.path.join(tree, "queue"))
    try:
        for name in os.listdir("todo"):
            for line in (b"todo/" + name.encode(), b"foop/" + name.encode()):
                outcome = qmail_clean.start(line)
                if isinstance(outcome, str):  # its last unlink is left to the caller (qmail-clean's threads)
                    outcome = qmail_clean.answer_unlinked(qmail_clean.removed(outcome))
                if outcome != b"+":
                    sys.exit("bench_hot: qmail-clean's code could not remove message %s" % name)
    finally:
        os.fchdir(here)
        os.close(here)


def measure_qmqpd(tree, n):
    """Call qmail-qmqpd's connection() n times; return (user, kernel) seconds spent in the calls."""
    os.environ.update(TCP_ENV, QMAILHOME=tree)
    from pyqmail.commands import qmail_qmqpd
    from pyqmail.lib.qmqp import qmqp
    from pyqmail.lib.queue import queuehere
    if not queuehere.possible(tree):
        sys.exit("bench_hot: qmail-qmqpd would run qmail-queue here (not the queue's owner?)")
    request = qmqp.encode_request(MESSAGE, b"sender@" + DOMAIN.encode(), [b"bench@" + DOMAIN.encode()])
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 2)
    give_back(tree)
    user = kernel = 0.0
    for _ in range(n):
        client, server = socket.socketpair()
        client.sendall(request)
        os.dup2(server.fileno(), 0)
        os.dup2(server.fileno(), 1)
        server.close()
        u0, k0 = user_sys()
        qmail_qmqpd.connection()
        u1, k1 = user_sys()
        user, kernel = user + u1 - u0, kernel + k1 - k0
        os.dup2(null, 0)
        os.dup2(null, 1)
        reply = client.recv(200)
        client.close()
        if not reply.split(b":", 1)[-1].startswith(b"Kok"):
            sys.exit("bench_hot: qmail-qmqpd answered %r" % reply)
        give_back(tree)
    return user, kernel


def measure_local(home, n):
    """Call qmail-local's delivery n times; return (user, kernel) seconds spent in the calls."""
    from pyqmail.commands import qmail_local
    from pyqmail.lib.util import envsnapshot
    from pyqmail.lib.util.program import call
    fd, path = tempfile.mkstemp()
    os.write(fd, b"Received: (qmail 1 invoked from network); 21 Nov 2026 00:00:00 -0000\n" + MESSAGE)
    os.unlink(path)
    argv = ["--", "bench", home, "bench", "", "", DOMAIN, "sender@" + DOMAIN, "./Maildir/"]
    environ = envsnapshot.take()
    report_r, report_w = os.pipe()
    user = kernel = 0.0
    for _ in range(n):
        os.dup2(fd, 0)
        os.dup2(report_w, 1)
        u0, k0 = user_sys()
        code = call("qmail-local", qmail_local.body, 111, argv=list(argv))
        u1, k1 = user_sys()
        user, kernel = user + u1 - u0, kernel + k1 - k0
        report = os.read(report_r, 4096)
        if code != 0:
            sys.exit("bench_hot: qmail-local exited %d: %r" % (code, report))
        envsnapshot.restore(environ)
        os.chdir("/")
    return user, kernel


def child(program, where, n):
    """In a child process: measure, then print `user kernel` seconds per call."""
    out = os.dup(1)
    user, kernel = (measure_qmqpd if program == "qmail-qmqpd" else measure_local)(where, n)
    os.write(out, b"%.9f %.9f\n" % (user / n, kernel / n))
    return 0


def run_round(program, where, owner, n):
    """Run one round in a fresh interpreter as owner (uid, gid) if root; return (user, kernel) per call."""
    def become():
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(owner[1])
            os.setuid(owner[0])
    r = subprocess.run([sys.executable, __file__, "--child", program, where, str(n)], preexec_fn=become,
                       capture_output=True, cwd="/")
    if r.returncode != 0:
        sys.exit("bench_hot: %s round failed: %s" % (program, r.stderr.decode(errors="replace").strip()))
    user, kernel = (float(x) for x in r.stdout.split())
    return user, kernel


def main():
    """Set up a tree and a home, run the rounds, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--calls", type=int, default=5000, help="calls per round (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per program (default %(default)s)")
    parser.add_argument("--out", default="docs/benchmarks-hot.txt", help="results file (default %(default)s)")
    parser.add_argument("--no-settle", action="store_true", help="start at once even if a benchmark removed its"
                        " trees in the last 400 s (the kernel figures are then not comparable)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], int(args.child[2]))
    from bench_procs import remove_tree, spread_runs, wait_for_settled_frees
    from mailsystem import assign_users, make_home, make_system_tree
    waited = 0 if args.no_settle else wait_for_settled_frees(lambda text: print(text, file=sys.stderr, flush=True))
    base = Path(tempfile.mkdtemp(prefix="pyqmail-hot-"))
    os.chmod(base, 0o755)
    spread_runs(base)
    lines = []
    try:
        tree = base / "qmail"
        make_system_tree(tree, DOMAIN)
        home = make_home(base)
        assign_users(tree, [("=", "bench", str(home), "", "")])
        queue, homest = (tree / "queue").stat(), home.stat()
        commit = os.environ.get("PYQMAIL_COMMIT") or subprocess.run(
            ["git", "-C", HERE, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
        lines.append("# Hot per-call CPU, %s, %s, %d cores, load average %.1f; code: %s" % (
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.uname().nodename, os.cpu_count(),
            os.getloadavg()[0], commit or "unknown"))
        lines.append("# command: scripts/bench-hot %s; started %s" % (" ".join(sys.argv[1:]), "at once (--no-settle)"
                     if args.no_settle else "after waiting %.0f s for freed inodes to settle" % waited))
        for program, where, owner in (("qmail-qmqpd", str(tree), (queue.st_uid, queue.st_gid)),
                                      ("qmail-local", str(home), (homest.st_uid, homest.st_gid))):
            rounds = [run_round(program, where, owner, args.calls) for _ in range(args.rounds)]
            users = sorted(1e6 * u for u, _ in rounds)
            kernels = sorted(1e6 * k for _, k in rounds)
            lines.append("%-12s user mode %s us per call (median %.0f); kernel %s (median %.0f); %d calls a round"
                         % (program, " / ".join("%.0f" % u for u in users), users[len(users) // 2],
                            " / ".join("%.0f" % k for k in kernels), kernels[len(kernels) // 2], args.calls))
            print(lines[-1], flush=True)
    finally:
        remove_tree(base)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("written to %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
