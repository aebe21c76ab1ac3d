"""Reused delivery workers: a process per uid serves many deliveries in turn, for qmail-lspawn and qmail-rspawn.

A fork costs a Python process 2-3 ms of CPU (the kernel copying pages that reference counts write to),
more than a Maildir delivery. So qmail-lspawn forks a worker per (uid, gid) that switches to that user
once and then runs qmail-local for up to MAX_USE deliveries, one at a time. Each request carries the
message and the output pipe as descriptors (SCM_RIGHTS) and qmail-local's arguments; the worker answers
with qmail-local's exit code. A worker never serves another uid: it could not, having dropped root.
qmail-rspawn's workers run qmail-remote the same way, all under qmail-rspawn's own uid (qmailr).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import struct

from pyqmail.lib.util import envsnapshot

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable

    Key = tuple[int, int]  # (uid, gid): whom a worker delivers as

MAX_USE = 1000  # deliveries per worker (Postfix's max_use is 100: a fork costs a Python worker far more)
MAX_IDLE = 60  # seconds an idle worker waits before it exits
IDLE_KEEP = 20  # qmail-lspawn's idle workers kept (one per user: more would mostly wait for MAX_IDLE)
EXTRA_FDS = 1  # descriptors a request may carry besides the message and the pipe (a lent SMTP connection)
REQUEST_MAX = 1 << 18  # bytes of arguments in one request (addresses are bounded far below this)
RETIRE = 1  # an answer's second byte: the worker was changed from outside, use it no more


def _rlimits() -> tuple[int, ...]:
    """The resource limits this kernel answers getrlimit for (fingerprint)."""
    out = []
    for name in sorted(dir(resource)):
        if name.startswith("RLIMIT_"):
            limit = getattr(resource, name)
            try:
                resource.getrlimit(limit)
            except (ValueError, OSError):
                continue
            out.append(limit)
    return tuple(out)


RLIMITS = _rlimits()


class Worker:
    """The spawner's handle on one worker process."""

    def __init__(self, pid: int, sock: socket.socket, key: Key) -> None:
        self.pid, self.sock, self.key = pid, sock, key
        self.busy = self.gone = False
        self.uses = 0


class LocalWorkers:
    """Start, reuse and retire workers; serve(argv) runs in the worker as the user and returns an exit code."""

    def __init__(self, become: Callable[[int, int], int], serve: Callable[[list[bytes], list[int]], int],
                 idle_keep: int = IDLE_KEEP, keep: tuple[int, ...] = (), idle_code: int = 111) -> None:
        self.become, self.serve = become, serve  # serve(argv, extra descriptors of the request) -> exit code
        # a worker's exit code when it leaves without serving a request it may have been sent (its idle limit
        # ended just as the spawner sent one): the spawner reports that delivery from it, so it must defer
        self.idle_code = idle_code
        self.keep = keep  # descriptors every worker keeps open (qmail-rspawn's connection cache's sending end)
        self.idle_keep = idle_keep  # idle workers kept; beyond that the least recently used one is told to go
        self.workers: dict[int, Worker] = {}  # pid: Worker
        self.idle: list[Worker] = []  # least recently used first

    def launch(self, key: Key, argv: list[bytes], fdmess: int, fdout: int, extra: tuple[int, ...] = ()) -> int:
        """Hand a delivery to an idle worker of key, or a new one (with extra descriptors, at most EXTRA_FDS);
        return the worker's pid."""
        for w in list(reversed(self.idle)):
            if w.key == key:
                self.idle.remove(w)
                if self.send(w, argv, fdmess, fdout, extra):
                    return w.pid
                self.retire(w)
        w = self.fork(key)
        if not self.send(w, argv, fdmess, fdout, extra):
            self.retire(w)
            raise OSError("worker gone")
        return w.pid

    def send(self, w: Worker, argv: list[bytes], fdmess: int, fdout: int, extra: tuple[int, ...] = ()) -> bool:
        """Send one request; False if the worker is gone."""
        try:
            socket.send_fds(w.sock, [b"\0".join(argv)], [fdmess, fdout, *extra])
        except OSError:
            return False
        w.busy = True
        w.uses += 1
        return True

    def fork(self, key: Key) -> Worker:
        """Fork a worker for (uid, gid)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            code = self.idle_code  # an exception: a request it may hold is deferred (qmail-lspawn: 118)
            try:
                mine.close()
                code = self.worker(theirs, key)
            finally:
                os._exit(code)
        theirs.close()
        w = Worker(pid, mine, key)
        self.workers[pid] = w
        return w

    def busy_socks(self) -> dict[int, Worker]:
        """The sockets of workers with a delivery running: their answers are to be read."""
        return {w.sock.fileno(): w for w in self.workers.values() if w.busy}

    def answer(self, w: Worker) -> int | None:
        """Read a worker's answer; return the delivery's wait status (the worker's own if it died)."""
        try:
            data = w.sock.recv(2)
        except OSError:
            data = b""
        if not data:
            return None  # it died: reaping gives the status
        w.busy = False
        if w.uses >= MAX_USE or data[1:] == bytes([RETIRE]):
            self.retire(w)
        else:
            self.idle.append(w)
            if len(self.idle) > self.idle_keep:
                self.retire(self.idle.pop(0))
        return data[0] << 8

    def retire(self, w: Worker) -> None:
        """Close a worker's socket: it exits when it reads the end."""
        if w in self.idle:
            self.idle.remove(w)
        w.sock.close()
        w.busy, w.gone = False, True

    def ended(self, pid: int) -> None:
        """A child died: forget it if it was a worker."""
        w = self.workers.pop(pid, None)
        if w is not None and not w.gone:
            self.retire(w)

    def worker(self, sock: socket.socket, key: Key) -> int:
        """In the worker: become the user, then serve requests until the socket ends or stays silent for
        MAX_IDLE seconds; return the exit code."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        close_all_but(sock.fileno(), *self.keep)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        keep = (sock.fileno(), *self.keep)
        code = self.become(*key)
        if code:
            # the spawner sends the first request right after the fork: take it before leaving, so that it
            # is reported with this code, never as a send to a worker already gone ("unable to fork")
            sock.settimeout(MAX_IDLE)
            try:
                sock.recv(1)
            except OSError:
                pass
            return code
        os.chdir("/")  # not the queue: the user may not read it; qmail-local goes to the user's home
        environ, mask = envsnapshot.take(), os.umask(0o077)
        os.umask(mask)
        # the idle limit is the socket's receive timeout: no alarm(2) and handler around every request
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", MAX_IDLE, 0))
        buf = bytearray(REQUEST_MAX)
        state = fingerprint()
        # Only a process of the user's can change the worker; until a delivery has run one (a |program, a
        # forward's qmail-queue) the fingerprint is not asked: twice a delivery it would cost a tenth of one.
        children, watched = children_used(), False
        while True:
            try:
                data, fds = receive(sock, buf)
            except OSError:  # the timeout (EAGAIN): a request may be on its way all the same
                return self.idle_code
            if not data:
                return 0  # the spawner closed the socket: it sends nothing more
            if not 2 <= len(fds) <= 2 + EXTRA_FDS:
                return self.idle_code
            if watched and fingerprint() != state:  # changed while idle (a program's background process)
                return self.idle_code
            for fd, target in zip(fds, (0, 1)):
                os.dup2(fd, target)
                os.close(fd)
            os.dup2(1, 2)
            code = self.serve(data.split(b"\0"), fds[2:])
            null = os.open(os.devnull, os.O_RDWR)  # (not one kept open: a worker holds no descriptor but its own)
            for fd in (0, 1, 2):
                os.dup2(null, fd)  # the pipe's write end closes here: the spawner then sees its end
            close_all_but(*keep)  # whatever the delivery left open, and null
            envsnapshot.restore(environ)
            os.chdir("/")
            os.umask(mask)
            watched = watched or children_used() != children
            changed = watched and fingerprint() != state
            sock.send(bytes([code & 0xFF, RETIRE]) if changed else bytes([code & 0xFF]))


def fingerprint() -> tuple[object, ...]:
    """What a process of the worker's own user may change in the worker from outside (a |program is its
    child): resource limits (prlimit), nice value, scheduling policy, CPU affinity. A fresh qmail-local would
    start with qmail-lspawn's, so a worker whose fingerprint changed is retired."""
    return (tuple(resource.getrlimit(r) for r in RLIMITS), os.getpriority(os.PRIO_PROCESS, 0),
            os.sched_getscheduler(0), os.sched_getaffinity(0))


def children_used() -> object:
    """What the worker's reaped children have used (getrusage): it changes once a delivery has run a process."""
    return resource.getrusage(resource.RUSAGE_CHILDREN)


def receive(sock: socket.socket, buf: bytearray) -> tuple[bytes, list[int]]:
    """Read one request into buf, which the worker allocates once (a fresh REQUEST_MAX buffer per
    request costs an mmap and its page faults); return (its bytes, the descriptors it carried)."""
    n, ancdata, _, _ = sock.recvmsg_into([buf], socket.CMSG_SPACE((2 + EXTRA_FDS) * 4))
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += memoryview(data[:len(data) - len(data) % 4]).cast("i")
    return bytes(memoryview(buf)[:n]), fds


_open_max: list[int] = []  # [sysconf(_SC_OPEN_MAX)], asked once per process (each ask is a getrlimit)


def close_all_but(*keep: int) -> None:
    """Close every descriptor from 3 up except those in keep."""
    if not _open_max:
        _open_max.append(os.sysconf("SC_OPEN_MAX"))
    low = 3
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, max(low, _open_max[0]))
