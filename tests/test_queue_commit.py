"""Issue 23: the queue's commit with both files' writeback started before either fsync (docs/qmail-queue.8.md,
DURABILITY): todo/N is linked only after the fsyncs of mess/N and intd/N have both returned, todo/ is
fsynced before success is reported, and a failing fsync of either file leaves nothing queued."""

import os
import re
import subprocess
import sys

import pytest

from conftest import need, program, qenv, queued

# The fault goes in one layer up (Python has no LD_PRELOAD, as in test_hardening_queue): posix.fsync fails
# with EIO for the file whose path (read back from /proc/self/fd) is under FAULT's queue directory; mess/N's
# descriptor still shows the pid/ name it was created under (unlinked since).
FAULTY = r'''
import errno, os, posix
from pyqmail.commands.qmail_queue import run
target = "/queue/%s/" % os.environ.pop("FAULT")
real = posix.fsync
def fake_fsync(fd):
    if target in os.readlink("/proc/self/fd/%d" % fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    return real(fd)
posix.fsync = os.fsync = fake_fsync
run()
'''


def run_qmail_queue(tree, argv, message=b"Subject: x\n\nbody\n", envelope=b"Fa@b\0Tc@d\0Te@f\0\0", **env):
    """Run argv (the installed qmail-queue, or a wrapper of it) on message and envelope; return it, finished."""
    r, w = os.pipe()
    os.write(w, envelope)
    os.close(w)
    try:
        return subprocess.run(argv, input=message, stdout=r, stderr=subprocess.PIPE, env=qenv(tree, **env),
                              timeout=60)
    finally:
        os.close(r)


def leftovers(tree):
    """Files left in mess/ and intd/ (a failed injection removes both)."""
    q = tree / "queue"
    return [p for p in (q / "mess").rglob("*") if p.is_file()] + list((q / "intd").iterdir())


def test_todo_is_linked_only_after_both_fsyncs_returned(tree):
    """strace -f: both files' writeback is started (fadvise) before the first fsync, the fsyncs of mess/N
    and intd/N end before link(intd/N, todo/N) starts, and todo/ is fsynced after it, before the exit."""
    need("strace")
    log = tree.parent / "strace.log"
    done = run_qmail_queue(tree, ["strace", "-f", "-y", "-o", str(log), "-e", "trace=fsync,link,fadvise64",
                                  program("qmail-queue")])
    assert done.returncode == 0, done.stderr
    [(n, (mess, todo))] = queued(tree).items()
    assert mess.endswith(b"\nSubject: x\n\nbody\n") and todo.endswith(b"\0Fa@b\0Tc@d\0Te@f\0")
    events, pending = [], {}  # (what, where) in the order strace saw them end (fsync) or start (link)
    for line in log.read_text().splitlines():
        pid = line.split()[0]
        fsync = re.search(r" fsync\(\d+<([^>]*)>", line)
        if fsync and "unfinished" in line:
            pending[pid] = fsync.group(1)  # another thread's call comes in between: it ends at "resumed"
        elif fsync:
            events.append(("fsync", fsync.group(1)))
        elif "fsync resumed" in line:
            events.append(("fsync", pending.pop(pid)))
        elif " link(" in line:
            events.append(("link", line))
        elif " fadvise64(" in line:
            events.append(("fadvise", re.search(r" fadvise64\(\d+<([^>]*)>", line).group(1)))
    def name(where):
        """The queue file an fsync was of: mess/N's descriptor shows the pid/ name it was created under."""
        where = where.split("/queue/", 1)[-1]
        return "mess" if where.startswith("pid/") else where

    names = [name(where) for what, where in events if what == "fsync"]
    link = [i for i, (what, where) in enumerate(events) if what == "link" and '"todo/%d"' % n in where]
    assert len(link) == 1, events
    before = [name(where) for what, where in events[:link[0]] if what == "fsync"]
    assert sorted(before) == ["intd/%d" % n, "mess"], events
    assert names[len(before):] == ["todo"], events
    first_fsync = [what for what, _ in events].index("fsync")
    assert sorted(name(where) for what, where in events[:first_fsync] if what == "fadvise") == [
        "intd/%d" % n, "mess"], events


@pytest.mark.parametrize("where", ["pid", "intd"])  # pid/: mess/N's descriptor
def test_a_failing_fsync_of_either_file_queues_nothing(tree, where):
    wrapper = tree.parent / "faulty-qmail-queue.py"
    wrapper.write_text(FAULTY)
    done = run_qmail_queue(tree, [sys.executable, str(wrapper)], FAULT=where)
    assert (done.returncode, done.stderr) == (53, b"")
    assert queued(tree) == {}
    assert leftovers(tree) == []
    again = run_qmail_queue(tree, [program("qmail-queue")])
    assert again.returncode == 0 and len(queued(tree)) == 1


def test_a_failing_mess_fsync_in_a_reused_process_leaves_no_descriptor_or_file(tree):
    """queuehere (a reused worker's queueing): the failure is reported (53) and both descriptors closed;
    the next message in the same process is queued."""
    script = r'''
import errno, os, posix, sys
from pyqmail.lib.queue import queuehere
real = posix.fsync
fail = [True]
def fake_fsync(fd):
    if fail[0] and "/queue/pid/" in os.readlink("/proc/self/fd/%d" % fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    return real(fd)
posix.fsync = fake_fsync
fds = sorted(os.listdir("/proc/self/fd"))
out = []
for _ in range(2):
    q = queuehere.QueueHere(sys.argv[1])
    q.put(b"Subject: y\n\nbody\n")
    out.append(q.close(b"a@b", [b"c@d"]))
    fail[0] = False
print(repr(out), sorted(os.listdir("/proc/self/fd")) == fds)
'''
    done = subprocess.run([sys.executable, "-c", script, str(tree)], capture_output=True, env=qenv(tree),
                          timeout=60)
    assert done.returncode == 0, done.stderr
    first, same_fds = done.stdout.decode().rsplit(" ", 1)
    assert first.startswith("['Z") and first.endswith(", '']") and same_fds.strip() == "True", done.stdout
    [(_, (mess, _))] = queued(tree).items()
    assert mess.endswith(b"Subject: y\n\nbody\n")
    assert len(leftovers(tree)) == 2  # the queued message's mess/N and intd/N only
