"""Start the delivery side of a tree (qmail-start → qmail-send, spawners, qmail-clean) for tests."""

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

from conftest import make_tree, qenv

ROOT = os.geteuid() == 0


def delivery_account():
    """Return the passwd entry deliveries run as: ours, or nobody's when the tests run as root."""
    return pwd.getpwnam("nobody") if ROOT else pwd.getpwuid(os.getuid())


def make_system_tree(path, me="test.example"):
    """Set up a tree as an installation runs it: qmail's accounts, owners and modes as root, else single-user."""
    return make_tree(path, "--me", me) if ROOT else make_tree(path, "--single-user", "--me", me)


def make_home(base, name="home"):
    """Create a home directory owned by the delivery account (mode 0755) with an empty Maildir."""
    pw = delivery_account()
    home = Path(base) / name
    for d in (home, home / "Maildir", home / "Maildir" / "new", home / "Maildir" / "cur", home / "Maildir" / "tmp"):
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o755 if d == home else 0o700)
        if ROOT:
            os.chown(d, pw.pw_uid, pw.pw_gid)
    return home


def assign_users(tree, lines):
    """Write users/assign from (local, home, dash, ext) wildcards/simple entries and run qmail-newu."""
    pw = delivery_account()
    text = ""
    for kind, local, home, dash, ext in lines:
        text += "%s%s:%s:%d:%d:%s:%s:%s:\n" % (kind, local, pw.pw_name, pw.pw_uid, pw.pw_gid, home, dash, ext)
    (Path(tree) / "users" / "assign").write_text(text + ".\n")
    subprocess.run([str(Path(tree) / "bin" / "qmail-newu")], env=qenv(tree), check=True)


def children(pid):
    """Return the pids of pid's children (Linux /proc)."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def alive(pid):
    """True if the process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class MailSystem:
    """A running qmail-start (which became qmail-send): its log, its pid and its helpers' pids."""

    def __init__(self, procs, tree, defaultdelivery="./Maildir/", env=None, wait=True):
        self.procs, self.tree = procs, Path(tree)
        self.log_path = self.tree / ("send-%d.log" % time.monotonic_ns())
        with open(self.log_path, "ab") as log:
            self.proc = procs.start([str(self.tree / "bin" / "qmail-start"), defaultdelivery],
                                    env=qenv(tree, **(env or {})), stdout=log, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        if wait:
            self.wait_log(b"status: local ")
        self.helpers = children(self.pid)

    def log(self):
        """Return the log so far."""
        return self.log_path.read_bytes()

    def wait_log(self, text, count=1, timeout=30):
        """Wait until text has appeared count times in the log; return the log."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            exited = self.proc.poll() is not None  # asked before the read: its last lines are in the log then
            data = self.log()
            if data.count(text) >= count:
                return data
            if exited:
                break
            time.sleep(0.02)
        raise AssertionError("log never showed %r x%d:\n%s" % (text, count, self.log().decode(errors="replace")))

    def signal(self, sig):
        """Send sig to qmail-send alone; nothing once it has been reaped (wait_log's poll may have done that)."""
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        """TERM qmail-send, wait for it to exit; return its exit code, after checking its helpers are gone."""
        self.signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        deadline = time.time() + timeout
        while any(alive(p) for p in self.helpers) and time.time() < deadline:
            time.sleep(0.02)
        left = [p for p in self.helpers if alive(p)]
        for p in left:
            os.kill(p, signal.SIGKILL)
        assert not left, "helpers still running after qmail-send exited: %s" % left
        return code

    def kill(self):
        """kill -9 qmail-send and everything in its process group (a crash)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:  # the whole group has exited already
            pass
        self.proc.wait(10)
