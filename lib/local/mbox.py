"""mbox delivery as qmail-local does it (qmail-local(8); mbox(5), mboxrd): flock, From_ line, >From quoting,
fsync."""

from __future__ import annotations

import os

from pyqmail.lib.local import msgfd
from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.fdio import write_all

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterator
    from typing import NoReturn

FROM_ = b"From "
LOCK_SECONDS = 30
REOPEN_TRIES = 10  # times the mbox may be found replaced once its lock is granted before the delivery defers
FLUSH_AT = 65536


class FromQuoter:
    """Streaming >From quoting with bounded state: a count of `>` and at most 5 bytes of `From `."""

    def __init__(self) -> None:
        self.at_start = True
        self.gt = 0
        self.partial = b""

    def _prefix(self, quoted: bool) -> Iterator[bytes]:
        """Yield the held-back start of a line, with the extra `>` if it is a From_ line."""
        gt = self.gt + (1 if quoted else 0)
        while gt:
            n = min(gt, FLUSH_AT)
            yield b">" * n
            gt -= n
        if self.partial:
            yield self.partial
        self.gt, self.partial, self.at_start = 0, b"", False

    def feed(self, data: bytes) -> list[bytes]:
        """Return a list of output pieces for the next bytes of the message."""
        out: list[bytes] = []
        pos, n = 0, len(data)
        while pos < n:
            if self.at_start:
                while pos < n and not self.partial and data[pos] == 0x3E:
                    self.gt += 1
                    pos += 1
                while pos < n and len(self.partial) < 5 and data[pos] == FROM_[len(self.partial)]:
                    self.partial += data[pos:pos + 1]
                    pos += 1
                if len(self.partial) < 5 and pos >= n:
                    break  # undecided: wait for more bytes
                out.extend(self._prefix(len(self.partial) == 5))
            nl = data.find(b"\n", pos)
            end = n if nl < 0 else nl + 1
            out.append(data[pos:end])
            pos = end
            self.at_start = nl >= 0
        return out

    def finish(self) -> bytes:
        """Return what ends the message: the held-back partial line and its missing `\\n`."""
        if self.at_start and not self.gt and not self.partial:
            return b""
        return b"".join(self._prefix(False)) + b"\n"


def _lock(fd: int) -> bool:
    """flock fd exclusively, waiting at most 30 s; return whether the lock was obtained."""
    import _signal
    import fcntl

    def slow(*_: object) -> NoReturn:
        raise Exit(TEMP_FAILURE, "File has been locked for 30 seconds straight. (#4.3.0)")

    _signal.signal(_signal.SIGALRM, slow)
    _signal.alarm(LOCK_SECONDS)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    except OSError:
        return False
    finally:
        _signal.alarm(0)
        _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)


def _still_there(fd: int, path: bytes) -> bool:
    """True if path still names the file open on fd (not renamed over or removed while we waited for its lock)."""
    st = os.fstat(fd)
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def _open_locked(path: bytes, shown: str) -> tuple[int, bool]:
    """Open the mbox at path and lock it; return (fd, whether locked). A file that is no longer the mbox once its
    lock is granted (maildir2mbox renames its copy over $MAIL, then unlocks) is opened again: written, the message
    would go to a file nobody reads."""
    for _ in range(REOPEN_TRIES):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o600)
        except OSError as e:
            raise Exit(TEMP_FAILURE, "Unable to open %s: %s. (#4.2.1)" % (shown, error_str(e.errno)))
        try:
            locked = _lock(fd)
            if not locked or _still_there(fd, path):
                return fd, locked
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise Exit(TEMP_FAILURE, "Unable to lock %s: it was replaced each time. (#4.3.0)" % shown)


def deliver(path: bytes, head: bytes, fd_in: int) -> None:
    """Append the message on fd_in to the mbox at path, preceded by head (UFLINE, RPLINE, DTLINE)."""
    shown = path.decode("utf-8", "surrogateescape")
    msgfd.rewind(fd_in)
    fd, locked = _open_locked(path, shown)
    pos = 0
    try:
        pos = os.lseek(fd, 0, os.SEEK_END)
        quoter = FromQuoter()
        pending = [head]
        size = len(head)
        for chunk in msgfd.chunks(fd_in):
            for piece in quoter.feed(chunk):
                pending.append(piece)
                size += len(piece)
            if size >= FLUSH_AT:
                write_all(fd, b"".join(pending))
                pending, size = [], 0
        pending.append(quoter.finish() + b"\n")
        write_all(fd, b"".join(pending))
        os.fsync(fd)
    except msgfd.MessageReadError as e:
        _undo(fd, locked, pos)
        raise Exit(TEMP_FAILURE, msgfd.read_text(e))
    except OSError as e:
        _undo(fd, locked, pos)
        raise Exit(TEMP_FAILURE, "Unable to write %s: %s. (#4.3.0)" % (shown, error_str(e.errno)))
    except BaseException:
        _undo(fd, locked, pos)
        raise
    os.close(fd)


def _undo(fd: int, locked: bool, pos: int) -> None:
    """Cut the mbox back to where this delivery began (only when we hold the lock), then close it."""
    try:
        if locked:
            os.ftruncate(fd, pos)
    except OSError:
        pass
    os.close(fd)
