"""qmail-tcpserver's reused workers: one process serves many connections in turn, as Postfix's servers do.

A fork costs a Python process 2-3 ms of CPU, mostly copying the pages that reference counts write to:
more than the rest of a QMQP transaction. So for pyqmail's own servers the listener forks workers only
when every worker is busy, and each worker accepts and serves up to MAX_USE connections one at a time
(the oldest idle worker first: see exclusive_waiter).
Workers tell the listener when they become busy or idle through a pipe, in RECORD-byte records.
See qmail-tcpserver(8).
"""

from __future__ import annotations

import _signal
import os
import signal
import sys

from pyqmail.lib.tcpserver import ruleenv
from pyqmail.lib.util import envsnapshot

MYPY = False
if MYPY:  # typing only: never imported at run time
    import _socket
    import select
    from collections.abc import Callable
    from types import FrameType
    from typing import NoReturn
    from pyqmail.lib.tcpserver.tcpserve import SocketAddress

MAX_USE = 1000  # connections per worker (Postfix's max_use is 100: a fork costs a Python worker far more)
MAX_IDLE = 100  # seconds an idle worker waits for a connection before it exits (Postfix's max_idle)
RECORD = 9  # the worker's pid in 8 hex digits, then B (busy) or I (idle)
KEEP_FD = 900  # a worker's own descriptors are moved here; 3 up to this are closed after each connection
TRIM_OVER = 512 << 10  # private resident bytes a connection may add before the worker calls malloc_trim
GROWTH_MAX = 8 << 20  # private resident bytes a worker may gain over its size when forked; past it, it exits
PROGRAM_FDS = 16  # descriptors a program must have below a worker's own (qmail-qmqpd's queueing needs 12)


class Pool:
    """The listener's view of its workers: which exist and which are serving a connection."""

    def __init__(self) -> None:
        self.busy: dict[int, bool] = {}  # pid: True while it serves a connection
        self.idle_count = 0  # kept with busy: the listener asks at every turn of its loop
        self.status_r, self.status_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.partial = b""

    def idle(self) -> int:
        """Number of workers waiting for a connection."""
        return self.idle_count

    def serving(self) -> int:
        """Number of connections being served."""
        return len(self.busy) - self.idle_count

    def added(self, pid: int) -> None:
        """A worker was forked; it starts idle."""
        self.busy[pid] = False
        self.idle_count += 1

    def read(self) -> bool:
        """Read the workers' records; return True if any arrived."""
        data = self.partial
        while True:
            try:
                chunk = os.read(self.status_r, 4096)
            except BlockingIOError:
                break
            data += chunk
            if len(chunk) < 4096:  # the pipe is empty (or at its end): no second read to learn that
                break
        whole = len(data) - len(data) % RECORD
        for i in range(0, whole, RECORD):
            pid = int(data[i:i + 8], 16)
            if pid in self.busy:  # a record of a worker reaped already is stale
                busy = data[i + 8:i + 9] == b"B"
                if busy != self.busy[pid]:
                    self.idle_count += -1 if busy else 1
                    self.busy[pid] = busy
        self.partial = data[whole:]
        return whole > 0

    def ended(self, pid: int) -> bool | None:
        """A child ended: True if it was a worker serving a connection, False if idle, None if no worker."""
        self.read()  # its last record is in the pipe before it can be reaped
        was = self.busy.pop(pid, None)
        if was is False:
            self.idle_count -= 1
        return was

    def stop(self) -> None:
        """Ask every worker to exit: idle ones at once, busy ones after their connection."""
        for pid in self.busy:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass


def private_resident() -> int:
    """Return this process's resident memory that is not file-backed (Linux /proc/self/statm: resident minus
    shared), in bytes, or 0 where unknown: a mapped cdb file is no growth to undo."""
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
    except OSError:
        return 0
    try:
        fields = os.read(fd, 256).split()
        return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
    finally:
        os.close(fd)


def malloc_trim() -> Callable[[int], int] | None:
    """Return glibc's malloc_trim, which hands the heap's free pages back to the kernel, or None elsewhere."""
    try:
        import ctypes
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, ImportError):
        return None


def die_with_parent() -> None:
    """Have the kernel TERM this worker when the listener dies (Linux prctl; nothing elsewhere)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError, ImportError):
        pass


def exclusive_waiter(listen_fd: int, keep: Callable[[int, int], int]) -> select.epoll | None:
    """Return an epoll object (its descriptor moved by keep) waiting for a connection on listen_fd with
    EPOLLEXCLUSIVE, or None where there is none (before Linux 4.5, elsewhere): workers then block in accept().
    Blocked in accept(), the longest-idle worker is woken, so connections go round every worker and keep
    all of them alive. An exclusive epoll wait wakes the idle worker registered first: the oldest workers
    take nearly every connection, and one forked for a peak stays idle until MAX_IDLE ends it."""
    import select
    flag = getattr(select, "EPOLLEXCLUSIVE", 0)
    if not flag or not hasattr(select, "epoll"):
        return None
    try:
        with select.epoll(1) as made:
            made.register(listen_fd, select.EPOLLIN | flag)
            return select.epoll.fromfd(keep(made.fileno(), 4))
    except OSError:
        return None


def keep_base() -> int:
    """Return the lowest descriptor a worker keeps its own at (KEEP_FD, or lower under a small RLIMIT_NOFILE)."""
    return max(3, min(KEEP_FD, os.sysconf("SC_OPEN_MAX") - 8))


def fits(highest_fd: int) -> bool:
    """True if a worker forked by a listener whose descriptors end at highest_fd can move its own above them
    and leave its program PROGRAM_FDS descriptors (a small RLIMIT_NOFILE leaves no room: the worker's own would
    overwrite the listener's, or the program could not open what it needs)."""
    return keep_base() - highest_fd - 1 >= PROGRAM_FDS


class Worker:
    """The worker's loop: accept, serve in this process, clean up, say idle; exit after MAX_USE, or after a
    connection that left it GROWTH_MAX bigger than it was forked, even after malloc_trim (Python keeps
    blocks it freed for reuse: a fresh worker is the sure way back to the idle size)."""

    def __init__(self, listen_fd: int, status_w: int, serve: Callable[[_socket.socket, SocketAddress], int],
                 say_end: Callable[[int, int], None], keep_env: frozenset[bytes] = frozenset(),
                 cwd_fd: int | None = None, warn: Callable[[str], None] | None = None) -> None:
        self.serve, self.say_end, self.keep_env, self.warn = serve, say_end, keep_env, warn
        self.busy = self.stopping = False
        self.base = keep_base()
        self.status_w = self.keep(status_w, 0)
        self.listen_fd = self.keep(listen_fd, 1)
        null = os.open(os.devnull, os.O_RDWR)
        self.null = self.keep(null, 2)
        # cwd_fd: the listener's, opened before -u (a uid that cannot search its directory cannot open ".")
        here = os.open(".", os.O_RDONLY | os.O_DIRECTORY) if cwd_fd is None else cwd_fd
        self.cwd = self.keep(here, 3)
        os.closerange(3, self.base)  # the listener's socket object, pipes and anything else it had open
        self.environ, self.argv = envsnapshot.take(), list(sys.argv)
        self.umask = os.umask(0o022)
        os.umask(self.umask)

    def keep(self, fd: int, slot: int) -> int:
        """Move fd to base+slot, where clean_up leaves it alone, not inherited by programs run later."""
        return os.dup2(fd, self.base + slot, inheritable=False)

    def tell(self, state: bytes) -> None:
        """Tell the listener this worker is now busy (B) or idle (I)."""
        os.write(self.status_w, self.record + state)

    def on_term(self, signum: int, frame: FrameType | None) -> None:
        """TERM: an idle worker exits at once, a busy one after its connection; it lets the listening socket go
        now, so that a listener restarted at once (svc -t) can bind the port, as tcpserver's children hold none."""
        if not self.busy:
            os._exit(0)
        self.stopping = True
        os.dup2(self.null, self.listen_fd)  # the socket closed, its descriptor number kept: nothing reuses it

    def rest(self, e: OSError) -> None:
        """accept(2) failed for want of descriptors or memory: one warning line, then a tenth of a second's rest
        (the connection stays ready: retried at once, it would fail again at once)."""
        import select
        from pyqmail.lib.util.errstr import error_str
        if self.warn is not None:
            self.warn("tcpserver: warning: unable to accept: %s" % error_str(e.errno))
        select.select([], [], [], 0.1)

    def on_alarm(self, signum: int, frame: FrameType | None) -> None:
        """No connection for MAX_IDLE seconds: exit (the listener forks anew when it needs to)."""
        if not self.busy:
            os._exit(0)

    def run(self, listener_pid: int) -> NoReturn:
        """Serve up to MAX_USE connections; never returns."""
        import _socket
        die_with_parent()
        if os.getppid() != listener_pid:
            os._exit(0)
        self.pid = os.getpid()
        self.record = b"%08x" % self.pid
        signal.signal(signal.SIGTERM, self.on_term)
        waiter = exclusive_waiter(self.listen_fd, self.keep)
        # the listener itself never accepts in this mode: the descriptor's blocking flag is the workers'
        os.set_blocking(self.listen_fd, waiter is None)
        # _socket's own objects: socket.socket's accept() converts family and type to enums every time
        sock = _socket.socket(fileno=self.listen_fd)
        kind = sock.family, sock.type, sock.proto
        self.trim = malloc_trim()
        if self.trim is not None:  # what the listener's heap had freed: given back now, never counted as growth room
            self.trim(0)
        self.forked_size = self.trimmed_size = private_resident()
        served = 0
        while served < MAX_USE:
            if waiter is None:  # blocked in accept(2): an alarm ends the idle wait
                _signal.signal(_signal.SIGALRM, self.on_alarm)  # _signal: no enum conversions per connection
                signal.alarm(MAX_IDLE)
            try:
                if waiter is not None and not waiter.poll(MAX_IDLE):
                    os._exit(0)  # idle for MAX_IDLE seconds (the epoll wait's own timeout: no alarm calls)
                fd, remote = sock._accept()  # type: ignore[attr-defined]  # CPython's, not in typeshed
            except (BlockingIOError, ConnectionAbortedError):  # another worker took it, or the client left
                continue
            except OSError as e:  # out of descriptors or memory: say so and rest, never spin
                self.rest(e)
                continue
            served += 1
            conn = _socket.socket(*kind, fileno=fd)
            self.busy = True
            if waiter is None:
                signal.alarm(0)
            self.tell(b"B")
            code = self.serve(conn, remote)
            conn.close()  # if serve did not take its descriptor: closed now, never later by the collector
            del conn
            self.clean_up()
            too_big = self.too_big()  # it opens /proc/self/statm for a moment
            # the end line last, as tcpserver's comes after its child has gone: whoever reads it finds the
            # worker holding only its own descriptors
            self.say_end(self.pid, (code & 0xFF) << 8)
            self.busy = False
            self.tell(b"I")
            if self.stopping or too_big:
                break
        os._exit(0)

    def clean_up(self) -> None:
        """Leave the process as it was before the connection: descriptors, alarm, environment, cwd, umask."""
        signal.alarm(0)
        if _signal.getsignal(_signal.SIGALRM) != _signal.SIG_DFL:  # Python's table: no system call to ask
            _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)
        os.dup2(self.null, 0)
        os.dup2(self.null, 1)
        os.closerange(3, self.base)
        ruleenv.restore(self.environ, self.keep_env)
        sys.argv = list(self.argv)
        os.fchdir(self.cwd)
        os.umask(self.umask)

    def too_big(self) -> bool:
        """Trim the heap if it grew TRIM_OVER since the last trim (a freed megabyte buffer stays in glibc's
        heap otherwise); True if the worker is still GROWTH_MAX over its size when forked."""
        size = private_resident()
        if self.trim is not None and size > self.trimmed_size + TRIM_OVER:
            self.trim(0)  # not after every connection: 40 us each, as the pages it frees fault in again
            size = self.trimmed_size = private_resident()
        return size > self.forked_size + GROWTH_MAX
