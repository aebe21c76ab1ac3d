"""Reading a network descriptor with a per-read timeout, buffered so netstring digits cost no syscalls."""

import os
import select

CHUNK = 65536


class TimedInput:
    """A binary stream over fd whose reads give up after `timeout` seconds of silence."""

    def __init__(self, fd, timeout):
        self.fd = fd
        self.timeout_ms = int(timeout * 1000)
        self.buffer = b""
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def read(self, n):
        """Return up to n bytes (b"" at EOF or on a read error); raise TimeoutError on silence."""
        if not self.buffer:
            if not self.poller.poll(self.timeout_ms):
                raise TimeoutError("read timeout")
            try:
                self.buffer = os.read(self.fd, CHUNK)
            except OSError:  # a reset connection is a lost connection, as EOF
                return b""
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data
