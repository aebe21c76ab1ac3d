"""CPU per local delivery of qmail-lspawn and its reused qmail-local workers (issue 23), driven over its pipes as
qmail-send drives it, without qmail-send, SMTP or a benchmark peer: what the delivery side itself costs.

Usage (root, or a single-user tree when not): python scripts/bench_lspawn.py [-n 3000] [-r 10] [-c 10]
       [--dir /dev/shm] [--rounds 3] [--layer lspawn|worker|local]
A message of 2 KB is queued once with the real qmail-queue; then -n deliveries of it (-r of them per "message",
each to a different local part assigned to one Maildir, as smtp-source -r does) are asked with up to -c in
flight (concurrencylocal), every report read. The tree lives under --dir: on tmpfs (the default) fsync costs
nothing and no inode allocator scans, so the figure is the Python work and the system calls; on a disk it
includes the file system. Prints user and system CPU per delivery of qmail-lspawn and its children (wait4's
/proc: its live children and those it reaped included).

--layer takes the delivery side apart, to show what each layer adds:
  lspawn  the whole of it, as above (the default);
  worker  reused qmail-local workers (lib/spawn/localworkers.py) driven by this process as qmail-lspawn drives
          them, without qmail-lspawn: the workers' CPU per delivery (their IPC, resets and qmail-local);
  local   qmail-local's body called in one process as the delivery account, one delivery after another, no
          worker and no IPC: qmail-local's own CPU per delivery.
"""

import argparse
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
from bench_procs import own_cpu, subtree_cpu  # noqa: E402
from conftest import program, qenv, queue_message, queued  # noqa: E402
from mailsystem import assign_users, delivery_account, make_home, make_system_tree  # noqa: E402
from pyqmail.lib.spawn.spawnproto import encode_request  # noqa: E402


def setup(base, recipients):
    """Make the tree, a home with a Maildir and users/assign for bench, 2bench ... ; return (tree, messid)."""
    os.chmod(base, 0o755)
    tree = make_system_tree(base / "qmail")
    home = make_home(base)
    assign_users(tree, [("=", local, str(home), "", "") for local in locals_(recipients)])
    body = b"Subject: bench\n\n" + (b"x" * 70 + b"\n") * 28
    assert queue_message(tree, body, b"Fsender@bench.example\0Tbench@test.example\0\0") == 0
    n = max(queued(tree))
    return tree, b"%d/%d" % (n % 23, n)


def locals_(recipients):
    """bench, 2bench, 3bench ...: smtp-source -r's recipients."""
    return ["bench"] + ["%dbench" % i for i in range(2, recipients + 1)]


def run(tree, messid, count, recipients, concurrency):
    """Drive one qmail-lspawn through count deliveries; return (seconds, user CPU, system CPU, failures)."""
    p = subprocess.Popen([program("qmail-lspawn"), "./Maildir/"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=qenv(tree))
    out, inp = p.stdout.fileno(), p.stdin.fileno()
    buf = os.read(out, 1)[1:]
    rcpts = [b"%s@test.example" % r.encode() for r in locals_(recipients)]
    free = list(range(concurrency))
    asked = done = failed = 0
    start = time.time()
    while done < count:
        while free and asked < count:
            os.write(inp, encode_request(free.pop(), messid, b"sender@bench.example", rcpts[asked % recipients]))
            asked += 1
        select.select([out], [], [], 30)
        buf += os.read(out, 65536)
        while True:
            end = buf.find(b"\0", 1)
            if end < 0:
                break
            report, buf = buf[:end], buf[end + 1:]
            free.append(report[0])
            failed += report[1:2] != b"K"
            done += 1
    seconds = time.time() - start
    user, system, own = cpu(p.pid)
    p.stdin.close()
    p.stdout.read()
    p.wait()
    return seconds, user, system, own, failed


def local_argv(tree, recipient):
    """qmail-local's operands for recipient as qmail-lspawn passes them to a worker (`--` first)."""
    home = str(Path(tree).parent / "home").encode()
    local = recipient.split(b"@")[0]  # users/assign's simple entries: no dash, no extension
    return [b"--", delivery_account().pw_name.encode(), home, local, b"", b"", b"test.example",
            b"sender@bench.example", b"./Maildir/"]


def mess_path(tree, messid):
    """The queued message's file."""
    return os.path.join(tree, "queue", "mess", messid.decode())


def run_local(tree, messid, count, recipients, concurrency):
    """Call qmail-local's body count times in a child that is the delivery account; return the run's figures
    (no worker, no IPC: concurrency is not used)."""
    from pyqmail.commands import qmail_lspawn
    qmail_lspawn.preload()
    rcpts = [b"%s@test.example" % r.encode() for r in locals_(recipients)]
    fdmess = os.open(mess_path(tree, messid), os.O_RDONLY)  # opened as root, as qmail-lspawn does
    before, start = os.times(), time.time()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            pw = delivery_account()
            if os.geteuid() == 0:
                os.setgroups([pw.pw_gid])
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
            null = os.open(os.devnull, os.O_WRONLY)
            failed = 0
            for i in range(count):
                os.dup2(fdmess, 0)
                os.dup2(null, 1)
                os.dup2(null, 2)
                failed += qmail_lspawn.serve_local(local_argv(tree, rcpts[i % recipients])) != 0
                os.chdir("/")
            code = min(failed, 1)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    after = os.times()
    os.close(fdmess)
    user, system = after.children_user - before.children_user, after.children_system - before.children_system
    return time.time() - start, user, system, (0.0, 0.0), count if status else 0


def run_worker(tree, messid, count, recipients, concurrency):
    """Drive reused workers (LocalWorkers) with count deliveries, up to concurrency at once, as qmail-lspawn
    does; return the run's figures (the workers' CPU, reaped at the end)."""
    from pyqmail.commands import qmail_lspawn
    from pyqmail.lib.spawn.localworkers import LocalWorkers
    qmail_lspawn.preload()
    pw = delivery_account()
    rcpts = [b"%s@test.example" % r.encode() for r in locals_(recipients)]
    workers = LocalWorkers(qmail_lspawn.become_code, qmail_lspawn.serve_local)
    pipes, asked, done, failed = {}, 0, 0, 0
    before, start = os.times(), time.time()
    while done < count:
        while len(pipes) < concurrency and asked < count:
            fdmess = os.open(mess_path(tree, messid), os.O_RDONLY)
            r, w = os.pipe()
            pid = workers.launch((pw.pw_uid, pw.pw_gid), local_argv(tree, rcpts[asked % recipients]), fdmess, w)
            os.close(fdmess)
            os.close(w)
            pipes[pid] = r
            asked += 1
        busy = workers.busy_socks()
        for fd in select.select(list(busy), [], [], 30)[0]:
            worker = busy[fd]
            failed += workers.answer(worker) != 0
            r = pipes.pop(worker.pid)
            while os.read(r, 4096):
                pass
            os.close(r)
            done += 1
    seconds = time.time() - start
    for worker in list(workers.workers.values()):
        workers.retire(worker)
    for pid in list(workers.workers):
        os.waitpid(pid, 0)
    after = os.times()
    user, system = after.children_user - before.children_user, after.children_system - before.children_system
    return seconds, user, system, (0.0, 0.0), failed


def cpu(pid):
    """Return (user, system, (own user, own system)) seconds of pid and its children, live or reaped."""
    user, own_user = subtree_cpu(pid, user=True), own_cpu(pid, user=True)
    return user, subtree_cpu(pid) - user, (own_user, own_cpu(pid) - own_user)


def main():
    """Run the rounds and print CPU per delivery."""
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("-n", type=int, default=3000, help="deliveries per round (%(default)s)")
    a.add_argument("-r", type=int, default=10, help="recipients per message (%(default)s)")
    a.add_argument("-c", type=int, default=10, help="deliveries in flight (%(default)s)")
    a.add_argument("--dir", default="/dev/shm", help="where the tree goes (%(default)s)")
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--layer", choices=("lspawn", "worker", "local"), default="lspawn",
                   help="what to drive: qmail-lspawn, its workers, or qmail-local in one process (%(default)s)")
    args = a.parse_args()
    drive = {"lspawn": run, "worker": run_worker, "local": run_local}[args.layer]
    for r in range(args.rounds):
        base = Path(tempfile.mkdtemp(prefix="pyqmail-bench-lspawn-", dir=args.dir))
        try:
            tree, messid = setup(base, args.r)
            seconds, user, system, own, failed = drive(tree, messid, args.n, args.r, args.c)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        itself = ("; qmail-lspawn itself %.1f us user, %.1f us system" % (1e6 * own[0] / args.n, 1e6 * own[1] / args.n)
                  if args.layer == "lspawn" else "")
        print("%s, round %d: %d deliveries (-r %d, -c %d) in %.2f s, %.0f/s; CPU per delivery %.1f us user, %.1f us "
              "system, %.1f us in all%s; %d failed"
              % (args.layer, r + 1, args.n, args.r, args.c, seconds, args.n / seconds, 1e6 * user / args.n,
                 1e6 * system / args.n, 1e6 * (user + system) / args.n, itself, failed), flush=True)


if __name__ == "__main__":
    main()
