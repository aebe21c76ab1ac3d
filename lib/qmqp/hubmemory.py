"""qmail-qmqpc's memory of hubs that failed (QMAILHOME/lock/qmqpto) and the order it tries hubs in with
control/qmqpspread (qmail-qmqpc(8)).

The file is 64 records of 32 bytes: 16 bytes of address (IPv4 as ::ffff:a.b.c.d), 2 bytes of port (big
endian), 1 byte of kind (1 refused, 2 timed out, 3 answered Z, 4 failed after connecting), 1 byte of count,
4 zero bytes, 8 bytes of time (seconds, little endian). A record only moves its hub to the end of the list
for FORGET seconds; it never removes a hub, so a corrupt, missing or tampered-with file costs at most a
worse order, never a message.
"""

from __future__ import annotations

import posix
from _socket import AF_INET6, inet_pton

from pyqmail.lib.util.regularfile import open_regular

MYPY = False
if MYPY:  # typing only: never imported at run time
    Server = tuple[str, int]

SIZE = 2048
RECORD = 32
FORGET = 120  # seconds a failed hub stays at the end of the list
SKEW = 60  # a record this far in the future is taken as valid; further is garbage
COUNT_MAX = 255
REFUSED, TIMED_OUT, ANSWERED_Z, BROKEN = 1, 2, 3, 4
LOCK_TRIES = 20  # times 1 ms: another qmail-qmqpc holding the lock longer only costs this note


def key(host: str, port: int) -> bytes | None:
    """Return the 18 bytes naming a hub in the file, or None for an address inet_pton does not take."""
    try:
        if ":" in host:
            address = inet_pton(AF_INET6, host)
        else:
            address = inet_pton(AF_INET6, "::ffff:" + host)
    except (OSError, ValueError):
        return None
    if not 0 < port < 65536:
        return None
    return address + port.to_bytes(2, "big")


def record(hub: bytes, kind: int, count: int, when: int) -> bytes:
    """Return the 32 bytes of one record."""
    return hub + bytes([kind, min(count, COUNT_MAX)]) + bytes(4) + (when & (2 ** 64 - 1)).to_bytes(8, "little")


def records(table: bytes) -> list[tuple[bytes, int, int, int]]:
    """Return (hub key, kind, count, when) for every whole record; kind 0 is a free slot."""
    out = []
    for pos in range(0, min(len(table), SIZE) - RECORD + 1, RECORD):
        rec = table[pos:pos + RECORD]
        out.append((bytes(rec[:18]), rec[18], rec[19], int.from_bytes(rec[24:32], "little")))
    return out


def failed(table: bytes, now: int) -> dict[bytes, int]:
    """Return {hub key: when} for the valid records of failures in the last FORGET seconds."""
    out: dict[bytes, int] = {}
    for hub, kind, count, when in records(table):
        if REFUSED <= kind <= BROKEN and count and now - FORGET < when <= now + SKEW:
            out[hub] = max(when, out.get(hub, when))
    return out


def order(servers: list[Server], start: int, recent: dict[bytes, int]) -> list[Server]:
    """Return servers rotated to begin at index start, with recently failed ones moved to the end, the one
    that failed longest ago first among them."""
    if not servers:
        return []
    start %= len(servers)
    rotated = servers[start:] + servers[:start]
    keys = [key(host, port) for host, port in rotated]
    good = [s for s, k in zip(rotated, keys) if k not in recent]
    bad = sorted(((recent[k], i) for i, k in enumerate(keys) if k in recent))
    return good + [rotated[i] for _, i in bad]


def update(table: bytes, hub: bytes, kind: int, now: int) -> tuple[int, bytes] | None:
    """Return (record index, new record) after an attempt (kind 0: success), or None when nothing changes."""
    recs = records(table)
    for i, (k, old_kind, count, _) in enumerate(recs):
        if k == hub and old_kind:
            if not kind:
                return i, bytes(RECORD)
            return i, record(hub, kind, count + 1, now)
    if not kind or not recs:
        return None
    free = [i for i, (_, old_kind, count, when) in enumerate(recs)
            if not old_kind or not count or not now - FORGET < when <= now + SKEW]
    i = free[0] if free else min(range(len(recs)), key=lambda n: recs[n][3])
    return i, record(hub, kind, 1, now)


class Memory:
    """The file: read without a lock (a torn record only misorders), changed under a non-blocking flock."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.table = b""

    def open(self, flags: int) -> int | None:
        """Return a descriptor for the file if it is a regular file (never following a symlink), else None."""
        try:
            return open_regular(self.filename, flags | posix.O_NONBLOCK | posix.O_CLOEXEC)
        except OSError:
            return None

    def recent(self, now: int) -> dict[bytes, int]:
        """Read the file; return its hubs that failed recently."""
        fd = self.open(posix.O_RDONLY)
        if fd is None:
            return {}
        try:
            self.table = posix.pread(fd, SIZE, 0)
        except OSError:
            self.table = b""
        finally:
            posix.close(fd)
        return failed(self.table, now)

    def note(self, host: str, port: int, kind: int, now: int) -> None:
        """Record an attempt's outcome (kind 0: success, written only if the hub had a record)."""
        hub = key(host, port)
        if hub is None or (not kind and hub not in {k for k, old, _, _ in records(self.table) if old}):
            return
        fd = self.open(posix.O_RDWR)
        if fd is None:
            return
        try:
            if not lock(fd):
                return
            table = posix.pread(fd, SIZE, 0)
            if len(table) < SIZE:
                table += bytes(SIZE - len(table))  # a short or empty file is grown to its size
                posix.pwrite(fd, table, 0)
            change = update(table, hub, kind, now)
            if change is not None:
                posix.pwrite(fd, change[1], change[0] * RECORD)
        except OSError:
            pass
        finally:
            posix.close(fd)


def lock(fd: int) -> bool:
    """Take an exclusive flock without waiting more than LOCK_TRIES ms; True if taken."""
    import fcntl
    import time
    for _ in range(LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.001)
        except OSError:
            return False
    return False
