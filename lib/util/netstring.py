"""Netstrings (cr.yp.to/proto/netstrings.txt): strict encoding and bounded decoding."""

from __future__ import annotations

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable
    from typing import Protocol

    class Stream(Protocol):
        """What Reader reads from: a binary stream's read(n)."""

        def read(self, n: int, /) -> bytes: ...

MAX_DIGITS = 10


class NetstringError(ValueError):
    """A netstring broke the format: `kind` is "format" or "length"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def encode(payload: bytes) -> bytes:
    """Return payload as a netstring."""
    return b"%d:%s," % (len(payload), payload)


def parse_length(digits: bytes, limit: int) -> int:
    """Return the length a netstring's length field states, refusing anything but plain digits."""
    if not digits or len(digits) > MAX_DIGITS or not digits.isdigit() or not digits.isascii():
        raise NetstringError("format", "netstring length is not plain digits")
    if len(digits) > 1 and digits[:1] == b"0":
        raise NetstringError("format", "netstring length has a leading zero")
    length = int(digits)
    if length > limit:
        raise NetstringError("length", "netstring length exceeds storage limit")
    return length


def decode(data: bytes, limit: int = 1 << 30) -> tuple[bytes, bytes]:
    """Split one netstring off the front of data; return (payload, rest)."""
    colon = data.find(b":", 0, MAX_DIGITS + 1)
    if colon < 0:
        raise NetstringError("format", "netstring has no colon")
    length = parse_length(data[:colon], limit)
    end = colon + 1 + length
    if len(data) <= end:
        raise NetstringError("format", "netstring is truncated")
    if data[end:end + 1] != b",":
        raise NetstringError("format", "netstring has no comma")
    return data[colon + 1:end], data[end + 1:]


class Reader:
    """Reads netstrings from a binary stream, charging every byte against an optional budget."""

    def __init__(self, stream: Stream, budget: int | None = None) -> None:
        self.stream = stream
        self.budget = budget

    def _take(self, n: int) -> bytes:
        """Read exactly n bytes or raise EOFError; over-running the budget is a format error."""
        if self.budget is not None:
            if n > self.budget:
                raise NetstringError("format", "netstring overruns its enclosing netstring")
            self.budget -= n
        chunks = []
        while n > 0:
            chunk = self.stream.read(min(n, 65536))
            if not chunk:
                raise EOFError("connection closed")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def read_length(self, limit: int) -> int:
        """Read a length field up to and including its colon."""
        buffered = getattr(self.stream, "buffered", None)
        if buffered is not None:  # the whole field already in memory: one read instead of one per byte
            head = buffered(MAX_DIGITS + 1)
            colon = head.find(b":")
            if 0 < colon <= (MAX_DIGITS if self.budget is None else min(MAX_DIGITS, self.budget - 1)):
                try:
                    length = parse_length(head[:colon], limit)
                except NetstringError:
                    pass  # reported below, at the byte that breaks the format
                else:
                    self._take(colon + 1)
                    return length
        # byte by byte: the first byte that breaks the format, or the budget, is the one reported
        digits = b""
        while True:
            c = self._take(1)
            if c == b":":
                return parse_length(digits, limit)
            if not (b"0" <= c <= b"9") or len(digits) >= MAX_DIGITS:
                raise NetstringError("format", "netstring length is not plain digits")
            digits += c
            parse_length(digits, limit)

    def read_comma(self) -> None:
        """Read the comma that ends a netstring."""
        if self._take(1) != b",":
            raise NetstringError("format", "netstring has no comma")

    def read(self, limit: int) -> bytes:
        """Read one whole netstring whose payload may not exceed limit bytes."""
        return self.read_payload(self.read_length(limit))

    def read_payload(self, length: int) -> bytes:
        """Read the rest of a netstring whose length field has been read: its payload and comma."""
        payload = self._take(length)
        self.read_comma()
        return payload

    def skip(self, length: int, sink: Callable[[bytes], object] | None = None) -> None:
        """Consume length payload bytes, handing them to sink in chunks if given."""
        while length > 0:
            chunk = self._take(min(length, 65536))
            if sink is not None:
                sink(chunk)
            length -= len(chunk)
