"""POP3 command lines as qmail's commands() reads them: one line up to LF, a CR before it dropped, the
verb up to the first space (or NUL), the argument after the spaces that follow it; bounded and timed."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)
import select
import signal

from pyqmail.lib.util.fdio import write_all

MYPY = False
if MYPY:  # typing only
    from collections.abc import Callable

TIMEOUT = 1200  # seconds: qmail-popup's and qmail-pop3d's read and write timeouts
LINE_MAX = 1024  # bytes of one command line, its LF included: qmail-smtpd's and qmail-popup's buffer size


class LineTooLong(Exception):
    """A command line longer than LINE_MAX bytes."""


class Closed(Exception):
    """The client went away (EOF or a read error), or was silent for TIMEOUT seconds."""


def parse(line: bytes) -> tuple[bytes, bytes]:
    """Return (verb in lower case, argument) of one command line without its LF, as qmail's commands():
    the line ends at a NUL, a CR before the LF is dropped, the verb ends at the first space and the
    argument starts after the spaces that follow it (trailing spaces stay in it)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    space = line.find(b" ")
    if space < 0:
        return line.lower(), b""
    return line[:space].lower(), line[space:].lstrip(b" ")


class LineReader:
    """Command lines from fd, at most LINE_MAX bytes each; reads nothing past the line it returns when
    exact (one byte per read: what follows a line belongs to the next program, as after PASS)."""

    def __init__(self, fd: int, timeout: float = TIMEOUT, exact: bool = False) -> None:
        self.fd = fd
        self.recv: Callable[[int], bytes] | None = None  # set after STLS: the TLS socket's (timed) recv
        self.timeout_ms = int(timeout * 1000)
        self.exact = exact
        self.pending = b""
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def _read(self) -> bytes:
        if self.recv is not None:
            try:
                data = self.recv(4096)
            except OSError:  # ssl.SSLError, socket timeouts
                raise Closed("read error")
            if not data:
                raise Closed("end of input")
            return data
        if not self.poller.poll(self.timeout_ms):
            raise Closed("timeout")
        try:
            data = posix.read(self.fd, 1 if self.exact else 4096)
        except OSError:
            raise Closed("read error")
        if not data:
            raise Closed("end of input")
        return data

    def line(self) -> bytes:
        """Return the next line without its LF; raise LineTooLong or Closed."""
        while True:
            lf = self.pending.find(b"\n")
            if lf >= 0:
                if lf + 1 > LINE_MAX:
                    raise LineTooLong()
                line, self.pending = self.pending[:lf], self.pending[lf + 1:]
                return line
            if len(self.pending) >= LINE_MAX:
                raise LineTooLong()
            self.pending += self._read()


class _WriteTimeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _WriteTimeout()


class Output:
    """Replies to fd, buffered until flush(); a write that takes TIMEOUT seconds raises Closed."""

    def __init__(self, fd: int = 1, timeout: int = TIMEOUT, size: int = 65536) -> None:
        self.fd = fd
        self.timeout = timeout
        self.size = size
        self.buffer = bytearray()
        self.send: Callable[[bytes], object] | None = None  # set after STLS: the TLS socket's (timed) sendall
        signal.signal(signal.SIGALRM, _alarm)

    def put(self, data: bytes) -> None:
        """Add data; write the buffer out when it grows past its size."""
        self.buffer += data
        if len(self.buffer) >= self.size:
            self.flush()

    def flush(self) -> None:
        """Write everything buffered."""
        if not self.buffer:
            return
        if self.send is not None:
            try:
                self.send(bytes(self.buffer))
            except OSError:
                raise Closed("write error")
            del self.buffer[:]
            return
        signal.alarm(self.timeout)
        try:
            write_all(self.fd, self.buffer)
        except (OSError, _WriteTimeout):
            raise Closed("write error")
        finally:
            signal.alarm(0)
        del self.buffer[:]

    def reply(self, data: bytes) -> None:
        """Put data and flush."""
        self.put(data)
        self.flush()

    def err(self, text: bytes) -> None:
        """`-ERR text`, flushed."""
        self.reply(b"-ERR " + text + b"\r\n")
