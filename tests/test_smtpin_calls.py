"""Issue 23, the accepting side's system calls: qmail-smtpd in qmail-tcpserver's reused workers, queueing in their
own process, reads and writes the client's socket without a poll before each call (SO_RCVTIMEO/SO_SNDTIMEO time
them), names its queue files relative to one descriptor of queue/ (no chdir, no umask), writes a small message
in one call, and keeps qmail-queue's order (fsync mess/N and intd/N, then link todo/N, then fsync todo/); the
file pool's taker rests after finding the pool empty. Observed with strace -f on the real programs."""

import os
import re
import socket
import subprocess
import time

import pytest

from conftest import need, program, qenv, queued
from test_qmail_smtpd import control
from test_qmail_smtpd_interop import queue_owner_tree
from test_qmail_tcpserver import serve
from test_smtpd_reuse import Client

from pyqmail.lib.queue import queuepool

pytestmark = pytest.mark.interop


def start(procs, tree, options, log):
    """Start strace -f qmail-tcpserver -c 1 ... qmail-smtpd; return the port once it answers."""
    from conftest import free_port
    need("strace")
    port = free_port("127.0.0.1")
    with open(tree / "tcpserver.log", "ab") as err:
        procs.start(["strace", "-f", "-qq", "-o", str(log), program("qmail-tcpserver"), "-H", "-R", "-l", "0",
                     "-c", "1", *options, "127.0.0.1", str(port), program("qmail-smtpd")],
                    stdout=subprocess.DEVNULL, stderr=err, env=qenv(tree))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            Client(port, "127.0.0.1").close()  # the greeting came: a worker serves
            return port
        except OSError:
            time.sleep(0.05)
    raise AssertionError("qmail-tcpserver did not answer")


def calls_of(log, pid):
    """Return the system calls strace saw process pid make, in order, as (name, line) (unfinished calls joined)."""
    calls, pending = [], None
    for line in log.read_text().splitlines():
        if not line.startswith("%s " % pid):
            continue
        rest = line.split(None, 1)[1]
        if rest.endswith("<unfinished ...>"):
            pending = rest[:-len("<unfinished ...>")]
            continue
        resumed = re.match(r"<\.\.\. (\w+) resumed>(.*)", rest)
        if resumed:
            rest = (pending or resumed.group(1) + "(") + resumed.group(2)
        name = re.match(r"(\w+)\(", rest)
        if name:
            calls.append((name.group(1), rest))
    return calls


def wait_for(condition, timeout=20):
    """Wait until condition() is true (a deadline, no fixed sleep)."""
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(0.05)
    assert condition()


def test_a_worker_queues_a_message_with_no_poll_chdir_or_umask_in_qmail_queues_order(procs, world_tmp):
    tree, options = queue_owner_tree(world_tmp)
    log = world_tmp / "strace.log"
    port = start(procs, tree, options, log)
    c = Client(port, "127.0.0.1")
    assert c.send(b"HELO client.example") == b"250 %s\r\n" % c.greeting[4:].split()[0]
    assert c.mail(body=b"Subject: calls\r\n\r\nbody\r\n").startswith(b"250 ok ")
    c.quit()
    wait_for(lambda: len(queued(tree)) == 1)
    [(n, (mess, todo))] = queued(tree).items()
    assert mess.endswith(b"\nSubject: calls\n\nbody\n") and todo.endswith(b"\0Fa@b.example\0Tc@test.example\0")
    assert oct(os.stat(tree / "queue" / "mess" / str(n % 23) / str(n)).st_mode & 0o777) == "0o644"
    assert oct(os.stat(tree / "queue" / "todo" / str(n)).st_mode & 0o777) == "0o644"
    wait_for(lambda: "close_range(" in log.read_text().rpartition('"todo/%d"' % n)[2])  # the session's clean-up
    [pid] = {line.split()[0] for line in log.read_text().splitlines() if '"todo/%d"' % n in line}
    calls = calls_of(log, pid)
    session = [i for i, (name, line) in enumerate(calls) if name == "accept4" and "= -1" not in line][-1]
    calls = calls[session:]
    names = [name for name, _ in calls]
    served = names[:names.index("close_range")]  # the session, up to the worker's clean-up (its umask restore)
    assert not {"poll", "chdir", "fchdir", "umask"} & set(served), served
    reads = [line for name, line in calls if name == "read" and line.startswith("read(0,")]
    writes = [line for name, line in calls if name == "write" and line.startswith("write(1,")]
    assert len(reads) >= 5 and len(writes) >= 6  # HELO MAIL RCPT DATA text QUIT; greeting and every reply
    # the message file: both Received lines and the text in one write
    mess_writes = [line for name, line in calls if name in ("write", "writev") and "Received: (qmail" in line]
    assert len(mess_writes) == 1 and "Received: from" in mess_writes[0], mess_writes
    order = [(name, line) for name, line in calls if name in ("fsync", "linkat")]
    link = [i for i, (name, line) in enumerate(order) if name == "linkat" and '"todo/%d"' % n in line]
    assert link and [name for name, _ in order[link[0] - 2:link[0] + 2]] == ["fsync", "fsync", "linkat", "fsync"]


def test_a_silent_client_on_a_socket_gets_451_after_timeoutsmtpd(procs, world_tmp):
    tree, options = queue_owner_tree(world_tmp)
    control(tree, timeoutsmtpd=1)
    port = start(procs, tree, options, world_tmp / "strace.log")
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        started = time.monotonic()
        got = b""
        while not got.endswith(b"451 timeout (#4.4.2)\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        elapsed = time.monotonic() - started
    assert got.endswith(b"451 timeout (#4.4.2)\r\n") and got.startswith(b"220 ")
    assert 0.9 < elapsed < 10  # the kernel's SO_RCVTIMEO, not the 1200 s default
    assert "SO_RCVTIMEO" in (world_tmp / "strace.log").read_text()


def test_a_taker_that_found_the_pool_empty_rests_then_looks_again(tmp_path, monkeypatch):
    """queuepool.take: after every slot looked at was empty, the next EMPTY_REST takes of that kind do not look
    (no qmail-clean gives files while nothing is delivered); the other kind still looks; then it looks again."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(queuepool, "_empty_rest", {})
    (tmp_path / "pid").mkdir()
    assert not queuepool.take("mess", "none")
    (tmp_path / "pid" / "pool.mess.0").write_bytes(b"x")
    (tmp_path / "pid" / "pool.intd.0").write_bytes(b"i")
    for _ in range(queuepool.EMPTY_REST):
        assert not queuepool.take("mess", "rested")
    assert queuepool.take("intd", "other") and (tmp_path / "other").read_bytes() == b"i"
    assert queuepool.take("mess", "again") and (tmp_path / "again").read_bytes() == b"x"
