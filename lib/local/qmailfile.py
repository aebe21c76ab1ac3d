"""Finding and reading the user's .qmail file the way qmail-local does (dot-qmail(5), which file; qmail-local.c
qmesearch, qmeexists, qmeox)."""

from __future__ import annotations

import errno
import os

from pyqmail.lib.config import dotqmail
from pyqmail.lib.util.regularfile import is_regular
from pyqmail.lib.util.errstr import error_str, is_temp
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit

PATRN = 0o002  # conf-patrn: a world-writable home or .qmail file is refused
OWNER_EXEC = 0o100  # x bit: the file may only forward


def cannot_open(name: bytes, code: int | None) -> Exit:
    """Return the temporary failure for a .qmail file that exists but cannot be opened (code: its errno)."""
    return Exit(TEMP_FAILURE, "Unable to open %s: %s. (#4.3.0)" % (os.fsdecode(name), error_str(code)))


def open_qmail(name: bytes) -> tuple[int, bool] | None:
    """Return (fd, forward-only?) for an existing regular .qmail file, or None to try the next name."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        if is_temp(e.errno) or e.errno in (errno.EPERM, errno.EACCES):
            raise cannot_open(name, e.errno)
        return None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        raise cannot_open(name, e.errno)
    if not is_regular(mode):
        os.close(fd)
        return None
    if mode & PATRN:
        raise Exit(TEMP_FAILURE, "Uh-oh: .qmail file is writable. (#4.7.0)")
    return fd, bool(mode & OWNER_EXEC)


def find_qmail(dash: bytes, ext: bytes) -> tuple[bytes, int, bool, bytes | None] | tuple[None, None, bool, None]:
    """Return (name, fd, forward-only?, DEFAULT) of the first .qmail file in search order, or Nones."""
    for name, default in dotqmail.candidates(dash, ext):
        found = open_qmail(name)
        if found:
            return (name,) + found + (default,)
    return None, None, False, None


def exists(name: bytes) -> bool:
    """Return True if name exists (qmeox: a temporary stat error is a temporary failure)."""
    try:
        os.stat(name)
        return True
    except OSError as e:
        if is_temp(e.errno):
            raise cannot_open(name, e.errno)
        return False


def read_qmail(name: bytes, fd: int) -> bytes:
    """Return the .qmail file's contents (bounded), closing fd."""
    data = b""
    try:
        while len(data) <= dotqmail.QMAIL_MAX:
            chunk = os.read(fd, 65536)
            if not chunk:
                return data
            data += chunk
    except OSError as e:
        raise Exit(TEMP_FAILURE, "Unable to read %s: %s. (#4.3.0)" % (os.fsdecode(name), error_str(e.errno)))
    finally:
        os.close(fd)
    raise Exit(TEMP_FAILURE, "Unable to read %s: file too big. (#4.3.0)" % os.fsdecode(name))
