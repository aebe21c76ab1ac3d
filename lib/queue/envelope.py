"""qmail-queue envelopes (F/T records) and queue envelope files (u/p/F/T records): qmail-queue(8)."""

from __future__ import annotations

from pyqmail.lib.util.exits import ADDR_TOO_LONG, ENVELOPE_FORMAT, READ_ERROR

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable, Iterator
    from typing import Protocol

    class BinaryInput(Protocol):
        """What read() reads an envelope from: an object with read(n) (and perhaps read1(n))."""

        def read(self, n: int, /) -> bytes: ...

ADDR_MAX = 1003  # qmail-queue's ADDR: an address plus its NUL, the type letter not counted


class EnvelopeError(ValueError):
    """The envelope is malformed; `code` is the qmail-queue exit code to use."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Recipients:
    """Recipient addresses held as qmail-queue's T records in one buffer (b"Taddr\\0" each), not as a list:
    a list costs some 50 bytes per address more, and a reused worker keeps the small blocks it freed."""

    __slots__ = ("records", "count")  # defining __eq__ leaves it unhashable, as a list is

    def __init__(self, addresses: Iterable[bytes] = (), records: bytes | bytearray = b"", count: int = 0) -> None:
        self.records = records
        self.count = count
        for address in addresses:
            self.append(address)

    def append(self, address: bytes) -> None:
        """Add one address; a NUL would end its record early, so it is refused."""
        if b"\0" in address:
            raise ValueError("an address with a NUL cannot be held as a T record")
        if not isinstance(self.records, bytearray):
            self.records = bytearray(self.records)
        self.records += b"T%s\0" % address
        self.count += 1

    def __len__(self) -> int:
        """Return the number of addresses."""
        return self.count

    def __iter__(self) -> Iterator[bytes]:
        """Yield each address, without its T and NUL."""
        records, pos = self.records, 0
        for _ in range(self.count):
            end = records.find(b"\0", pos)
            yield bytes(records[pos + 1:end])
            pos = end + 1

    def __eq__(self, other: object) -> bool:
        """Equal to Recipients with the same records, or to a list or tuple of the same addresses."""
        if isinstance(other, Recipients):
            return self.records == other.records
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        """Show the addresses."""
        return "Recipients(%r)" % list(self)


def encode(sender: bytes, recipients: Iterable[bytes]) -> bytes:
    """Return the qmail-queue envelope for sender and recipients."""
    if isinstance(recipients, Recipients):
        return b"F%s\0%s\0" % (sender, recipients.records)
    parts = [b"F" + sender + b"\0"]
    parts += [b"T" + r + b"\0" for r in recipients]
    parts.append(b"\0")
    return b"".join(parts)


def runs_fit(data: bytes | bytearray, start: int, end: int, limit: int) -> bool:
    """True if no run of non-NUL bytes in data[start:end] is longer than limit, without a loop per record."""
    # a run longer than limit covers a whole block of `step` bytes counted from start: only a block
    # without a NUL needs its run measured, so a megabyte of short records costs some 2,000 finds
    step = (limit + 1) // 2
    for block in range(start, end - step + 1, step):
        if data.find(b"\0", block, block + step) < 0:
            left = data.rfind(b"\0", start, block) + 1 or start
            right = data.find(b"\0", block, end)
            if (end if right < 0 else right) - left > limit:
                return False
    return True


def decode(data: bytes) -> tuple[bytes, Recipients]:
    """Parse a complete qmail-queue envelope; return (sender, Recipients)."""
    if not data.endswith(b"\0\0") and data != b"\0":
        raise EnvelopeError(READ_ERROR, "envelope ended before its final NUL")
    if data[:1] != b"F":
        raise EnvelopeError(ENVELOPE_FORMAT, "envelope does not start with an F record")
    end = len(data) - 1  # the T records end here, before the empty record
    if not runs_fit(data, 0, end, ADDR_MAX):
        raise EnvelopeError(ADDR_TOO_LONG, "envelope address too long")
    start = data.find(b"\0") + 1
    count = data.count(b"\0", start, end)
    if count and (data[start:start + 1] != b"T" or data.count(b"\0T", start, end) != count - 1):
        raise EnvelopeError(ENVELOPE_FORMAT, "envelope record is not a T record")
    return data[1:start - 1], Recipients(records=data[start:end], count=count)


def read(stream: BinaryInput, limit: int = ADDR_MAX) -> tuple[bytes, Recipients]:
    """Read an envelope record by record from a binary stream; return (sender, Recipients)."""
    pending = bytearray()  # bytes read and not yet taken as records
    pos = 0  # where the record being read starts in pending
    sender: bytes | None = None
    recipients = Recipients(records=bytearray())
    while True:
        nul = pending.find(b"\0", pos)
        while nul < 0:
            if len(pending) > pos and pending[pos] != (b"T" if sender is not None else b"F")[0]:
                # qmail-queue checks the type byte first: a bad record is 91 even if it never ends
                raise EnvelopeError(ENVELOPE_FORMAT, "envelope record has the wrong type")
            if len(pending) - pos > limit:
                raise EnvelopeError(ADDR_TOO_LONG, "envelope address too long")
            chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
            if not chunk:
                raise EnvelopeError(READ_ERROR, "envelope ended before its final NUL")
            del pending[:pos]
            pending += chunk
            nul = pending.find(b"\0", len(pending) - len(chunk))
            pos = 0
        if nul - pos > limit:
            raise EnvelopeError(ADDR_TOO_LONG, "envelope address too long")
        if nul == pos:
            break
        if pending[pos] != (b"T" if sender is not None else b"F")[0]:
            raise EnvelopeError(ENVELOPE_FORMAT, "envelope record has the wrong type")
        if sender is None:
            sender = bytes(pending[pos + 1:nul])
        else:
            recipients.records += pending[pos:nul + 1]
            recipients.count += 1
        pos = nul + 1
    if sender is None:
        raise EnvelopeError(ENVELOPE_FORMAT, "envelope has no F record")
    return sender, recipients


def todo_parts(uid: int, pid: int, sender: bytes, recipients: Iterable[bytes]) -> list[bytes | bytearray]:
    """Return intd/N's bytes in pieces to write in turn; Recipients' buffer is one of them, not copied."""
    head = b"u%d\0p%d\0F%s\0" % (uid, pid, sender)
    if isinstance(recipients, Recipients):
        return [head, recipients.records]
    return [head, b"".join(b"T%s\0" % r for r in recipients)]

