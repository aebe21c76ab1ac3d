"""Reading a message as header fields then body lines (qmail's headerbody), with bounded memory."""

from __future__ import annotations

import os

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable, Iterator

FIELD_MAX = 1 << 20  # bytes kept of one header field; the rest of an oversized field is dropped


def is_field_start(line: bytes) -> bool:
    """Return True if line starts a header field: a name of printable non-blank bytes, then `:`."""
    colon = line.find(b":")
    if colon <= 0:
        return False
    name = line[:colon].rstrip(b" \t")
    return bool(name) and all(33 <= c <= 126 for c in name)


def field_name(field: bytes) -> bytes:
    """Return the field's name, lower-cased, without trailing blanks."""
    return field.split(b":", 1)[0].rstrip(b" \t").lower()


def field_value_start(field: bytes) -> int:
    """Return the offset of the field's value: after the colon and any spaces or tabs (hfield_skipname)."""
    i = field.find(b":")
    i = len(field) if i < 0 else i + 1
    while i < len(field) and field[i:i + 1] in (b" ", b"\t"):
        i += 1
    return i


def lines(fd: int, limit: int = FIELD_MAX) -> Iterator[bytes]:
    """Yield the lines of fd (each with its `\\n` if it had one), each cut to its first limit bytes."""
    buf = b""
    dropping = False  # the line being read was already cut: skip to its end
    while True:
        data = os.read(fd, 65536)
        if not data:
            if buf and not dropping:
                yield buf[:limit]
            return
        buf = buf + data if buf else data
        start = 0  # each line is sliced once: no copying the rest of the buffer per line
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if not dropping:
                yield buf[start:min(nl + 1, start + limit)]
            dropping, start = False, nl + 1
        buf = buf[start:]
        if len(buf) > limit:
            if not dropping:
                yield buf[:limit]
            dropping, buf = True, b""


def split(line_source: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    """Yield ("field", bytes) for each header field, then ("body", line) for each body line."""
    field: bytearray | None = None  # grown in place: joining a long folded field never copies it again
    in_header = True
    for line in line_source:
        if in_header:
            if field is not None and line[:1] in (b" ", b"\t"):
                if len(field) < FIELD_MAX:
                    field += line
                continue
            if field is not None:
                yield "field", bytes(field)
                field = None
            if is_field_start(line):
                field = bytearray(line)
                continue
            in_header = False
            if line in (b"\n", b"\r\n"):
                continue
        yield "body", line
    if field is not None:
        yield "field", bytes(field)
