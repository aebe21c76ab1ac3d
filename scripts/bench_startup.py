"""Start-up cost of the per-message programs, for one or more installs side by side (issue 18: the rooms).

Usage: python scripts/bench_startup.py [--rounds N] [--runs K] LABEL=VENV [LABEL=VENV ...]

For each install (a virtual environment with pyqmail installed) it makes a single-user tree with that install's
qmail-setup, then runs the tree's launchers (what tcpserver and qmail-lspawn run: `python -S`) on a real
message: qmail-qmqpd on a 2 KB QMQP request, qmail-queue on the same message, qmail-local into a Maildir.
Rounds alternate the installs' order; each round runs every program K times per install. It prints the median
CPU (user + system, from wait4's rusage) per run, and the modules each program imports (-X importtime).
"""

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MESSAGE = b"Subject: bench\n\n" + b"x" * 2000 + b"\n"
SENDER, RECIPIENT = b"a@bench.example", b"alias@bench.example"
DELIVERER = pwd.getpwnam("nobody") if os.geteuid() == 0 else None  # who qmail-local runs as


def netstring(data):
    """Return data as a netstring."""
    return b"%d:%s," % (len(data), data)


REQUEST = netstring(netstring(MESSAGE) + netstring(SENDER) + netstring(RECIPIENT))


def make_tree(venv, where):
    """Make a single-user tree with the install's own qmail-setup; return its path."""
    tree = where / "qmail"
    subprocess.run([str(venv / "bin" / "qmail-setup"), "--single-user", "--me", "bench.example", str(tree)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    home = where / "home"
    maildir = home / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    if DELIVERER is not None:  # root: qmail-local refuses to deliver as root, as qmail's does
        for d in (home, maildir, *(maildir / sub for sub in ("tmp", "new", "cur"))):
            os.chown(d, DELIVERER.pw_uid, DELIVERER.pw_gid)
    return tree, maildir


def invocations(tree, maildir):
    """Return {program: (argv, stdin bytes, extra fd setup, environment)} for one run of each program."""
    env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(tree)}
    user = DELIVERER.pw_name if DELIVERER is not None else pwd.getpwuid(os.getuid()).pw_name
    local_argv = [str(tree / "bin" / "qmail-local"), "--", user, str(maildir.parent), "alias", "", "",
                  "bench.example", SENDER.decode(), "./Maildir/"]
    return {
        "qmail-qmqpd": ([str(tree / "bin" / "qmail-qmqpd")], REQUEST, None,
                        dict(env, TCPREMOTEIP="127.0.0.1", TCPLOCALPORT="628")),
        "qmail-queue": ([str(tree / "bin" / "qmail-queue")], MESSAGE, b"F%s\0T%s\0\0" % (SENDER, RECIPIENT), env),
        "qmail-local": (local_argv, MESSAGE, None, dict(env, DELIVER_AS="1")),
    }


def run_once(argv, stdin, envelope, env, stderr_fd=None):
    """Run one program to its end; return its CPU seconds (user + system) and exit code."""
    data_r = os.memfd_create("message")  # a file: qmail-local rewinds its message
    os.write(data_r, stdin)
    os.lseek(data_r, 0, os.SEEK_SET)
    env_fd = None
    if envelope is not None:
        env_fd, env_w = os.pipe()
        os.write(env_w, envelope)
        os.close(env_w)
    pid = os.fork()
    if pid == 0:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(data_r, 0)
            os.dup2(env_fd if env_fd is not None else devnull, 1)
            os.dup2(stderr_fd if stderr_fd is not None else devnull, 2)
            if env.get("DELIVER_AS") and DELIVERER is not None:
                os.setgid(DELIVERER.pw_gid)
                os.setuid(DELIVERER.pw_uid)
            os.execve(argv[0], argv, {k: v for k, v in env.items() if k != "DELIVER_AS"})
        finally:
            os._exit(127)
    os.close(data_r)
    if env_fd is not None:
        os.close(env_fd)
    _, status, usage = os.wait4(pid, 0)
    return usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)


def imported_modules(venv_python, argv, stdin, envelope, env):
    """Return the number of modules the program imports, and how many of them are pyqmail's."""
    with tempfile.TemporaryFile() as report:
        run_once([venv_python, "-S", "-X", "importtime", *argv], stdin, envelope, env, report.fileno())
        report.seek(0)
        lines = report.read().decode(errors="replace").splitlines()
    names = [line.rsplit("|", 1)[1].strip() for line in lines
             if line.startswith("import time:") and "|" in line and "imported package" not in line]
    return len(names), sum(1 for n in names if n.startswith("pyqmail"))


def main():
    """Run the rounds and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("installs", nargs="+", metavar="LABEL=VENV")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    os.chmod(work, 0o755)
    installs = []
    try:
        for item in args.installs:
            label, venv = item.split("=", 1)
            where = work / label
            where.mkdir()
            tree, maildir = make_tree(Path(venv), where)
            installs.append((label, Path(venv), invocations(tree, maildir)))
        cpu = {(label, prog): [] for label, _, progs in installs for prog in progs}
        for rnd in range(args.rounds):
            order = installs if rnd % 2 == 0 else list(reversed(installs))
            for label, _, progs in order:
                for prog, (argv, stdin, envelope, env) in progs.items():
                    for _ in range(args.runs):
                        seconds, code = run_once(argv, stdin, envelope, env)
                        if code != 0:
                            sys.exit("%s %s exited %d" % (label, prog, code))
                        cpu[label, prog].append(seconds)
        print("CPU per run (user + system), median of %d rounds x %d runs; modules imported (pyqmail's)"
              % (args.rounds, args.runs))
        print("%-14s %s" % ("program", "  ".join("%-22s" % label for label, _, _ in installs)))
        for prog in installs[0][2]:
            cells = []
            for label, venv, progs in installs:
                argv, stdin, envelope, env = progs[prog]
                count, ours = imported_modules(str(venv / "bin" / "python"), argv, stdin, envelope, env)
                cells.append("%5.2f ms  %3d (%2d)     " % (statistics.median(cpu[label, prog]) * 1000, count, ours))
            print("%-14s %s" % (prog, "  ".join(cells)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
