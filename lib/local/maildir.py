"""maildir delivery (maildir(5)): the message written into an unnamed file in tmp/ (O_TMPFILE) and fsynced,
then linked into new/<unique> and new/ fsynced; where the kernel or file system has no O_TMPFILE, or /proc
is not mounted, as qmail does: tmp/<unique> created O_EXCL, fsynced, linked into new/ and unlinked
(qmail-local(8))."""

from __future__ import annotations

import errno
import os
import time

from pyqmail.lib.local import msgfd
from pyqmail.lib.util.errstr import is_temp
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.procid import getpid

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable
    from typing import NoReturn, TypeVar

    T = TypeVar("T")

DEATH = 86400  # qmail-local's whole-delivery alarm
TRIES = 3
RETRY_SLEEP = 2
TEMP_ERROR = "Temporary error on maildir delivery. (#4.3.0)"
_host: list[str] = []  # [os.uname().nodename], once asked
_proc_fd: list[bool] = []  # [True] once /proc/self/fd was found, [False] if not: linkat reaches an unnamed file there


def safe_host(host: str) -> str:
    """Return the host name as maildir(5) wants it in file names: `/` as \\057, `:` as \\072."""
    return host.replace("/", "\\057").replace(":", "\\072")


def unique_name(now: float, pid: int, host: str, random_hex: str) -> str:
    """Return a maildir unique name `<sec>.M<usec>P<pid>R<random>.<host>`."""
    sec = int(now)
    usec = int((now - sec) * 1000000)
    return "%d.M%dP%dR%s.%s" % (sec, usec, pid, random_hex, safe_host(host))


def hostname() -> str:
    """This host's name for unique names, asked once per process (a reused worker delivers many)."""
    if not _host:
        _host.append(os.uname().nodename)
    return _host[0]


def _with_unique_name(make: Callable[[str], T]) -> T:
    """Return make(a fresh unique name), trying another name while one exists (3 tries, 2 s apart)."""
    host = hostname()
    for attempt in range(TRIES):
        name = unique_name(time.time(), getpid(), host, os.urandom(4).hex())
        try:
            return make(name)
        except FileExistsError:
            if attempt + 1 < TRIES:
                time.sleep(RETRY_SLEEP)
    raise Exit(TEMP_FAILURE, TEMP_ERROR)


def _open_tmp(dfd: int) -> tuple[int, str]:
    """Create tmp/<unique> exclusively; return (fd, name)."""
    return _with_unique_name(lambda name: (
        os.open("tmp/" + name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dfd), name))


def _open_unnamed(dfd: int) -> int | None:
    """Open an unnamed file in tmp/ (O_TMPFILE); return its descriptor, or None where that is not possible."""
    # On ext4 without a journal, fsync of a new tmp/<unique> also writes tmp/ and its inode (the file
    # was just added to it); nobody needs tmp/'s entry, so an unnamed file saves two of six writes.
    if not _proc_fd:
        _proc_fd.append(hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"))
    if not _proc_fd[0]:
        return None
    try:
        return os.open("tmp", os.O_WRONLY | os.O_TMPFILE, 0o600, dir_fd=dfd)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None  # no O_TMPFILE here: an old kernel takes it for O_DIRECTORY, some file systems refuse
        raise


def _link_unnamed(fd: int, dfd: int) -> None:
    """Link the unnamed file on fd into new/<unique>."""
    _with_unique_name(lambda name: os.link("/proc/self/fd/%d" % fd, "new/" + name, dst_dir_fd=dfd))


def _copy(fd: int, head: bytes, fd_in: int) -> None:
    """Write head and the message to fd (head with the first read, in one write), then fsync it."""
    for chunk in msgfd.chunks(fd_in):
        write_all(fd, head + chunk if head else chunk)
        head = b""
    if head:
        write_all(fd, head)
    os.fsync(fd)


def _fsync_new(dfd: int) -> None:
    """fsync new/ so that the link survives a crash (Linux needs it; qmail relied on sync directories)."""
    try:
        nfd = os.open("new", os.O_RDONLY | os.O_DIRECTORY, dir_fd=dfd)
    except OSError:
        return
    try:
        os.fsync(nfd)
    except OSError:
        pass
    os.close(nfd)


def _give_up(*_: object) -> NoReturn:
    """SIGALRM during a maildir delivery: qmail-local's whole-delivery timeout."""
    raise Exit(TEMP_FAILURE, "Timeout on maildir delivery. (#4.3.0)")


def deliver(directory: bytes, head: bytes, fd_in: int) -> None:
    """Deliver the message on fd_in, preceded by head (RPLINE, DTLINE), into the maildir directory."""
    import _signal
    msgfd.rewind(fd_in)
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise Exit(TEMP_FAILURE, TEMP_ERROR if is_temp(e.errno) else "Unable to chdir to maildir. (#4.2.1)")
    tmp: str | None = None  # tmp/<unique>, once created there
    if _signal.getsignal(_signal.SIGALRM) is not _give_up:  # a reused worker sets it once, not per delivery
        _signal.signal(_signal.SIGALRM, _give_up)
    _signal.alarm(DEATH)
    try:
        fd = _open_unnamed(dfd)
        if fd is not None:
            try:  # an unnamed file leaves nothing behind if the delivery fails
                _copy(fd, head, fd_in)
                _link_unnamed(fd, dfd)
            finally:
                os.close(fd)
        else:
            fd, name = _open_tmp(dfd)
            tmp = "tmp/" + name
            try:
                _copy(fd, head, fd_in)
            finally:
                os.close(fd)
            os.link(tmp, "new/" + name, src_dir_fd=dfd, dst_dir_fd=dfd)
        _fsync_new(dfd)
    except msgfd.MessageReadError:
        raise Exit(TEMP_FAILURE, "Unable to read message. (#4.3.0)")
    except OSError:
        raise Exit(TEMP_FAILURE, TEMP_ERROR)
    finally:
        _signal.alarm(0)  # the handler stays: with no alarm pending it is never called
        if tmp:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
        os.close(dfd)
