"""Shared fixtures: private qmail trees, started processes (stopped by pid), loopback ports."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent  # the virtual environment's bin/, where the console scripts are


def program(name):
    """Return the path of an installed pyqmail program."""
    return str(BIN / name)


def need(*tools):
    """Skip unless every external tool is on PATH (the test command installs them)."""
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.skip("not installed: " + " ".join(missing))


def free_port(host="127.0.0.1"):
    """Return a TCP port that is free on host right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def terminal_said(terminal):
    """Return what a pty's programs have written to it so far (without waiting)."""
    import select
    said = b""
    while select.select([terminal], [], [], 0)[0]:
        try:
            said += os.read(terminal, 1000)
        except OSError:
            break
    return said


def stop_pty_child(pid, terminal, group=False):
    """TERM then KILL a pty.fork child (its process group if group), reap it and close its terminal."""
    for sig in (15, 9):
        try:
            os.killpg(pid, sig) if group else os.kill(pid, sig)
        except ProcessLookupError:
            pass
    os.waitpid(pid, 0)
    os.close(terminal)


def wait_until(condition, timeout=20, what="condition"):
    """Wait until condition() is true (asked every 20 ms); return its value; AssertionError at the deadline."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("no %s within %s s" % (what, timeout))


def wait_port(host, port, timeout=30.0):
    """Wait until host:port accepts connections (a loaded machine may take seconds to start a server)."""
    deadline = time.time() + timeout
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.time() < deadline:
        with socket.socket(family) as s:
            if s.connect_ex((host, port)) == 0:
                # a connect to a port nobody listens on yet can meet itself (TCP simultaneous open, when the
                # kernel picks that very port as the source): that is not the server
                try:
                    itself = s.getsockname()[:2] == s.getpeername()[:2]
                except OSError:
                    itself = False  # the server took the connection and dropped it already
                if not itself:
                    return
        time.sleep(0.02)
    raise TimeoutError("nothing listening on %s:%d" % (host, port))


@pytest.fixture
def world_tmp():
    """A temporary directory every user can traverse (pytest's own are 0700)."""
    d = tempfile.mkdtemp(prefix="pyqmail-")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def make_tree(path, *options):
    """Run the real qmail-setup on path and return it."""
    subprocess.run([program("qmail-setup"), *options, str(path)], check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return Path(path)


@pytest.fixture
def tree(world_tmp):
    """A single-user qmail tree (QMAILHOME) owned by the user running the tests, `me` = test.example."""
    return make_tree(world_tmp / "qmail", "--single-user", "--me", "test.example")


def qenv(tree, **extra):
    """Return an environment with QMAILHOME=tree and the venv's bin first on PATH."""
    env = dict(os.environ, QMAILHOME=str(tree), PATH="%s:%s" % (BIN, os.environ.get("PATH", "")))
    env.pop("QMAILQUEUE", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Processes:
    """Processes a test started; every one is stopped by its pid at the end of the test."""

    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        """Start argv in its own session (so its children can be stopped too) and track it."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=5):
        """Stop one process and its process group by pid."""
        for s in (sig, signal.SIGKILL):
            try:
                os.killpg(p.pid, s)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop_all(self):
        """Stop everything started, newest first."""
        for p in reversed(self.procs):
            self.stop(p)


@pytest.fixture
def procs():
    """Start processes that are stopped by pid when the test ends."""
    group = Processes()
    yield group
    group.stop_all()


def tcpserver(procs, tree, argv, host="127.0.0.1", rules_cdb=None, env=None, options=(), server="tcpserver"):
    """Run argv under ucspi-tcp's tcpserver (or a compatible server) on a free loopback port, no DNS."""
    need(server)
    port = free_port(host)
    cmd = [server, "-H", "-R", "-l", "0", *options]
    if rules_cdb:
        cmd += ["-x", str(rules_cdb)]
    cmd += [host, str(port), *argv]
    # the server's log goes to a file: a pipe nobody reads would block it after 64 KB
    log = open(Path(tree) / ("tcpserver-%d.log" % port), "ab")
    procs.start(cmd, env=env or qenv(tree), stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    wait_port(host, port)
    return port


def ipv6_tcpserver():
    """Return a ucspi-tcp tcpserver that listens on ::1: the system's if it has IPv6 (Debian's ucspi-tcp-ipv6),
    else that package unpacked into the venv by scripts/test (scripts/common.sh ensure_tcpserver6); else skip."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError as e:
        pytest.skip("no ::1 on this host: %s" % e)
    system = shutil.which("tcpserver")
    if system:
        probe = subprocess.run([system, "::1", "0", "true"], capture_output=True, timeout=10)
        if b"no IP address" not in probe.stderr:
            return system
    unpacked = BIN.parent / "ucspi-tcp-ipv6" / "usr" / "bin" / "tcpserver"
    if os.access(unpacked, os.X_OK):
        return str(unpacked)
    pytest.skip("no tcpserver with IPv6: ucspi-tcp 0.88 has none, and scripts/test could not fetch ucspi-tcp-ipv6")


def queued(tree):
    """Return {message number: (mess bytes, todo bytes)} for every committed message in tree's queue."""
    out = {}
    todo = Path(tree) / "queue" / "todo"
    for entry in todo.iterdir():
        n = int(entry.name)
        mess = Path(tree) / "queue" / "mess" / str(n % 23) / str(n)
        out[n] = (mess.read_bytes(), entry.read_bytes())
    return out


def run_queue_program(name, tree, message, envelope, extra_env=None, **kw):
    """Run a qmail-queue-compatible program with message on fd 0 and envelope on fd 1; return it, finished."""
    import threading
    env_r, env_w = os.pipe()
    kw.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.Popen([program(name)], stdin=subprocess.PIPE, stdout=env_r,
                            env=qenv(tree, **(extra_env or {})), **kw)
    os.close(env_r)
    # a thread, so that an envelope larger than a pipe buffer cannot deadlock against the message
    writer = threading.Thread(target=lambda: (os.write(env_w, envelope), os.close(env_w)))
    writer.start()
    proc.stderr_bytes = proc.communicate(message)[1]
    writer.join()
    return proc


def queue_message(tree, message, envelope, extra_env=None):
    """Queue a message through the real installed qmail-queue; return its exit code."""
    return run_queue_program("qmail-queue", tree, message, envelope, extra_env).returncode


FREED_STAMP = os.path.join(tempfile.gettempdir(), "pyqmail-bench-freed")  # its mtime: the last mass removal


def note_freed():
    """Note that many files were just removed: a benchmark started within 400 s then waits
    (scripts/bench_procs.py), since on ext4 without a journal the freed inodes tax new files."""
    try:
        with open(FREED_STAMP, "w"):
            pass
        os.utime(FREED_STAMP)
    except OSError:
        pass


def pytest_sessionfinish(session, exitstatus):
    """The suite removed its trees: note it, as the benchmarks do."""
    note_freed()


def read_screen(fd, want, timeout=20):
    """Read a pseudo-terminal until want (bytes, or a list of bytes that must all show) showed, or the deadline."""
    import select
    wants = [want] if isinstance(want, bytes) else list(want)
    got = b""
    deadline = time.time() + timeout
    while not all(w in got for w in wants) and time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                got += os.read(fd, 65536)
            except OSError:
                break
    return got


def mutt_screen(folder, home, want, settings):
    """Open folder read-only in the real mutt (settings: its -e commands) on a pseudo-terminal; return the
    screen once want shows (see read_screen)."""
    import pty
    need("mutt")
    (home / "Mail").mkdir(exist_ok=True)  # mutt asks to create its folder otherwise
    master, slave = pty.openpty()
    p = subprocess.Popen(["mutt", "-n", "-F", "/dev/null", "-R", "-f", str(folder), "-e", settings],
                         stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                         env={"PATH": os.environ["PATH"], "HOME": str(home), "TERM": "vt100"})
    os.close(slave)
    try:
        return read_screen(master, want)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
        os.close(master)


def rest_until_eof(sock, timeout=15):
    """Read sock until EOF (or a reset) within timeout; return (bytes, True if EOF came)."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False
