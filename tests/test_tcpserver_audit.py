"""An adversarial audit of qmail-tcpserver and tcp-env: a tired administrator's command lines and rules files,
hostile clients, a small descriptor limit; each against the installed programs on loopback."""

import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import time

import pytest
from hypothesis import given, strategies as st

from conftest import program, qenv
from test_tcppool import qmqp
from pyqmail.lib.tcpserver import tcpserve


def start(procs, env, argv, options=(), host="127.0.0.1", nofile=None, log=None):
    """Start qmail-tcpserver -v -1 on port 0 (it prints the port it got); return (process, port, log path)."""
    log = log or os.path.join(env["QMAILHOME"] if "QMAILHOME" in env else "/tmp", "tcpserver-%d.log" % time.time_ns())
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
    with open(log, "ab") as f:
        p = procs.start([program("qmail-tcpserver"), "-1", "-v", "-H", "-R", "-l", "0", *options, host, "0", *argv],
                        stdout=subprocess.PIPE, stderr=f, env=env, preexec_fn=limit)
    ready = select.select([p.stdout], [], [], 30)[0]
    assert ready, "qmail-tcpserver printed no port"
    return p, int(p.stdout.readline()), log


def text(log):
    """Return the log so far."""
    with open(log, "rb") as f:
        return f.read().decode("utf-8", "replace")


def wait_for(condition, timeout=20, what="condition"):
    """Wait until condition() is true; return its value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("no %s within %ss" % (what, timeout))


def cpu_ticks(pid):
    """Return the user+system clock ticks a process has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def children(pid):
    """Return {pid: state} of a process's children (state Z: a zombie)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out[int(entry)] = fields[0]
    return out


def read_all(port, host="127.0.0.1", timeout=10):
    """Connect, read until the server closes; return what it sent."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


# --- the administrator's command line ---

@pytest.mark.parametrize("argv", [
    ["-b", "2147483648"], ["-b", "1" + "0" * 30], ["-u", "4294967295"], ["-u", "1" + "0" * 30],
    ["-g", "1" + "0" * 30],
])
def test_a_number_beyond_what_the_system_takes_is_a_usage_error_not_an_internal_one(argv):
    r = subprocess.run([program("qmail-tcpserver"), *argv, "127.0.0.1", "0", "true"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 100, r.stderr
    assert b"internal error" not in r.stderr and b"usage: tcpserver" in r.stderr
    assert re.search(rb"option %s wants a number up to \d+" % argv[0].encode(), r.stderr), r.stderr


@pytest.mark.parametrize("port", ["65536", "99999", "4294967297"])
def test_a_port_beyond_65535_is_refused_never_wrapped_to_another(port):
    r = subprocess.run([program("qmail-tcpserver"), "-1", "127.0.0.1", port, "true"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 111 and r.stdout == b""  # 99999 would have listened on 34463
    assert r.stderr == b"tcpserver: fatal: unable to figure out port number for %s\n" % port.encode()


@given(st.sampled_from("cbugt"), st.text("0123456789", min_size=1, max_size=40))
def test_numeric_options_parse_within_their_bounds_or_are_usage_errors(flag, digits):
    n, bound = int(digits), tcpserve.BOUNDS.get(flag)
    wrong = (bound is not None and n > bound) or (flag == "c" and n == 0)
    try:
        o = tcpserve.parse(["-" + flag, digits, "127.0.0.1", "25", "true"], {})
    except tcpserve.UsageError:
        assert wrong
        return
    assert not wrong and getattr(o, tcpserve.NUMERIC[flag]) == n


# --- the rules file ---

@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize("reused", [False, True])
def test_rules_that_are_a_fifo_or_a_directory_drop_the_connection_at_once(procs, tree, kind, reused):
    rules = tree / "rules.cdb"
    os.mkfifo(rules) if kind == "fifo" else rules.mkdir()
    argv = [program("qmail-qmqpd")] if reused else ["/bin/echo", "served"]
    p, port, log = start(procs, qenv(tree), argv, ["-X", "-x", str(rules)])
    for _ in range(3):  # more than one: a child stuck on the FIFO would hold its slot for ever
        assert read_all(port, timeout=10) == b""
    wait_for(lambda: text(log).count("tcpserver: warning: dropping connection, unable to read %s: " % rules) == 3,
             what="three dropped connections")
    assert "Traceback" not in text(log)
    os.rmdir(rules) if kind == "directory" else os.unlink(rules)
    if reused:
        assert qmqp(port).startswith(b"Kok ")  # -X: now the file is missing, and served
    else:
        assert read_all(port) == b"served\n"


# --- resources ---

@pytest.mark.parametrize("nofile", [10, 20])
def test_a_small_descriptor_limit_serves_with_a_child_per_connection_and_never_spins(procs, tree, nofile):
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    p, port, log = start(procs, qenv(tree), [program("qmail-qmqpd")], ["-c", "3"], nofile=nofile)
    for i in range(5):
        reply = qmqp(port)
        # 10 descriptors are too few for qmail-queue: a temporary failure, never silence
        assert reply.startswith(b"Kok " if nofile == 20 else b"Z"), (reply, text(log))
    assert "tcpserver: warning: descriptor limit %d too low for reused workers: one child per connection" % nofile \
        in text(log)
    before = cpu_ticks(p.pid)
    time.sleep(1)
    assert cpu_ticks(p.pid) - before <= 10  # was: workers forked, died at start and forked again, all silently
    assert not [pid for pid, state in children(p.pid).items() if state == "Z"]
