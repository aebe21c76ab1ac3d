"""One-line logs for network daemons: fd 2, or syslog when fd 2 is the client's own socket."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)

from pyqmail.lib.util.procid import getpid

MYPY = False
if MYPY:  # typing only: never imported at run time
    from types import ModuleType

_PRINTABLE = bytes(c if 32 <= c < 127 else ord("_") for c in range(256))


def _identity(fd: int) -> tuple[int, int] | None:
    """Return (st_dev, st_ino) of the file open on fd, or None if fd is not open."""
    try:
        st = posix.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _fd2_unsafe() -> bool:
    """Return True when fd 2 is closed or is the file of fd 0 or fd 1 (inetd/systemd may pass the socket as
    fd 2): one fstat(2) of each descriptor."""
    log = _identity(2)
    return log is None or log == _identity(0) or log == _identity(1)


class Log:
    """Writes `program: pid N: event` lines; never to the client."""

    def __init__(self, program: str) -> None:
        self.program = program
        self.prefix = ("%s: pid %d: " % (program, getpid())).encode()
        self.syslog: ModuleType | None = None
        if _fd2_unsafe():
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
