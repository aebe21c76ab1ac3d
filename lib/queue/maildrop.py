"""The privilege boundary: users who do not own the queue drop mail into QMAILHOME/maildrop.

A drop file is the message, then its qmail-queue envelope, then one trailer line
`pqmaildrop1 <pid> <envelope offset>\n`.  It is written as maildrop/t<random>,
fsynced, and renamed to maildrop/<random>; qmail-pickup, running as the queue's
owner and woken by inotify, claims it by renaming it to maildrop/p<random>, queues
it with the file owner's uid in the `u` record, and removes it. The claim is what
lets a writer whose directory fsync failed take its drop back without a race.
The boundary and its exit codes: qmail-queue(8), PRIVILEGE BOUNDARY; qmail-pickup(8).
"""

from __future__ import annotations

import os

from pyqmail.lib.queue import envelope, queue
from pyqmail.lib.util.exits import HOME, PERM_REFUSED, QUEUE_DIR, QUEUE_PID, READ_ERROR, WRITE_ERROR, Exit
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.regularfile import open_regular

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable, Iterator
    from pyqmail.lib.queue.envelope import BinaryInput, Recipients

MAGIC = b"pqmaildrop1"
TRAILER_MAX = 64
ENVELOPE_MAX = 64 << 20  # bytes of envelope pickup will read into memory
ORPHAN_AGE = queue.OSSIFIED  # unfinished drops older than this are removed
CLAIMED = "p"  # qmail-pickup renames maildrop/<name> to p<name> before queueing it (see take_back)
NAME_MAX = 200  # bytes of a name qmail-pickup takes as a drop's (drop() makes 32): p<name> and bad.<name> fit


def drop(home: str, pid: int, chunks: Iterable[bytes], envelope_stream: BinaryInput) -> str:
    """Write one message into home/maildrop and commit it; return the file's name. Exit when it is not
    committed, and then nothing of it is left for qmail-pickup (see take_back)."""
    directory = os.path.join(home, "maildrop")
    if not os.path.isdir(home):
        raise Exit(HOME)
    if not os.path.isdir(directory):
        raise Exit(QUEUE_DIR)
    name = os.urandom(16).hex()
    tmp = os.path.join(directory, "t" + name)
    os.umask(0o027)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    except OSError:
        raise Exit(QUEUE_PID)
    try:
        write_drop(fd, pid, chunks, envelope_stream)
        try:
            os.rename(tmp, os.path.join(directory, name))
        except OSError:
            raise Exit(QUEUE_DIR)
    except BaseException as e:
        remove(tmp)
        if isinstance(e, OSError):
            raise Exit(WRITE_ERROR)
        raise
    try:  # the rename made the drop visible to qmail-pickup; this makes it survive a power loss
        queue.fsync_dir(directory)
    except OSError:
        take_back(directory, name)
    return name


def write_drop(fd: int, pid: int, chunks: Iterable[bytes], envelope_stream: BinaryInput) -> None:
    """Write the message, its envelope and the trailer to fd, fsync it, and close fd (in every case)."""
    try:
        size = 0
        for chunk in chunks:
            write_all(fd, chunk)
            size += len(chunk)
        try:
            sender, recipients = envelope.read(envelope_stream)
        except envelope.EnvelopeError as e:
            raise Exit(e.code)
        data = envelope.encode(sender, recipients)
        if len(data) > ENVELOPE_MAX:  # qmail-pickup would refuse it: not accepted at all (exit 31)
            raise Exit(PERM_REFUSED)
        write_all(fd, data)
        write_all(fd, b"%s %d %d\n" % (MAGIC, pid, size))
        os.fsync(fd)
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise
    os.close(fd)  # a close that fails (EIO) has released fd all the same: it is never closed twice


def remove(name: str) -> None:
    """Remove a file if it is there; a leftover t<name> is swept by qmail-pickup after ORPHAN_AGE."""
    try:
        os.unlink(name)
    except OSError:
        pass


def take_back(directory: str, name: str) -> None:
    """maildrop/'s fsync failed after the rename: remove the drop and exit 53 (WRITE_ERROR), so that a retry cannot
    queue the message twice; if qmail-pickup claimed it first, return once pickup has queued it."""
    try:
        os.unlink(os.path.join(directory, name))
    except FileNotFoundError:
        if wait_for_pickup(directory, name):
            return
    except OSError:
        pass  # neither removed nor known to be durable: failure (a duplicate is possible, a loss is not)
    raise Exit(WRITE_ERROR)


def wait_for_pickup(directory: str, name: str) -> bool:
    """Wait until qmail-pickup is done with its claimed CLAIMED+name; True if it queued it (the queue's
    own fsyncs make it durable), False if it was set aside or cannot be watched. qmail-queue's 24-hour
    alarm bounds the wait."""
    import time
    claimed = os.path.join(directory, CLAIMED + name)
    pause = 0.005
    while True:
        try:
            os.lstat(claimed)
        except FileNotFoundError:
            break
        except OSError:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
    return not os.path.lexists(os.path.join(directory, "bad." + name))


def bad_name(name: str) -> str:
    """Return the name a drop is set aside under: bad.<name>, or for a name longer than NAME_MAX its first
    NAME_MAX bytes and a random tail (the whole would not fit in a directory entry)."""
    raw = os.fsencode(name)
    if len(raw) <= NAME_MAX:
        return "bad." + name
    return "bad." + os.fsdecode(raw[:NAME_MAX]) + "." + os.urandom(8).hex()


def shown(name: str) -> str:
    """Return a maildrop name for a log line: bytes outside 33..126, and backslash, as \\xNN (a user chooses the
    name: a line break in it must not start a line of its own)."""
    return "".join(chr(b) if 33 <= b <= 126 and b != 0x5C else "\\x%02x" % b for b in os.fsencode(name))


def parse_trailer(tail: bytes) -> tuple[int, int, int] | None:
    """Return (pid, envelope offset, trailer length) from a drop file's last bytes, or None."""
    start = tail.rfind(MAGIC + b" ")
    if start < 0 or not tail.endswith(b"\n"):
        return None
    fields = tail[start:-1].split(b" ")
    if len(fields) != 3 or not all(f.isdigit() and f.isascii() and len(f) <= 20 for f in fields[1:]):
        return None
    return int(fields[1]), int(fields[2]), len(tail) - start


def open_drop(name: str) -> tuple[int, os.stat_result] | None:
    """Open a finished drop file safely; return (fd, stat) or None for anything that is not one."""
    try:  # a hard link to someone else's file would be recorded under its owner's uid
        fd = open_regular(name, one_link=True)
        return fd, os.fstat(fd)
    except OSError:
        return None


def has_holes(fd: int, size: int) -> bool:
    """True if the drop file has a hole (drop() writes every byte, so only a hand-made sparse file has one,
    which would cost the queue disk its writer never paid for)."""
    try:
        return os.lseek(fd, 0, os.SEEK_HOLE) < size
    except OSError:  # ENXIO: empty; EINVAL: a file system without SEEK_HOLE reports none
        return False


def read_drop(fd: int, size: int) -> tuple[int, bytes, Recipients, int] | None:
    """Return (pid, sender, recipients, message offset end) of an open drop file, or None if malformed."""
    tail_len = min(size, TRAILER_MAX)
    tail = os.pread(fd, tail_len, size - tail_len)
    parsed = parse_trailer(tail)
    if parsed is None:
        return None
    pid, offset, trailer_len = parsed
    env_end = size - trailer_len
    if offset > env_end or env_end - offset > ENVELOPE_MAX:
        return None
    try:
        sender, recipients = envelope.decode(os.pread(fd, env_end - offset, offset))
    except envelope.EnvelopeError:
        return None
    return pid, sender, recipients, offset


def file_chunks(fd: int, end: int) -> Iterator[bytes]:
    """Yield bytes 0..end of fd."""
    pos = 0
    while pos < end:
        data = os.pread(fd, min(65536, end - pos), pos)
        if not data:
            raise Exit(READ_ERROR)
        pos += len(data)
        yield data
