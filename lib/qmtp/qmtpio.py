"""qmail-qmtpd's connection: responses held until the next read would wait, timeouts, the session deadline."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)
import select
import _signal  # not `signal`: it imports enum

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable
    from types import FrameType
    from typing import TypeVar

    T = TypeVar("T")

CHUNK = 65536
FLUSH_AT = 65536  # responses are written once this much is pending, even while input keeps coming


class DeadlineReached(Exception):
    """The session's hour is up."""


class ClientGone(Exception):
    """Writing to the client failed: it closed or reset the connection."""


class WriteTimeout(Exception):
    """The client read none of our responses for the timeout (not a TimeoutError: that is a silent client)."""


class Deadline:
    """qmail's alarm(3600), raised only while we wait for the client, so a queue write is never cut short."""

    def __init__(self, seconds: int) -> None:
        self.expired = False
        self.waiting = False
        _signal.signal(_signal.SIGALRM, self._alarm)
        _signal.alarm(seconds)

    def _alarm(self, signum: int, frame: FrameType | None) -> None:
        """Note the deadline; interrupt a wait for the client at once."""
        self.expired = True
        if self.waiting:
            raise DeadlineReached()

    def wait(self, action: Callable[..., T], *args: object) -> T:
        """Run action, which may block on the client, under the deadline."""
        if self.expired:
            raise DeadlineReached()
        self.waiting = True
        try:
            return action(*args)
        finally:
            self.waiting = False


class Output:
    """Responses waiting to be sent; written when the input runs dry (as qmail's flush before read)."""

    def __init__(self, fd: int, timeout: float, deadline: Deadline) -> None:
        self.fd = fd
        self.timeout_ms = int(timeout * 1000)
        self.deadline = deadline
        self.pending: list[bytes] = []
        self.size = 0
        self.blocking = posix.get_blocking(fd)
        self.poller = select.poll()
        self.poller.register(fd, select.POLLOUT)

    def add(self, data: bytes) -> None:
        """Queue a response; write out if much is pending."""
        self.pending.append(data)
        self.size += len(data)
        if self.size >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Write every pending response (WriteTimeout if the client stops reading, ClientGone if it left)."""
        if not self.pending:
            return
        data = memoryview(b"".join(self.pending))
        self.pending, self.size = [], 0
        while data:
            data = data[self.deadline.wait(self._write_some, data):]

    def _write_some(self, data: memoryview) -> int:
        """Write what the client will take now, without blocking; return how much."""
        if not self.poller.poll(self.timeout_ms):
            raise WriteTimeout("write timeout")
        if self.blocking:  # a blocking write of more than the free space would wait past every timeout
            posix.set_blocking(self.fd, False)
        try:
            return posix.write(self.fd, data[:FLUSH_AT])
        except BlockingIOError:
            return 0
        except OSError as e:
            raise ClientGone(str(e))
        finally:
            if self.blocking:
                posix.set_blocking(self.fd, True)


class Input:
    """The client's bytes; before waiting for more, pending responses go out (QMTP allows no delay then)."""

    def __init__(self, fd: int, timeout: float, output: Output, deadline: Deadline) -> None:
        self.fd = fd
        self.timeout_ms = int(timeout * 1000)
        self.output = output
        self.deadline = deadline
        self.buffer = b""
        self.pos = 0  # an offset, not slicing: a buffer full of small pipelined packages is read in tiny pieces
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def read(self, n: int) -> bytes:
        """Return up to n bytes (b"" at the end or on a reset); raise TimeoutError after a silence."""
        if self.pos >= len(self.buffer):
            self.output.flush()
            self.buffer, self.pos = self.deadline.wait(self._fill), 0
        data = self.buffer[self.pos:self.pos + n]
        self.pos += len(data)
        return data

    def _fill(self) -> bytes:
        """Wait for the client's next bytes."""
        if not self.poller.poll(self.timeout_ms):
            raise TimeoutError("read timeout")
        try:
            return posix.read(self.fd, CHUNK)
        except OSError:  # a reset connection is a lost connection, as EOF
            return b""
