"""Opening a name that must be a regular file: never through a symbolic link, never waiting on a FIFO, and where
a privileged step writes or trusts the file's owner, never a file with other hard links. The one home of that
check, for root's and the daemons' reads and writes of files others can plant (queue files, lock/tcpto, drops,
MAILTMP, messages in a Maildir); and the one way to make a temporary file where a link may have been planted."""

from __future__ import annotations

import errno
import posix  # not os: qmail-pop3d and the QMQP hub memory open through here (start-up cost)

S_IFMT = 0o170000
S_IFREG = 0o100000


class NotRegularFile(OSError):
    """open_regular's refusal: str() is a whole sentence naming the file and what it is instead."""

    def __init__(self, code: int, why: str, name: str | bytes) -> None:
        shown = name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else str(name)
        super().__init__(code, why, name)
        self.sentence = "%s %s" % (shown, why)

    def __str__(self) -> str:
        """The sentence, e.g. `local/3/3 is not a regular file`."""
        return self.sentence


def is_regular(mode: int) -> bool:
    """True for a regular file's st_mode (stat.S_ISREG, without importing stat)."""
    return mode & S_IFMT == S_IFREG


def open_regular(name: str | bytes, flags: int = posix.O_RDONLY, mode: int = 0o600, *, dir_fd: int | None = None,
                 follow: bool = False, one_link: bool = False) -> int:
    """Open name with flags (never O_TRUNC: truncate after this check) and return a blocking descriptor;
    NotRegularFile if name is a symbolic link (unless follow), not a regular file, or (one_link) a file with
    more than one link; other OSErrors as open(2) gives them."""
    if flags & posix.O_TRUNC:
        raise ValueError("open_regular: O_TRUNC would truncate before the check")
    extra = posix.O_NONBLOCK | posix.O_NOCTTY | (0 if follow else posix.O_NOFOLLOW)
    try:
        fd = posix.open(name, flags | extra, mode, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise NotRegularFile(errno.ELOOP, "is a symbolic link", name) from None
        if e.errno == errno.ENXIO:  # a FIFO opened to write with no reader, a socket, a device without its hardware
            raise NotRegularFile(errno.ENXIO, "is not a regular file", name) from None
        raise
    try:
        st = posix.fstat(fd)
        if not is_regular(st.st_mode):
            raise NotRegularFile(errno.EINVAL, "is not a regular file", name)
        if one_link and st.st_nlink != 1:
            raise NotRegularFile(errno.EMLINK, "has more than one link", name)
        if not flags & posix.O_NONBLOCK:
            posix.set_blocking(fd, True)
    except OSError:
        posix.close(fd)
        raise
    return fd


def create_afresh(name: str | bytes, mode: int = 0o600) -> int:
    """Remove whatever name is (a link planted there included: never written through) and create a new regular
    file there (O_EXCL, O_NOFOLLOW), open for writing; OSError on failure."""
    try:
        posix.unlink(name)
    except FileNotFoundError:
        pass
    return posix.open(name, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW, mode)
