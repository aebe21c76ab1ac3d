"""A root qmail tree for the service tests: made by qmail-setup, every local part delivered to alias/Maildir,
mail sent in over SMTP and QMQP, the supervisor's processes found by session (issue 22)."""

import os
import pwd
import re
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import make_tree, program, qenv, run_queue_program

SERVERS = ("qmail-smtpd", "qmail-qmqpd", "qmail-qmtpd", "qmail-pop3d")


def need_root():
    """Skip unless root: the services bind as root and switch to qmail's accounts."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the services switch to qmail's accounts (qmaild, qmaill, qmails, ...)")


def root_tree(base):
    """A tree with qmail's accounts whose every local part goes to alias/Maildir (users/assign)."""
    tree = make_tree(Path(base) / "qmail", "--me", "test.example")
    pw = pwd.getpwnam("alias")
    (tree / "users" / "assign").write_text("+:alias:%d:%d:%s/alias:-::\n.\n" % (pw.pw_uid, pw.pw_gid, tree))
    subprocess.run([str(tree / "bin" / "qmail-newu")], env=qenv(tree), check=True)
    return tree


def listen_on(run, port):
    """Point a server's run script at 127.0.0.1:port (the admin's edit the script invites)."""
    text = run.read_text()
    assert "\nIP=0\n" in text and re.search(r"\nPORT=\d+\n", text)
    run.write_text(re.sub(r"\nPORT=\d+\n", "\nPORT=%d\n" % port, text.replace("\nIP=0\n", "\nIP=127.0.0.1\n")))


def setup_services(tree, kind, prefix):
    """Run qmail-setup --services=kind for tree under prefix; return the finished process."""
    return subprocess.run([program("qmail-setup"), "--services=" + kind, "--destdir", str(prefix), str(tree)],
                          capture_output=True, text=True)


def send_smtp(port, subject):
    """Send one message to postmaster@test.example through an SMTP server on 127.0.0.1:port."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("sender@example.org", ["postmaster@test.example"],
                   ("Subject: %s\r\n\r\nbody\r\n" % subject).encode())


def send_qmqp(base, port, subject):
    """Send one message to postmaster@test.example with qmail-qmqpc to a QMQP server on 127.0.0.1:port;
    return qmail-qmqpc's exit code."""
    mini = Path(base) / ("mini-%d" % port)
    if not mini.exists():
        make_tree(mini, "--single-user", "--mini", "127.0.0.1:%d" % port)
    proc = run_queue_program("qmail-qmqpc", mini, ("Subject: %s\n\nbody\n" % subject).encode(),
                             b"Fsender@example.org\0Tpostmaster@test.example\0\0")
    return proc.returncode, proc.stderr_bytes


def delivered(tree, subject, timeout=90):
    """Wait until a message with subject is in alias/Maildir/new; return its path (or fail)."""
    new = Path(tree) / "alias" / "Maildir" / "new"
    want = ("Subject: %s\n" % subject).encode()
    deadline = time.time() + timeout
    while time.time() < deadline:
        for entry in new.iterdir():
            try:
                if want in entry.read_bytes():
                    return entry
            except FileNotFoundError:
                continue
        time.sleep(0.1)
    raise AssertionError("not delivered within %d s: %s" % (timeout, subject))


def greeting(port):
    """Return the first line a server on 127.0.0.1:port sends."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        return s.makefile("rb").readline()


def session_pids(sid):
    """Return the pids of the processes in session sid."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc/%s/stat" % entry).read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[3]) == sid:
                pids.append(int(entry))
    return pids


def wait_gone(pids, timeout=60):
    """Wait until none of pids is alive (zombies count as gone); return those still alive."""
    deadline = time.time() + timeout
    alive = list(pids)
    while alive and time.time() < deadline:
        alive = [p for p in alive if alive_pid(p)]
        if alive:
            time.sleep(0.1)
    return alive


def alive_pid(pid):
    """True if pid is a live process, not a zombie."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def uid_of(pid):
    """Return the real uid of process pid."""
    status = Path("/proc/%d/status" % pid).read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
