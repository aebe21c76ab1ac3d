"""qmail-queue's work done inside the calling program, when that is exactly what qmail-queue would do.

Starting qmail-queue costs a Python interpreter start per message. A program that owns the queue (a
single-user tree, or qmail-send/qmqpd running as the queue owner) and would run our own qmail-queue
writes the queue itself, with the same files, order, fsyncs and result texts (lib/queue/queue.Injection).
$QMAILQUEUE, a foreign bin/qmail-queue, root, or not owning the queue: the caller execs qmail-queue.
A network server queueing here records what qmail's qmail-queue, run by qmaild, would (network_uid).
See qmail-queue(8), QUEUEING INSIDE THE CALLER.
"""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)
import sys

from pyqmail.lib.queue import envelope, queue
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.config.control import join
from pyqmail.lib.util.exits import HOME, QUEUE_DIR, QUEUED, READ_ERROR, WRITE_ERROR, Exit, qq_text
from pyqmail.lib.util.procid import getpid
from pyqmail.lib.util.regularfile import is_regular

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable
    from pyqmail.lib.queue.client import QmailQueue


# qmail runs these as qmaild (tcpserver/inprocess.PROGRAMS serves the same three from qmail-tcpserver)
NETWORK_SERVERS = ("pyqmail.commands.qmail_qmqpd", "pyqmail.commands.qmail_qmtpd", "pyqmail.commands.qmail_smtpd")
# QMAILHOME/bin/qmail-queue's (path, inode, mtime, size) -> our_qmail_queue's answer
_recognised: dict[tuple[str, int, int, int], bool] = {}


def our_qmail_queue(home: str) -> bool:
    """True if QMAILHOME/bin/qmail-queue is the qmail-queue installed beside this interpreter, or the
    launcher qmail-setup wrote for it. A long-lived process (a reused qmail-tcpserver worker) asks again
    only when the file itself changes."""
    path = join(home, "bin", "qmail-queue")
    try:
        st = posix.lstat(path)
    except OSError:
        return False
    key = (path, st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _recognised:
        _recognised.clear()
        _recognised[key] = recognise(path, st)
    return _recognised[key]


def recognise(path: str, st: posix.stat_result) -> bool:
    """True if the file at path (lstat st) is our qmail-queue; a plain file is first read as qmail-setup's
    launcher, which needs no os import (start-up cost, lib/config/control)."""
    from pyqmail.lib.util import launcher
    if is_regular(st.st_mode) and launcher.runs(path, launcher.module_of("qmail-queue")):
        return True
    from pyqmail.lib.util import installed
    return installed.is_program(path, "qmail-queue", [sys.executable.rsplit("/", 1)[0]])


def possible(home: str) -> bool:
    """True if this process may queue a message itself instead of running qmail-queue."""
    if posix.environ.get(b"QMAILQUEUE") or posix.geteuid() == 0:
        return False
    try:
        return queue.owns_queue(home) and our_qmail_queue(home)
    except Exit:
        return False


def network_server() -> bool:
    """True in a network server's process: its program module is loaded (by its console script, the
    launcher, or the qmail-tcpserver listener whose children and workers serve it)."""
    return any(name in sys.modules for name in NETWORK_SERVERS)


_network_uid: dict[int, int] = {}  # our uid -> the uid recorded for a network server's messages


def network_uid(uid: int) -> int:
    """The uid a network server running as uid records: qmaild's in a tree with qmail's users (uid is
    qmailq's: only the queue's owner queues here), so that the Received line says `invoked from network`
    and qmail-send logs qmaild's uid, as with qmail; uid itself in a single-user tree (one account in every
    role: what qmail-queue run by it writes) or without a qmaild account."""
    if uid not in _network_uid:
        import pwd
        try:
            _network_uid[uid] = pwd.getpwnam("qmaild").pw_uid if pwd.getpwuid(uid).pw_name == "qmailq" else uid
        except KeyError:
            _network_uid[uid] = uid
    return _network_uid[uid]


def open_queue_dir(home: str) -> int:
    """Open QMAILHOME/queue as a directory descriptor (close-on-exec); Exit 61 or 62 as qmail-queue's chdirs."""
    try:
        return posix.open(join(home, "queue"), posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    except OSError:
        pass
    try:
        posix.stat(home)
    except OSError:
        raise Exit(HOME)
    raise Exit(QUEUE_DIR)


HOLD = 65536  # message bytes held before they are written to mess/N
HOLD_PARTS = 64  # or this many pieces (a client sending a byte at a time; writev takes at most IOV_MAX)


class QueueHere:
    """QmailQueue's interface (put, fail, close, abort, pid) writing the queue from this process.

    Its files are named relative to a descriptor of QMAILHOME/queue held from the first file to the commit:
    no chdir and back, no umask and back (lib/queue/queue.Injection.set_mode), the caller's process unchanged."""

    def __init__(self, home: str, uid: int | None = None) -> None:
        self.pid = getpid()
        self.home = home
        self.code = QUEUED
        self.fd = -1
        self.dir_fd = -1
        self.held: list[bytes | bytearray] = []
        self.held_size = 0
        self.injection = queue.Injection(self.pid, posix.getuid() if uid is None else uid)
        try:
            self.dir_fd = self.injection.dir_fd = open_queue_dir(home)
            self.open()
        except Exit as e:
            self.code = e.code

    def release(self) -> None:
        """Close the queue directory's descriptor."""
        fd, self.dir_fd = self.dir_fd, -1
        if fd >= 0:
            posix.close(fd)

    def open(self) -> None:
        """Create mess/N and write the Received line qmail-queue adds."""
        self.fd, _ = self.injection.open_mess()
        self.write(queue.received_line(self.pid, self.injection.uid, self.injection.now))

    def write(self, data: bytes) -> None:
        """Add to mess/N: held until HOLD bytes are waiting (or the commit), so that a small message's Received
        lines and text take one write; a failure is remembered (53) and reported at close."""
        self.held.append(data)
        self.held_size += len(data)
        if self.held_size >= HOLD or len(self.held) >= HOLD_PARTS:
            self.write_held()

    def write_held(self) -> None:
        """Write the held bytes to mess/N in one call (writev when the kernel takes them all)."""
        held, self.held, self.held_size = self.held, [], 0
        try:
            if len(held) == 1:
                write_all(self.fd, held[0])
            elif held:
                queue.write_parts(self.fd, held)
        except OSError:
            self.code = self.code or WRITE_ERROR

    def put(self, data: bytes) -> None:
        """Append message bytes."""
        if not self.code and data:
            self.write(data)

    def fail(self) -> None:
        """Make sure nothing is queued."""
        self.code = self.code or READ_ERROR  # what qmail-queue sees: the message ends before the envelope is read

    def close(self, sender: bytes, recipients: Iterable[bytes]) -> str:
        """Fsync the message, commit the envelope; return qmail.c's result text ("" when queued)."""
        try:
            self.finish(sender, recipients)
        except Exit as e:
            return qq_text(e.code)
        finally:
            self.release()
        return ""

    def finish(self, sender: bytes, recipients: Iterable[bytes]) -> None:
        """Start mess's writeback, write intd/N, fsync both, then link todo/N."""
        injection = self.injection
        if self.fd >= 0 and not self.code:
            self.write_held()
        self.held, self.held_size = [], 0
        if self.fd >= 0:
            try:
                if self.code:
                    posix.close(self.fd)
                else:
                    injection.sync_behind(self.fd)  # commit fsyncs it before linking todo/N
                self.fd = -1
            except OSError:
                self.code = WRITE_ERROR
        if not self.code:
            try:  # exactly what qmail-queue would make of these bytes (a NUL inside an address, a long one)
                sender, recipients = envelope.decode(envelope.encode(sender, recipients))
            except envelope.EnvelopeError as e:
                self.code = e.code
        if self.code:
            if injection.created:
                injection.fail(self.code)
            raise Exit(self.code)
        injection.commit(sender, recipients)

    def abort(self) -> str:
        """Give up on this message: remove what was made."""
        self.fail()
        return self.close(b"", [])


def open_queue(home: str | None = None) -> QueueHere | QmailQueue:
    """Return a QueueHere when this process may queue by itself, else a running qmail-queue (QmailQueue)."""
    from pyqmail.lib.config import control
    home = home or control.qmailhome()
    if not home.startswith("/"):
        import os.path
        home = os.path.abspath(home)
    if possible(home):
        return QueueHere(home, network_uid(posix.getuid()) if network_server() else None)
    from pyqmail.lib.queue.client import QmailQueue
    return QmailQueue(home)
