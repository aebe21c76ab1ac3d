"""Issue 23, the accepting side's system calls: qmail-smtpd in qmail-tcpserver's reused workers, queueing in their
own process, reads and writes the client's socket without a poll before each call (SO_RCVTIMEO/SO_SNDTIMEO time
them), names its queue files relative to one descriptor of queue/ (no chdir, no umask), writes a small message
in one call, and keeps qmail-queue's order (fsync mess/N and intd/N, then link todo/N, then fsync todo/); the
file pool's taker rests after finding the pool empty. Observed with strace -f on the real programs."""

import os
import re
import socket
import subprocess
import sys
import time

import pytest

from conftest import free_port, need, program, qenv, queued
from test_qmail_smtpd import control
from test_qmail_smtpd_interop import queue_owner_tree
from test_smtpd_reuse import Client

from pyqmail.lib.queue import queuepool

pytestmark = pytest.mark.interop


def start(procs, tree, options, log):
    """Start strace -f qmail-tcpserver -c 1 ... qmail-smtpd; return the port once it answers."""
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


def findmnt(path, column):
    """util-linux's answer for the file system holding path (the oracle for names_need_dir_sync)."""
    return subprocess.run(["findmnt", "-n", "-o", column, "-T", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_names_need_dir_sync_only_on_a_journal_less_ext_file_system(world_tmp):
    """qmail-queue(8), DURABILITY: ext2/3/4 without a jbd2 journal (as findmnt and /proc/fs/jbd2 tell) need the
    directory of a pooled file's new name fsynced; a journaling or other file system does not."""
    from pyqmail.lib.queue import queue
    need("findmnt")
    fstype, source = findmnt(world_tmp, "FSTYPE"), findmnt(world_tmp, "SOURCE")
    journal_less = fstype in ("ext2", "ext3", "ext4") and not os.path.exists(
        "/proc/fs/jbd2/%s-8" % source.rsplit("/", 1)[-1])
    assert queue.names_need_dir_sync(os.stat(world_tmp).st_dev) is journal_less
    assert queue.names_need_dir_sync(os.stat("/proc").st_dev) is False


def test_a_pooled_mess_files_directory_is_fsynced_before_todo_on_a_journal_less_file_system(tree):
    """A pooled file is no new inode: ext4 without a journal syncs mess/N's directory with its fsync only for a
    new one, so qmail-queue fsyncs mess/<N % 23>/ itself before linking todo/N (and not on a journaling one)."""
    from pyqmail.lib.queue import queue
    need("strace")
    pid = tree / "queue" / "pid"
    slot = pid / "pool.mess.0"
    slot.write_bytes(b"stale bytes of a finished message\n" * 10)
    st = os.stat(tree / "queue")
    os.chown(slot, st.st_uid, st.st_gid)
    inode = os.stat(slot).st_ino
    log = tree.parent / "pooled.strace"
    r, w = os.pipe()
    os.write(w, b"Fa@b\0Tc@d\0\0")
    os.close(w)
    done = subprocess.run(["strace", "-f", "-o", str(log), "-e", "trace=fsync,openat,link,linkat",
                           program("qmail-queue")], input=b"Subject: pooled\n\nbody\n", stdout=r,
                          stderr=subprocess.PIPE, env=qenv(tree), timeout=60)
    os.close(r)
    assert done.returncode == 0, done.stderr
    [(n, (mess, _))] = queued(tree).items()
    assert n == inode and mess.endswith(b"\nSubject: pooled\n\nbody\n") and b"stale" not in mess
    text = log.read_text()
    split = '"mess/%d"' % (n % 23)
    before_todo = text[:text.index('"todo/%d"' % n)]
    synced = re.search(r"openat\([^,]*, %s, [^)]*O_DIRECTORY[^)]*\) = (\d+)\n(?:.*\n)*?\d+ +fsync\(\1\)" % split,
                       before_todo)
    assert bool(synced) is queue.names_need_dir_sync(os.stat(tree / "queue").st_dev), text


def test_in_process_queueing_leaves_cwd_and_umask_alone_and_makes_0644_files_under_any_umask(tree):
    """queuehere: with umask 077 the files still get qmail-queue's 0644 (fchmod), the caller's working
    directory and umask are what they were, and no descriptor is left open (the queue directory's closed)."""
    script = r'''
import os, sys
from pyqmail.lib.queue import queuehere
os.chdir("/")
os.umask(0o077)
fds = sorted(os.listdir("/proc/self/fd"))
q = queuehere.QueueHere(sys.argv[1])
q.put(b"Subject: umask\n\nbody\n")
print(repr(q.close(b"a@b", [b"c@d"])), os.getcwd(), oct(os.umask(0o022)), sorted(os.listdir("/proc/self/fd")) == fds)
'''
    done = subprocess.run([sys.executable, "-c", script, str(tree)], capture_output=True, env=qenv(tree), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == ["''", "/", "0o77", "True"], done.stdout
    [(n, (mess, todo))] = queued(tree).items()
    assert mess.endswith(b"\nSubject: umask\n\nbody\n") and todo.endswith(b"\0Fa@b\0Tc@d\0")
    for path in (tree / "queue" / "mess" / str(n % 23) / str(n), tree / "queue" / "todo" / str(n)):
        assert os.stat(path).st_mode & 0o7777 == 0o644, path
