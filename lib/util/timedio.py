"""Reading a network descriptor with a per-read timeout, buffered so netstring digits cost no syscalls."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)
import select

CHUNK = 65536


class TimedInput:
    """A binary stream over fd whose reads give up after `timeout` seconds of silence."""

    def __init__(self, fd: int, timeout: float) -> None:
        self.fd = fd
        self.timeout_ms = int(timeout * 1000)
        self.buffer = b""
        self.pos = 0  # what read() has returned of buffer: slicing off the rest would copy it every time
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def read(self, n: int) -> bytes:
        """Return up to n bytes (b"" at EOF or on a read error); raise TimeoutError on silence."""
        if self.pos >= len(self.buffer):
            if not self.poller.poll(self.timeout_ms):
                raise TimeoutError("read timeout")
            try:
                self.buffer = posix.read(self.fd, CHUNK)
            except OSError:  # a reset connection is a lost connection, as EOF
                return b""
            self.pos = 0
        data = self.buffer[self.pos:self.pos + n]
        self.pos += len(data)
        return data

    def buffered(self, n: int) -> bytes:
        """Return up to n of the bytes already read from fd and not yet returned; never reads."""
        return self.buffer[self.pos:self.pos + n]


def linger(fd_in: int = 0, fd_out: int = 1, seconds: float = 2.0, limit: int = 1 << 20) -> None:
    """After replying: send FIN, then drain what the client still sends (bounded), so that
    closing with unread input does not reset the connection and destroy the reply in flight."""
    import _socket
    try:
        sock = _socket.socket(fileno=fd_out)
    except (OSError, ValueError):
        sock = None  # a pipe: nothing to reset
    if sock is not None:
        try:
            sock.shutdown(_socket.SHUT_WR)
        except OSError:
            pass
        finally:
            sock.detach()
    import time
    deadline = time.monotonic() + seconds
    poller = select.poll()
    poller.register(fd_in, select.POLLIN)
    drained = 0
    while drained < limit:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(int(left * 1000) + 1):
            return
        try:
            data = posix.read(fd_in, CHUNK)
        except OSError:
            return
        if not data:
            return
        drained += len(data)
