"""Raw descriptors: the one write-all loop, and unbuffered reading with read errors turned into exit 54."""

from __future__ import annotations

import posix  # not os: the per-connection servers write through here (start-up cost, lib/config/control)

from pyqmail.lib.util.exits import READ_ERROR, Exit

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterator

CHUNK = 65536


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of data to fd (a short write goes on where it stopped)."""
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]


def nul_records(pending: bytearray, data: bytes, limit: int, head: int = 0) -> list[bytes]:
    """Add data to pending and return the records it completes, each ended by a NUL (not kept) and cut to
    limit bytes; the unfinished one stays in pending. The first head bytes of a record are taken as they
    are, even a NUL (a spawner's report starts with its delivery number)."""
    done = []
    i, end = 0, len(data)
    while i < end:
        if not pending:  # a whole record in data: sliced out at once (a spawner's reports, ten at a time)
            nul = data.find(b"\0", i + head)
            if nul >= 0:
                done.append(data[i:min(nul, i + max(limit, head))])
                i = nul + 1
                continue
        if len(pending) < head:
            take = min(head - len(pending), end - i)
            pending += data[i:i + take]
            i += take
            continue
        nul = data.find(b"\0", i)
        stop = end if nul < 0 else nul
        room = limit - len(pending)
        if room > 0:
            pending += data[i:min(stop, i + room)]
        if nul < 0:
            break
        done.append(bytes(pending))
        pending.clear()
        i = nul + 1
    return done


def chunks(fd: int) -> Iterator[bytes]:
    """Yield what fd delivers until EOF; a read error ends the program with exit 54."""
    while True:
        try:
            data = posix.read(fd, CHUNK)
        except OSError:
            raise Exit(READ_ERROR)
        if not data:
            return
        yield data


class FdStream:
    """A minimal binary stream over a descriptor, for envelope.read."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, n: int) -> bytes:
        """Read up to n bytes; a read error ends the program with exit 54."""
        try:
            return posix.read(self.fd, n)
        except OSError:
            raise Exit(READ_ERROR)
