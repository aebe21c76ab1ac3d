"""Benchmark of the QMQP path (issue 2's report): CPU per invocation and QMQP acceptance rate.

Usage: python scripts/bench_qmqp.py [--messages N] [--out docs/benchmarks-qmqp.txt]
Run through scripts/bench-qmqp, which installs everything first.
"""

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def children_cpu():
    """CPU seconds (user + system) of every waited-for child so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def fsync_rate(directory, writers, count, size=2048):
    """Files per second that `writers` threads create, write, fsync and rename (2 KB each)."""
    payload = os.urandom(size)

    def work(k):
        for i in range(count):
            tmp = os.path.join(directory, "t%d.%d" % (k, i))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, payload)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, os.path.join(directory, "f%d.%d" % (k, i)))
    threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return writers * count / (time.perf_counter() - start)


def cpu_per_run(argv, env, make_stdin, make_stdout, runs, check=True):
    """Average child CPU milliseconds of running argv `runs` times."""
    before = children_cpu()
    for _ in range(runs):
        stdin, stdout = make_stdin(), make_stdout()
        subprocess.run(argv, stdin=stdin, stdout=stdout, stderr=subprocess.DEVNULL, env=env, check=check)
        for f in (stdin, stdout):
            if hasattr(f, "close"):
                f.close()
    return (children_cpu() - before) * 1000 / runs


def start_up(report, work, env, runs):
    """CPU of each per-message program started for a minimal session (issue 4's goal: 15 ms or less)."""
    smtp = work / "smtp"
    smtp.write_bytes(b"QUIT\r\n")
    message = work / "message"
    cases = [("qmail-smtpd", [], smtp, "greeting and QUIT"),
             ("qmail-qmtpd", [], None, "a client that sends nothing"),
             ("qmail-remote", [], None, "usage error (no DNS, no connection)"),
             ("qmail-local", [], None, "usage error"),
             ("qmail-inject", ["-n"], message, "-n: the rewritten 2 KB message printed, not queued")]
    for name, args, stdin, what in cases:
        ms = cpu_per_run([str(BIN / name), *args], env,
                         lambda: open(stdin, "rb") if stdin else subprocess.DEVNULL,
                         lambda: subprocess.DEVNULL, runs, check=False)
        report("%-13s start and exit, %-55s %5.1f ms CPU" % (name, what + ":", ms))


def envelope_pipe():
    """A pipe whose read end carries a finished envelope (fd 1 of qmail-queue)."""
    r, w = os.pipe()
    os.write(w, b"Fbench@example\0Tuser@example\0\0")
    os.close(w)
    return os.fdopen(r, "rb")


def free_port():
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qmqp_source_rate(tree, env, sessions, messages):
    """Messages per second qmqp-source gets accepted by qmail-qmqpd under tcpserver."""
    port = free_port()
    server = subprocess.Popen(["tcpserver", "-H", "-R", "-l", "0", "-c", "100", "127.0.0.1", str(port),
                               str(BIN / "qmail-qmqpd")], env=env, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        before = len(os.listdir(tree / "queue" / "todo"))
        start = time.perf_counter()
        subprocess.run(["qmqp-source", "-s", str(sessions), "-m", str(messages), "-l", "2048",
                        "127.0.0.1:%d" % port], check=True, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        queued = len(os.listdir(tree / "queue" / "todo")) - before
        return queued, messages / elapsed
    finally:
        os.killpg(server.pid, 15)
        server.wait()


def main():
    """Run every measurement and write the report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--out", default="docs/benchmarks-qmqp.txt")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pyqmail-bench-"))
    os.chmod(work, 0o755)
    tree = work / "qmail"
    subprocess.run([str(BIN / "qmail-setup"), "--single-user", "--me", "bench.example", str(tree)],
                   check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, QMAILHOME=str(tree), TCPREMOTEIP="127.0.0.1", TCPLOCALIP="127.0.0.1")
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    lines = []

    def report(text):
        print(text, flush=True)
        lines.append(text)

    report("# QMQP path benchmark, %s, %s, %d cores" % (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.uname().nodename, os.cpu_count()))
    fs = work / "fsync"
    fs.mkdir()
    report("create+write(2 KB)+fsync+rename, 1 writer:   %7.0f files/s" % fsync_rate(fs, 1, 300))
    report("create+write(2 KB)+fsync+rename, 10 writers: %7.0f files/s" % fsync_rate(fs, 10, 100))
    shutil.rmtree(fs)
    message = work / "message"
    message.write_bytes(b"Subject: bench\n\n" + b"x" * 2000 + b"\n")
    base = cpu_per_run([sys.executable, "-c", "pass"], env, lambda: subprocess.DEVNULL,
                       lambda: subprocess.DEVNULL, args.runs)
    report("python -c pass (interpreter start, the floor):     %5.1f ms CPU" % base)
    qq = cpu_per_run([str(BIN / "qmail-queue")], env, lambda: open(message, "rb"), envelope_pipe, args.runs)
    report("qmail-queue, one 2 KB message:                     %5.1f ms CPU" % qq)
    body = message.read_bytes()
    parts = [b"%d:%s," % (len(x), x) for x in (body, b"bench@example", b"user@example")]
    request = work / "request"
    request.write_bytes(b"%d:%s," % (len(b"".join(parts)), b"".join(parts)))
    qmqpd = cpu_per_run([str(BIN / "qmail-qmqpd")], env, lambda: open(request, "rb"),
                        lambda: subprocess.DEVNULL, args.runs)
    report("qmail-qmqpd + its qmail-queue, one 2 KB message:   %5.1f ms CPU (qmail-qmqpd alone %.1f)"
           % (qmqpd, qmqpd - qq))
    start_up(report, work, env, args.runs)
    for sessions in (1, 10):
        queued, rate = qmqp_source_rate(tree, env, sessions, args.messages)
        report("qmqp-source -s %-2d -m %d -l 2048 under tcpserver: %6.0f msg/s accepted (%d queued)"
               % (sessions, args.messages, rate, queued))
    Path(args.out).write_text("\n".join(lines) + "\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
