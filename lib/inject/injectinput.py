"""qmail-inject's view of its input (qmail's headerbody): header fields, then the body streamed as it is.

Differences from lib/rfc822/headerbody.split, on purpose (they are qmail-inject's): a `From ` line in the header
becomes an `MBOX-Line: From ...` field, the first line that is not a field ends the header and a blank
line is put before it, and a last line without a newline gets one.
"""

from __future__ import annotations

import os

from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.rfc822.headerbody import is_field_start

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Iterator

HEADER_MAX = 16 << 20  # bytes of header kept in memory; a longer header is refused (exit 100)
CHUNK = 65536


class Input:
    """Lines from a file descriptor, then the rest of it in chunks."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.header_bytes = 0

    def _read(self) -> bool:
        """Read one more chunk onto what is left of the buffer; False at end of input. A read error is Exit 111."""
        if self.eof:
            return False
        try:
            data = os.read(self.fd, CHUNK)
        except OSError:
            raise Exit(TEMP_FAILURE, "fatal: read error")
        if not data:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + data
        self.pos = 0
        return True

    def line(self) -> bytes | None:
        """Return the next line with its newline (one is added to a last partial line), or None at the end."""
        while True:
            nl = self.buf.find(b"\n", self.pos)
            if nl >= 0:
                line = self.buf[self.pos:nl + 1]
                self.pos = nl + 1
                break
            if self.header_bytes + len(self.buf) - self.pos > HEADER_MAX:
                raise Exit(PERM_FAILURE, "fatal: message header longer than %d bytes" % HEADER_MAX)
            if not self._read():
                if self.pos >= len(self.buf):
                    return None
                line = self.buf[self.pos:] + b"\n"
                self.pos = len(self.buf)
                break
        self.header_bytes += len(line)
        return line

    def chunks(self) -> Iterator[bytes]:
        """Yield the rest of the input, ending it with a newline if its last line had none."""
        last = b"\n"
        while self.pos < len(self.buf) or self._read():
            data = self.buf[self.pos:]
            self.buf, self.pos = b"", 0
            last = data[-1:]
            yield data
        if last != b"\n":
            yield b"\n"


def header(source: Input, on_field: Callable[[bytes], object]) -> bytes:
    """Feed each header field to on_field; return the bytes that start the body (b"" if there is none)."""
    field: bytearray | None = None  # one buffer, not a list of lines: millions of continuation lines stay small
    while True:
        line = source.line()
        if line is None:
            if field is not None:
                on_field(bytes(field))
            return b""
        if field is not None:
            if line[:1] in (b" ", b"\t"):
                field += line
                continue
            on_field(bytes(field))
            field = None
        if line == b"\n":
            return line
        if line.startswith(b"From "):
            field = bytearray(b"MBOX-Line: " + line)
        elif is_field_start(line):
            field = bytearray(line)
        else:
            return b"\n" + line
