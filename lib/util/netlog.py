"""One-line logs for network daemons: fd 2, or syslog when fd 2 is the client's own socket."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)

MYPY = False
if MYPY:  # typing only: never imported at run time
    from types import ModuleType

_PRINTABLE = bytes(c if 32 <= c < 127 else ord("_") for c in range(256))


def _same_file(a: int, b: int) -> bool:
    """Return True when descriptors a and b are the same open file (inetd/systemd may pass the socket as fd 2)."""
    try:
        sa, sb = posix.fstat(a), posix.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _fd_open(fd: int) -> bool:
    """Return True when fd is an open descriptor."""
    try:
        posix.fstat(fd)
        return True
    except OSError:
        return False


class Log:
    """Writes `program: pid N: event` lines; never to the client."""

    def __init__(self, program: str) -> None:
        self.program = program
        self.prefix = ("%s: pid %d: " % (program, posix.getpid())).encode()
        self.syslog: ModuleType | None = None
        if not _fd_open(2) or _same_file(2, 0) or _same_file(2, 1):
            import syslog
            syslog.openlog(program, syslog.LOG_PID, syslog.LOG_MAIL)
            self.syslog = syslog
            self._silence_fd2()

    @staticmethod
    def _silence_fd2() -> None:
        """Point fd 2 at /dev/null so nothing (ours, Python's, qmail-queue's) reaches the client."""
        fd = posix.open("/dev/null", posix.O_WRONLY)
        if fd != 2:
            posix.dup2(fd, 2)
            posix.close(fd)

    def __call__(self, text: str) -> None:
        """Log one event line: non-printable bytes become `_`, length is bounded."""
        line = text.encode("latin-1", "replace")[:900].translate(_PRINTABLE)
        if self.syslog is not None:
            self.syslog.syslog(self.syslog.LOG_INFO, line.decode("latin-1"))
            return
        try:
            posix.write(2, self.prefix + line + b"\n")
        except OSError:
            pass
