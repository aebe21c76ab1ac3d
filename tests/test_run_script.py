"""scripts/run, as the README's "run" command on a live host: as a plain user (an unprivileged account when the
tests run as root) with a virtual environment of its own, it runs the demo end to end; with its QMQP port
taken by another program it says so, exits non-zero and claims no success (issue 22)."""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port

TOP = Path(__file__).resolve().parent.parent
ROOT = os.getuid() == 0


class Runner:
    """A copy of the source owned by the plain user, and scripts/run run from it as that user."""

    def __init__(self, base):
        self.base = base
        self.src = base / "src"
        self.home = base / "home"
        if ROOT:
            self.user = pwd.getpwnam("nobody")
            self.prefix = ["setpriv", "--reuid=%d" % self.user.pw_uid, "--regid=%d" % self.user.pw_gid,
                           "--clear-groups"]
        else:
            self.user = pwd.getpwuid(os.getuid())
            self.prefix = []

    def env(self, **extra):
        """A plain environment: no venv of the test suite on PATH, the user's own HOME."""
        env = {"HOME": str(self.home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
               "PYQMAIL_VENV": str(self.base / "venv")}
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, *args, timeout=600, **extra):
        """Run scripts/run ARGS as the plain user; return the finished process (stdout and stderr together)."""
        return subprocess.run(self.prefix + ["bash", str(self.src / "scripts" / "run"), *args], env=self.env(**extra),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)


def copy_source(dst):
    """Copy the working tree's files (tracked and new, not ignored) to dst."""
    listed = subprocess.run(["git", "-C", str(TOP), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True)
    if listed.returncode != 0:
        shutil.copytree(TOP, dst, ignore=shutil.ignore_patterns(".git", ".venv", "build", "demo*", "*.egg-info",
                                                                 "__pycache__", ".hypothesis"))
        return
    for name in filter(None, listed.stdout.decode().split("\0")):
        src = TOP / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


@pytest.fixture(scope="module")
def runner():
    """A source copy and a home for the plain user; everything scripts/run started is stopped at the end."""
    if ROOT and not shutil.which("setpriv"):
        pytest.skip("not installed: setpriv (util-linux)")
    base = Path(tempfile.mkdtemp(prefix="pyqmail-run-"))
    os.chmod(base, 0o755)
    r = Runner(base)
    r.src.mkdir()
    r.home.mkdir()
    copy_source(r.src)
    if ROOT:
        subprocess.run(["chown", "-R", "%d:%d" % (r.user.pw_uid, r.user.pw_gid), str(base)], check=True)
    yield r
    for demo in base.glob("demo*"):
        if (demo / "run").is_dir():
            r.run("stop", str(demo), timeout=120)
            for f in (demo / "run").glob("*.pid"):  # anything the stop left: by its pid
                try:
                    os.kill(int(f.read_text()), signal.SIGKILL)
                except (ValueError, OSError):
                    pass
    shutil.rmtree(base, ignore_errors=True)


def pids(demo):
    """The pids scripts/run recorded for the services it left running."""
    return {f.stem: int(f.read_text()) for f in (demo / "run").glob("*.pid")}


def uid_of(pid):
    """The real uid of a running process, or None when it is gone (or a zombie)."""
    try:
        status = Path("/proc/%d/status" % pid).read_text()
    except OSError:
        return None
    if "\nState:\tZ" in status:
        return None
    return int(status.split("\nUid:\t", 1)[1].split()[0])


def wait_gone(pid, timeout=30):
    """Wait until pid has ended; return whether it did."""
    deadline = time.time() + timeout
    while uid_of(pid) is not None and time.time() < deadline:
        time.sleep(0.05)
    return uid_of(pid) is None


def test_runs_as_a_plain_user_and_stops(runner):
    demo = runner.base / "demo"
    p = runner.run(str(demo), PYQMAIL_QMQP_PORT=free_port())
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, out
    assert "is listening on 127.0.0.1:" in out and "qmail-qmqpc exit code: 0" in out
    assert "== delivered: %s/alias/Maildir/new/" % demo in out
    assert "-> RETR 1" in out and "It works." in out and "== running:" in out
    assert "installing Debian packages" not in out  # no apt as a plain user
    # the message was read over POP3 and QUIT moved it to cur/; the tree and the delivery are the user's
    cur = list((demo / "alias" / "Maildir" / "cur").iterdir())
    assert len(cur) == 1 and cur[0].stat().st_uid == runner.user.pw_uid
    assert b"Subject: hello from pyqmail" in cur[0].read_bytes()
    running = pids(demo)
    assert set(running) == {"qmqpd", "send"}
    for pid in running.values():
        assert uid_of(pid) == runner.user.pw_uid
    stop = runner.run("stop", str(demo))
    assert stop.returncode == 0 and b"stopped send" in stop.stdout
    assert all(wait_gone(pid) for pid in running.values())
    assert pids(demo) == {}


def test_refuses_to_claim_success_when_its_port_is_taken(runner, procs):
    port = free_port()
    holder = procs.start(runner.prefix + ["python3", "-c", HOLD, str(port)], stdout=subprocess.PIPE,
                         env=runner.env())
    assert holder.stdout.readline() == b"listening\n"
    demo = runner.base / "demo-taken"
    p = runner.run(str(demo), PYQMAIL_QMQP_PORT=port)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode != 0, out
    assert "127.0.0.1:%d is taken by another program (pid %d: python3 -c" % (port, holder.pid) in out
    assert "address already in use" in out  # qmail-tcpserver's own word, from its log
    for claim in ("accepted", "== delivered", "== running", "is listening on"):
        assert claim not in out
    assert pids(demo) == {}  # what it started is stopped
    procs.stop(holder)
    assert holder.stdout.read() == b""  # nothing was sent to the other program
    assert not list((demo / "alias" / "Maildir" / "new").iterdir())


# another program on the port: listens, and says so if anyone connects
HOLD = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(5)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    print("connected", flush=True)
    c.close()
"""


def package_steps(tmp, prefix, function):
    """Run a common.sh function with stand-ins for dpkg-query (nothing installed), apt-get and sudo on PATH;
    return (its output, the commands the stand-ins were asked to run)."""
    fake = tmp / "fakebin"
    fake.mkdir(exist_ok=True)
    log = tmp / "calls.log"
    for name, code in (("dpkg-query", 1), ("apt-get", 0), ("sudo", 0), ("debconf-set-selections", 0)):
        (fake / name).write_text('#!/bin/sh\necho "%s $*" >> %s\nexit %d\n' % (name, log, code))
        (fake / name).chmod(0o755)
    log.write_text("")
    log.chmod(0o666)
    tmp.chmod(0o755)
    p = subprocess.run(prefix + ["bash", "-c", '. "$1"; %s' % function, "sh", str(TOP / "scripts" / "common.sh")],
                       env={"PATH": "%s:/usr/bin:/bin" % fake, "HOME": str(tmp)},
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return p.stdout.decode(), [line for line in log.read_text().splitlines() if not line.startswith("dpkg-query")]


def test_run_installs_only_what_running_needs_and_only_as_root(runner, world_tmp):
    out, calls = package_steps(world_tmp, runner.prefix, "ensure_run_packages")
    if runner.prefix or not ROOT:  # a plain user: no apt-get, no sudo, a note of what is missing
        assert calls == [] and "not root: nothing is installed" in out
        assert "python3-venv" in out and "postfix" not in out
    if ROOT:
        out, calls = package_steps(world_tmp, [], "ensure_run_packages")
        installs = [c for c in calls if c.startswith("apt-get") and " install " in c]
        assert installs, (out, calls)
        asked = set(installs[0].split()) - {"apt-get", "install", "-y", "-qq"}
        assert asked == {"python3", "python3-venv", "ucspi-tcp", "daemontools"}
    # the test set is the run set and the peers; scripts/test and the benchmarks install it
    out, calls = package_steps(world_tmp, [], "ensure_packages")
    installs = [c for c in calls if " install " in c]
    assert installs and {"postfix", "swaks", "mutt", "dnsmasq-base", "ucspi-tcp"} <= set(installs[0].split())
