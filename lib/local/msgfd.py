"""The message qmail-local delivers: a seekable descriptor, re-read from the start for each instruction."""

from __future__ import annotations

import os

from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterator

CHUNK = 65536


class MessageReadError(Exception):
    """Reading the message failed; `errno` says why."""

    def __init__(self, errno: int | None) -> None:
        super().__init__(errno)
        self.errno = errno


def rewind(fd: int) -> None:
    """Seek fd back to its start; failure is qmail-local's temporary "Unable to rewind message."."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        raise Exit(TEMP_FAILURE, "Unable to rewind message. (#4.3.0)")


def chunks(fd: int) -> Iterator[bytes]:
    """Yield the message in bounded chunks until EOF; a read error raises MessageReadError."""
    while True:
        try:
            data = os.read(fd, CHUNK)
        except OSError as e:
            raise MessageReadError(e.errno)
        if not data:
            return
        yield data


def read_text(e: MessageReadError) -> str:
    """Return qmail-local's report for a message read error."""
    return "Unable to read message: %s. (#4.3.0)" % error_str(e.errno)


def header_has_line(fd: int, wanted: bytes) -> bool:
    """Return True if a header line of the message (before the first empty line) equals wanted."""
    rewind(fd)
    # one whole line: look for it in the first read's header at once
    if len(wanted) > 1 and wanted.find(b"\n") == len(wanted) - 1:
        try:
            first = os.read(fd, CHUNK)
        except OSError as e:
            raise MessageReadError(e.errno)
        if first[:1] == b"\n":
            return False  # no header at all
        end = first.find(b"\n\n")
        if end >= 0:
            return first.startswith(wanted) or first.find(b"\n" + wanted, 0, end + 1) >= 0
        rewind(fd)  # the header goes on past the first read: line by line below
    return _header_has_line(fd, wanted)


def _header_has_line(fd: int, wanted: bytes) -> bool:
    """header_has_line for any header length, holding at most one line of wanted's length."""
    line = bytearray()
    too_long = False
    for chunk in chunks(fd):
        pos = 0
        while pos < len(chunk):
            nl = chunk.find(b"\n", pos)
            end = len(chunk) if nl < 0 else nl + 1
            if not too_long:
                line += chunk[pos:end]
                if len(line) > len(wanted):
                    too_long = True  # cannot match: stop holding it (bounded memory)
                    line.clear()
            pos = end
            if nl < 0:
                continue
            if not too_long and (len(line) <= 1 or line == wanted):
                return line == wanted
            line.clear()
            too_long = False
    return False
