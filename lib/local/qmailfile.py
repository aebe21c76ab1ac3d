"""Finding and reading the user's .qmail file the way qmail-local does (qmesearch, qmeexists, qmeox)."""

import os

from pyqmail.lib.config import dotqmail
from pyqmail.lib.util.errstr import error_str, is_temp
from pyqmail.lib.util.exits import Exit

PATRN = 0o002  # conf-patrn: a world-writable .qmail is refused
OWNER_EXEC = 0o100  # x bit: the file may only forward
EPERM, EACCES = 1, 13


def cannot_open(name, errno):
    """Return the temporary failure for a .qmail file that exists but cannot be opened."""
    return Exit(111, "Unable to open %s: %s. (#4.3.0)" % (os.fsdecode(name), error_str(errno)))


def open_qmail(name):
    """Return (fd, forward-only?) for an existing regular .qmail file, or None to try the next name."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        if is_temp(e.errno) or e.errno in (EPERM, EACCES):
            raise cannot_open(name, e.errno)
        return None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        raise cannot_open(name, e.errno)
    if mode & 0o170000 != 0o100000:
        os.close(fd)
        return None
    if mode & PATRN:
        raise Exit(111, "Uh-oh: .qmail file is writable. (#4.7.0)")
    return fd, bool(mode & OWNER_EXEC)


def find_qmail(dash, ext):
    """Return (name, fd, forward-only?, DEFAULT) of the first .qmail file in search order, or Nones."""
    for name, default in dotqmail.candidates(dash, ext):
        found = open_qmail(name)
        if found:
            return (name,) + found + (default,)
    return None, None, False, None


def exists(name):
    """Return True if name exists (qmeox: a temporary stat error is a temporary failure)."""
    try:
        os.stat(name)
        return True
    except OSError as e:
        if is_temp(e.errno):
            raise cannot_open(name, e.errno)
        return False


def read_qmail(name, fd):
    """Return the .qmail file's contents (bounded), closing fd."""
    data = b""
    try:
        while len(data) <= dotqmail.QMAIL_MAX:
            chunk = os.read(fd, 65536)
            if not chunk:
                return data
            data += chunk
    except OSError as e:
        raise Exit(111, "Unable to read %s: %s. (#4.3.0)" % (os.fsdecode(name), error_str(e.errno)))
    finally:
        os.close(fd)
    raise Exit(111, "Unable to read %s: file too big. (#4.3.0)" % os.fsdecode(name))
