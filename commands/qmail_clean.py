"""qmail-clean: remove a message's queue files when qmail-send says so (qmail-clean(8))."""

import os
import time

from pyqmail.lib.config import control
from pyqmail.lib.queue import queuepool
from pyqmail.lib.queue.queue import OSSIFIED, split_name
from pyqmail.lib.spawn import spawnproto
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main
from pyqmail.lib.util.fdio import nul_records, write_all

CLEANUP_EVERY = 30
POOL_SWEEP = 3600  # the pool's idle files are looked at hourly, not with every 31st command
UNLINK_THREADS = 8  # a virtio disk's discards overlap up to about 8 at once (qmail-clean(8))
SLOW_UNLINK = 0.00025  # seconds: unlinks this slow each (a discard waiting for the disk) run from the threads
PROBE_EVERY = 64  # batches run in threads before one runs in turn again, timed
LINE_MAX = 100  # longer commands are answered `x` and their bytes dropped, never stored
GIVER = queuepool.Giver()  # the pool's one giver is this process
# messages whose intd/N a todo/N command here removed: their foop/N skips unlinking it again (qmail-clean(8))
INTD_GONE: set[int] = set()
INTD_GONE_MAX = 100000  # beyond that many messages between todo/N and foop/N, foop/N unlinks intd/N as qmail


def clean_pid_dir(now, pool=True):
    """Remove the files in pid/ not accessed for 36 hours (an injection that died; with pool, an idle
    pool file too)."""
    try:
        names = os.listdir("pid")
    except OSError:
        return
    for name in names:
        if not pool and queuepool.is_pooled(name):
            continue
        path = "pid/" + name
        try:
            if now >= os.stat(path).st_atime + OSSIFIED:
                os.unlink(path)
        except OSError:
            continue


def removed(path):
    """Unlink path; True if it is gone now (a missing one is fine), False on any other error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def start(line):
    """Carry out one command but its last unlink: return the byte to answer, or the path still to unlink (its
    answer is then answer_unlinked's)."""
    command = spawnproto.clean_command(line)
    if command is None:
        return b"x"
    kind, n = command
    if kind == "foop":
        pool, last = "mess", split_name("mess", n)
        if n in INTD_GONE:
            INTD_GONE.discard(n)  # this process removed intd/N; none can be made again while mess/N is there
        elif not removed("intd/%d" % n):
            return b"!"
    else:
        pool, last = "intd", "todo/%d" % n
        if not removed("intd/%d" % n):  # (todo/N's other name, or already gone: no blocks freed)
            return b"!"
        if len(INTD_GONE) < INTD_GONE_MAX:
            INTD_GONE.add(n)
    return b"+" if GIVER.give(pool, last) else last


def answer_unlinked(ok):
    """The answer to a command whose last file was unlinked (True) or could not be (False)."""
    return b"+" if ok else b"!"


class Unlinks:
    """The last unlinks of the commands one read brought. On a file system mounted with `discard` an unlink
    that frees blocks waits for the device (qmail-clean(8)), and in parallel they take a fraction of the time
    each: there they run from a thread pool (made on first need). Elsewhere the pool's hand-offs cost more
    CPU than the unlinks, so they run in turn while they are quick, timed, and every PROBE_EVERY-th batch
    in threads runs in turn again to see whether they still are slow."""

    def __init__(self):
        self.pool = None
        self.slow = False  # the last unlinks run in turn took SLOW_UNLINK or more each
        self.countdown = 0  # batches left to run in threads before the next one in turn

    def run(self, paths):
        """Unlink paths; return each one's outcome (removed()), in order."""
        if len(paths) > 1 and self.slow and self.countdown:
            self.countdown -= 1
            if self.pool is None:
                from concurrent.futures import ThreadPoolExecutor
                self.pool = ThreadPoolExecutor(UNLINK_THREADS)
            return list(self.pool.map(removed, paths))
        began = time.monotonic()
        outcomes = [removed(p) for p in paths]
        self.slow = time.monotonic() - began >= SLOW_UNLINK * len(paths)
        self.countdown = PROBE_EVERY
        return outcomes


def batches(fd):
    """Yield the NUL-terminated commands of each read from fd, as a list; an over-long one is cut short
    (and refused)."""
    line = bytearray()
    while True:
        data = os.read(fd, 1024)
        if not data:
            return
        yield nul_records(line, data, LINE_MAX + 1)


def body(argv):
    """Answer qmail-send's clean-up commands on fd 0 until it closes it: the answers to what one read
    brought go out in one write, each after its command is carried out."""
    try:
        os.chdir(os.path.join(control.qmailhome(), "queue"))
    except OSError:
        raise Exit(TEMP_FAILURE)
    pool_swept = time.time()
    clean_pid_dir(pool_swept)
    countdown = CLEANUP_EVERY
    unlinks = Unlinks()
    for batch in batches(0):
        answers = []
        for line in batch:
            answers.append(start(line))
            if countdown:
                countdown -= 1
            else:
                now = time.time()  # before the next command, every 31 as qmail-clean's loop does
                sweep = now >= pool_swept + POOL_SWEEP
                clean_pid_dir(now, pool=sweep)
                pool_swept = now if sweep else pool_swept
                countdown = CLEANUP_EVERY
        paths = [a for a in answers if not isinstance(a, bytes)]
        if paths:
            done = iter(unlinks.run(paths))
            answers = [a if isinstance(a, bytes) else answer_unlinked(next(done)) for a in answers]
        try:
            write_all(1, b"".join(answers))
        except OSError:
            return 100
    return 0


def run():
    """Console-script entry point."""
    main("qmail-clean", body, crash_code=TEMP_FAILURE)
