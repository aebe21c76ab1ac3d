"""Unbuffered reading from raw descriptors, with read errors turned into qmail-queue's exit 54."""

import os

from pyqmail.lib.util.exits import Exit

CHUNK = 65536


def chunks(fd):
    """Yield what fd delivers until EOF; a read error ends the program with exit 54."""
    while True:
        try:
            data = os.read(fd, CHUNK)
        except OSError:
            raise Exit(54)
        if not data:
            return
        yield data


class FdStream:
    """A minimal binary stream over a descriptor, for envelope.read."""

    def __init__(self, fd):
        self.fd = fd

    def read(self, n):
        """Read up to n bytes; a read error ends the program with exit 54."""
        try:
            return os.read(self.fd, n)
        except OSError:
            raise Exit(54)
