"""The privilege boundary: users who do not own the queue drop mail into QMAILHOME/maildrop.

A drop file is the message, then its qmail-queue envelope, then one trailer line
`pqmaildrop1 <pid> <envelope offset>\n`.  It is written as maildrop/t<random>,
fsynced, and renamed to maildrop/<random>; qmail-pickup, running as the queue's
owner and woken by inotify, queues it with the file owner's uid in the `u` record.
"""

import os

from pyqmail.lib import envelope, queue
from pyqmail.lib.exits import Exit

MAGIC = b"pqmaildrop1"
TRAILER_MAX = 64
ENVELOPE_MAX = 64 << 20  # bytes of envelope pickup will read into memory
ORPHAN_AGE = 129600  # unfinished drops older than qmail's OSSIFIED are removed


def drop(home, pid, chunks, envelope_stream):
    """Write one message into home/maildrop and commit it; return the file's name."""
    directory = os.path.join(home, "maildrop")
    if not os.path.isdir(home):
        raise Exit(61)
    if not os.path.isdir(directory):
        raise Exit(62)
    name = os.urandom(16).hex()
    tmp = os.path.join(directory, "t" + name)
    os.umask(0o027)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    except OSError:
        raise Exit(63)
    try:
        size = 0
        for chunk in chunks:
            queue.write_all(fd, chunk)
            size += len(chunk)
        try:
            sender, recipients = envelope.read(envelope_stream)
        except envelope.EnvelopeError as e:
            raise Exit(e.code)
        queue.write_all(fd, envelope.encode(sender, recipients))
        queue.write_all(fd, b"%s %d %d\n" % (MAGIC, pid, size))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, os.path.join(directory, name))
        queue.fsync_dir(directory)
    except BaseException as e:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise Exit(53)
        raise
    return name


def parse_trailer(tail):
    """Return (pid, envelope offset, trailer length) from a drop file's last bytes, or None."""
    start = tail.rfind(MAGIC + b" ")
    if start < 0 or not tail.endswith(b"\n"):
        return None
    fields = tail[start:-1].split(b" ")
    if len(fields) != 3 or not all(f.isdigit() and f.isascii() and len(f) <= 20 for f in fields[1:]):
        return None
    return int(fields[1]), int(fields[2]), len(tail) - start


def open_drop(name):
    """Open a finished drop file safely; return (fd, stat) or None for anything that is not one."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    st = os.fstat(fd)
    # a hard link to someone else's file would be recorded under its owner's uid
    if not (st.st_mode & 0o170000 == 0o100000 and st.st_nlink == 1):
        os.close(fd)
        return None
    return fd, st


def read_drop(fd, size):
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


def file_chunks(fd, end):
    """Yield bytes 0..end of fd."""
    pos = 0
    while pos < end:
        data = os.pread(fd, min(65536, end - pos), pos)
        if not data:
            raise Exit(54)
        pos += len(data)
        yield data
