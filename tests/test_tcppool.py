"""qmail-tcpserver's reused workers (lib/tcpserver/tcppool): one worker serves many connections, and none leaks into the next."""

import collections
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from hypothesis import given, settings, strategies as st

from conftest import program, qenv, queued
from mailsystem import alive, children
from test_qmail_tcpserver import serve, tcprules_cdb, wait_log
from pyqmail.lib.tcpserver import tcppool


def request(message, sender=b"a@b.example", recipients=(b"c@d.example",)):
    """Return a QMQP request (netstring of netstrings)."""
    body = b"".join(b"%d:%s," % (len(f), f) for f in (message, sender, *recipients))
    return b"%d:%s," % (len(body), body)


def qmqp(port, source="127.0.0.1", message=b"Subject: x\n\nbody\n"):
    """Send one QMQP request from source; return the reply netstring's payload."""
    with socket.socket() as s:
        s.settimeout(20)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(request(message))
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b":", 1)[1][:-1] if b":" in data else data


def open_fds(pid):
    """Return the number of descriptors a process has open."""
    return len(os.listdir("/proc/%d/fd" % pid))


def served_by(log):
    """Return the pids of the `ok` lines, in order."""
    return [int(x) for x in re.findall(r"^tcpserver: ok (\d+) ", log.read_text(), re.M)]


def test_one_worker_serves_connections_in_turn_until_max_use_and_leaks_no_descriptor(procs, tree):
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    port, p, log = serve(procs, tree, program("qmail-tcpserver"), [program("qmail-qmqpd")], ["-c", "1"],
                         env=qenv(tree))
    total = tcppool.MAX_USE + 5
    fds = []
    for i in range(total):
        assert qmqp(port, message=b"Subject: %d\n\nbody\n" % i).startswith(b"Kok ")
        if 1 <= i <= 60:  # at every end line: the worker writes it only after its clean-up
            while log.read_text().count("tcpserver: end ") < i + 1:
                time.sleep(0.02)
            fds.append(open_fds(served_by(log)[-1]))
    assert len(set(fds)) == 1, fds
    pids = served_by(log)
    assert len(pids) == total
    # serve() made the first connection (wait_port): the worker retires after MAX_USE - 1 more
    assert len(set(pids[:tcppool.MAX_USE - 1])) == 1 and pids[tcppool.MAX_USE - 1] != pids[0]
    assert len(queued(tree)) == total
    assert sorted(re.search(rb"Subject: (\d+)", m).group(1) for m, _ in queued(tree).values()) == \
        sorted(b"%d" % i for i in range(total))


def test_after_a_burst_the_oldest_workers_take_the_connections_and_the_others_stay_idle(procs, tree):
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    port, p, log = serve(procs, tree, program("qmail-tcpserver"), [program("qmail-qmqpd")], env=qenv(tree))
    burst = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(6)]
    try:
        deadline = time.time() + 30
        while time.time() < deadline and len(set(served_by(log))) < 6:  # six connections at once: six workers
            time.sleep(0.02)
        assert len(set(served_by(log))) == 6, log.read_text()
        for s in burst:
            s.sendall(request(b"Subject: burst\n\nbody\n"))
            assert b"Kok " in s.recv(100)
    finally:
        for s in burst:
            s.close()
    deadline = time.time() + 30
    while time.time() < deadline and log.read_text().count("tcpserver: end ") < 6:  # all six idle again
        time.sleep(0.02)
    for _ in range(30):
        assert qmqp(port).startswith(b"Kok ")
    later = served_by(log)[6:]
    assert len(later) == 30 and set(later) <= set(served_by(log)[:6])
    # woken in turn (blocked in accept), the six would share them about evenly
    assert len(set(later)) <= 3 and collections.Counter(later).most_common(1)[0][1] >= 15, later


def test_the_rules_environment_of_one_connection_never_reaches_the_next(procs, tree, world_tmp):
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    (tree / "control" / "qmqpclients").write_text("10.9.9.9\n")  # only the rules' QMQPCLIENT admits anyone
    subprocess.run([program("qmail-newqmqpclients")], env=qenv(tree), check=True)
    rules = tcprules_cdb(world_tmp, '127.0.0.1:allow,QMQPCLIENT=""\n:allow\n')
    port, _, log = serve(procs, tree, program("qmail-tcpserver"), [program("qmail-qmqpd")],
                         ["-c", "1", "-x", str(rules)], env=qenv(tree))
    assert qmqp(port, "127.0.0.1").startswith(b"Kok ")
    assert qmqp(port, "127.0.0.2").startswith(b"DError: unknown[127.0.0.2] is not authorized")
    assert qmqp(port, "127.0.0.1").startswith(b"Kok ")
    assert len(set(served_by(log))) == 1  # one worker served all three
    assert len(queued(tree)) == 2


def test_a_worker_killed_mid_connection_is_logged_and_replaced(procs, tree):
    port, _, log = serve(procs, tree, program("qmail-tcpserver"), [program("qmail-qmqpd")], env=qenv(tree))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        pid = int(wait_log(log, r"^tcpserver: ok (\d+) ").group(1))
        s.sendall(b"100:")  # a request that has begun
        os.kill(pid, signal.SIGKILL)
        wait_log(log, r"^tcpserver: warning: child %d crashed: killed by signal 9$" % pid)
        wait_log(log, r"^tcpserver: end %d status 9$" % pid)
        try:
            assert s.recv(10) == b""  # closed without a reply: nothing was queued
        except ConnectionResetError:
            pass  # or reset, since the request's unread bytes were pending when the worker died
    assert qmqp(port).startswith(b"Kok ")
    assert served_by(log)[-1] != pid
    assert "Traceback" not in log.read_text()


def test_term_ends_idle_workers_and_lets_a_busy_one_finish(procs, tree):
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    port, p, log = serve(procs, tree, program("qmail-tcpserver"), [program("qmail-qmqpd")], env=qenv(tree))
    for _ in range(3):
        assert qmqp(port).startswith(b"Kok ")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as busy:
        busy_pid = int(wait_log(log, r"^tcpserver: ok (\d+) ").group(1))
        while len(served_by(log)) < 4:
            time.sleep(0.02)
        busy_pid = served_by(log)[-1]
        workers = children(p.pid)
        os.kill(p.pid, signal.SIGTERM)
        assert p.wait(30) == 0
        deadline = time.time() + 30
        while time.time() < deadline and [w for w in workers if w != busy_pid and Path("/proc/%d" % w).exists()]:
            time.sleep(0.05)
        assert [w for w in workers if alive(w)] == [busy_pid]
        busy.sendall(request(b"Subject: last\n\nbody\n"))
        assert b"Kok " in busy.recv(100)
    deadline = time.time() + 30
    while time.time() < deadline and Path("/proc/%d" % busy_pid).exists():
        time.sleep(0.05)
    assert not Path("/proc/%d" % busy_pid).exists()


POOL_STEPS = st.lists(st.tuples(st.sampled_from(["add", "B", "I", "end"]), st.integers(1, 6)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(POOL_STEPS)
def test_the_listeners_counts_follow_the_workers_records(steps):
    pool = tcppool.Pool()
    try:
        for what, pid in steps:
            if what == "add" and pid not in pool.busy:
                pool.added(pid)
            elif what in ("B", "I"):
                os.write(pool.status_w, b"%08x%s" % (pid, what.encode()))
                if pid % 2:  # half the time the listener reads at once, else several records at a time
                    pool.read()
            elif what == "end":
                pool.ended(pid)
            assert pool.idle() == sum(1 for b in pool.busy.values() if not b)
            assert pool.serving() == sum(pool.busy.values())
        pool.read()
        assert pool.idle() == sum(1 for b in pool.busy.values() if not b)
    finally:
        os.close(pool.status_r)
        os.close(pool.status_w)
