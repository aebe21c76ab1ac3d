"""qmail's TCP timeout table queue/lock/tcpto: 64 records of 16 bytes (see qmail-tcpto(8), qmail-remote(8))."""

from __future__ import annotations

import os
import time

SIZE = 1024
RECORD = 16
COUNT_MAX = 10
RETRY_GAP = 120  # a second timeout within this many seconds of the last does not count


def path() -> str:
    """Return the table's path in the qmail tree."""
    from pyqmail.lib.config import control
    return control.path("queue", "lock", "tcpto")


def open_table(filename: str, flags: int) -> int:
    """Open the table with flags, never through a symbolic link, nor a file with other links or not regular
    (regularfile.NotRegularFile): whoever can write queue/lock must not make qmail-remote, qmail-rspawn or root's
    qmail-tcpok write elsewhere."""
    from pyqmail.lib.util.regularfile import open_regular
    return open_regular(filename, flags, one_link=True)


def ip_bytes(ip: str) -> bytes | None:
    """Return the four bytes of a dotted-quad IPv4 address, or None for anything else (IPv6 is not recorded)."""
    parts = ip.split(".")
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() and int(p) < 256 for p in parts):
        return None
    return bytes(int(p) for p in parts)


def records(table: bytes) -> list[tuple[bytes, int, int]]:
    """Return (ip bytes, count, when) for every whole record of the table's bytes."""
    out = []
    for pos in range(0, len(table) - RECORD + 1, RECORD):
        rec = table[pos:pos + RECORD]
        out.append((bytes(rec[:4]), rec[4], int.from_bytes(rec[8:12], "little")))
    return out


def report_lines(table: bytes, now: int) -> bytes:
    """Return qmail-tcpto's output for a table: one line per record with a count."""
    lines = []
    for ip, count, when in records(table):
        if count >= 1:
            lines.append(b"%d.%d.%d.%d timed out %d seconds ago; # recent timeouts: %d\n"
                         % (*ip, (now - when) & 0xFFFFFFFFFFFFFFFF, count))
    return b"".join(lines)


def should_skip(table: bytes, ip4: bytes, now: int, pid: int) -> tuple[bool, bool]:
    """Return (skip, found): skip an address with ≥2 recent timeouts for (60 + pid%32) * 64 seconds."""
    for ip, count, when in records(table):
        if ip == ip4:
            return count >= 2 and now - when < (60 + (pid & 31)) << 6, True
    return False, False


def record(ip4: bytes, count: int, when: int) -> bytes:
    """Return the 16 bytes of one record."""
    return ip4 + bytes([count, 0, 0, 0]) + (when & 0xFFFFFFFF).to_bytes(4, "little") + bytes(4)


def update(table: bytes, ip4: bytes, timed_out: bool, now: int) -> tuple[int, bytes] | None:
    """Return (record index, new record bytes) after an attempt on ip4, or None when nothing changes."""
    recs = records(table)
    for i, (ip, count, when) in enumerate(recs):
        if ip == ip4:
            if not timed_out:
                rec = bytearray(table[i * RECORD:(i + 1) * RECORD])
                rec[4] = 0
                return i, bytes(rec)
            if count and now < RETRY_GAP + when:
                return None
            return i, record(ip4, min(count + 1, COUNT_MAX), now)
    if not timed_out or not recs:
        return None
    free = [i for i, (_, count, _) in enumerate(recs) if not count]
    if free:
        i = free[0]
    else:
        i = min(range(len(recs)), key=lambda k: recs[k][2] + (recs[k][1] << 10))
    return i, record(ip4, 1, now)


class Table:
    """The table on disk, read and changed under an exclusive flock as qmail does."""

    def __init__(self, filename: str | None = None) -> None:
        self.filename = filename or path()
        self.found = False

    def read_locked(self) -> tuple[int | None, bytes]:
        """Return (fd locked for writing, table bytes) or (None, b"") when the table can't be used."""
        import fcntl
        try:
            fd = open_table(self.filename, os.O_RDWR)
        except OSError:
            return None, b""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            table = os.pread(fd, SIZE, 0)
        except OSError:
            os.close(fd)
            return None, b""
        return fd, table

    def skip(self, ip: str) -> bool:
        """True if ip timed out often and recently enough to be skipped now."""
        ip4 = ip_bytes(ip)
        if ip4 is None:
            return False
        fd, table = self.read_locked()
        if fd is None:
            return False
        os.close(fd)
        skip, self.found = should_skip(table, ip4, int(time.time()), os.getpid())
        return skip

    def note(self, ip: str, timed_out: bool) -> None:
        """Record the result of a connection attempt to ip (after skip() looked it up)."""
        ip4 = ip_bytes(ip)
        if ip4 is None or (not timed_out and not self.found):
            return
        fd, table = self.read_locked()
        if fd is None:
            return
        try:
            change = update(table, ip4, timed_out, int(time.time()))
            if change is not None:
                os.pwrite(fd, change[1], change[0] * RECORD)
        except OSError:
            pass
        finally:
            os.close(fd)
