"""qmail's control files (read as qmail's control.c reads them) and QMAILHOME.

This module and the rest of qmail-qmqpd's per-connection path use `posix`, not `os`: importing os costs
about 1.5 ms of CPU per interpreter start here, a tenth of what a connection costs under tcpserver.
"""

from __future__ import annotations

import posix
import sys

from pyqmail.lib.util.regularfile import is_regular

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Iterable
    from os import stat_result
    from typing import Any, TypeVar

    T = TypeVar("T")
    StatKey = tuple[int, int, int, int, int]

DEFAULT_HOME = "/var/qmail"


def qmailhome() -> str:
    """Return the qmail tree's root: $QMAILHOME or /var/qmail."""
    value = posix.environ.get(b"QMAILHOME")  # the dict os.environ writes through to
    return fsdecode(value) if value else DEFAULT_HOME


def fsdecode(name: bytes) -> str:
    """Return a file name's bytes as os.fsdecode does."""
    return name.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def join(first: str, *parts: str) -> str:
    """Join path names as os.path.join does."""
    for part in parts:
        if part.startswith("/") or not first:
            first = part
        elif first.endswith("/"):
            first += part
        else:
            first += "/" + part
    return first


def exists(name: str) -> bool:
    """True if name exists, symlinks followed (os.path.exists)."""
    try:
        posix.stat(name)
        return True
    except (OSError, ValueError):
        return False


def is_file(name: str) -> bool:
    """True if name is a regular file, symlinks followed (os.path.isfile)."""
    try:
        return is_regular(posix.stat(name).st_mode)
    except (OSError, ValueError):
        return False


def path(*parts: str) -> str:
    """Return a path inside the qmail tree."""
    return join(qmailhome(), *parts)


READ_MAX = 2**63 - 1  # a number control file's values saturate here: any more would overflow a float or C time
TIMEOUT_MAX = 2147482  # seconds: poll(2) waits at most 2^31 - 1 milliseconds (24.8 days), a C int
FILE_MAX = 64 << 20  # bytes of one control file: beyond, it is unreadable (a link to /dev/zero must not eat memory)
SETTLED_NS = 10**9  # a timestamp this close to now may hide a second change within the same clock tick
# (key, control directory) -> (its stat key, {file: stat key} of those that existed, value): values of any type
_memo: dict[tuple[str, str], tuple[StatKey, dict[str, StatKey], Any]] = {}


def _stat_key(st: stat_result) -> StatKey:
    """What changes when a file is replaced, written or touched."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _existing(directory: str, names: Iterable[str]) -> dict[str, StatKey]:
    """Return {name: stat key} for those of names that exist in directory."""
    found = {}
    for name in names:
        try:
            found[name] = _stat_key(posix.stat(join(directory, name)))
        except FileNotFoundError:
            continue
    return found


def memo(key: str, names: Iterable[str], build: Callable[[], T]) -> T:
    """Return build(), which reads the control files names; a long-lived process (a reused worker) gets
    the value it built last while control/ and those of the files that existed are unchanged."""
    directory = path("control")
    slot = (key, directory)
    held = _memo.pop(slot, None)
    try:
        dir_key = _stat_key(posix.stat(directory))
        if held is not None and held[0] == dir_key and all(
                _stat_key(posix.stat(join(directory, name))) == k for name, k in held[1].items()):
            _memo[slot] = held
            return held[2]
        files = _existing(directory, names)
    except OSError:
        return build()  # which reports the trouble as the caller expects
    value = build()
    import time
    stamps = [t for k in (dir_key, *files.values()) for t in k[3:]]
    if max(stamps) < time.time_ns() - SETTLED_NS:  # else a change within the same tick could go unseen
        _memo[slot] = (dir_key, files, value)
    return value


def read_file(name: str) -> bytes | None:
    """Return the control file's bytes, or None if it does not exist (other errors raise OSError)."""
    try:
        # O_NONBLOCK as qmail's open_read (O_NDELAY): a FIFO put there by mistake reads as what its writers
        # have written (nothing, when it has none) instead of blocking the program until one comes
        fd = posix.open(path("control", name), posix.O_RDONLY | posix.O_NONBLOCK)
    except FileNotFoundError:
        return None
    try:
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = posix.read(fd, 65536)  # a FIFO whose writer writes nothing yet: BlockingIOError, an OSError
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > FILE_MAX:
                import errno
                raise OSError(errno.EFBIG, "control file over %d bytes" % FILE_MAX)
            chunks.append(chunk)
    finally:
        posix.close(fd)


BLANKS = b" \t\r"  # stripped from a line's end: qmail's spaces and tabs, and a file saved with CRLF's CR


def first_line(data: bytes) -> bytes:
    """Return a control file's first line without its newline and trailing blanks (BLANKS)."""
    return data.split(b"\n", 1)[0].rstrip(BLANKS)


def scan_ulong(line: bytes, default: T) -> int | T:
    """Return the value of the line's leading decimal digits (qmail's scan_ulong), or default if none."""
    digits = len(line) - len(line.lstrip(b"0123456789"))
    return int(line[:digits]) if digits else default


def readline(name: str) -> bytes | None:
    """Return the first line with trailing newline and blanks (BLANKS) stripped, or None if absent."""
    data = read_file(name)
    return None if data is None else first_line(data)


def readint(name: str, default: int) -> int:
    """Return the leading decimal digits of the first line (qmail's scan_ulong), at most READ_MAX; none →
    default."""
    line = readline(name)
    value = None if line is None else scan_ulong(line, None)
    return default if value is None else min(value, READ_MAX)


def readtimeout(name: str, default: int) -> int:
    """Return readint's value for a timeout in seconds, at most TIMEOUT_MAX (longer waits cannot be asked for)."""
    return min(readint(name, default), TIMEOUT_MAX)


def readlist(name: str, default: Iterable[bytes] | None = None) -> list[bytes]:
    """Return the entries of a list control file (parse_list); absent → default or []."""
    data = read_file(name)
    if data is None:
        return list(default or [])
    return parse_list(data)


def parse_list(data: bytes) -> list[bytes]:
    """Return a list control file's entries as qmail's control_readfile and constmap see them: each line
    with trailing blanks stripped (BLANKS: a CR too, unlike qmail); a line that is then empty, or starts
    with `#` or NUL, is skipped; any other line is split at its NULs into entries (`a\\0b` gives `a`, `b`; `a\\0` gives `a`, ``)."""
    entries = []
    for line in data.split(b"\n"):
        line = line.rstrip(BLANKS)
        if line and line[0] != 0x23 and line[0] != 0:  # `#`, NUL: qmail tests the line's first byte only
            entries += line.split(b"\0")  # qmail keeps the lines NUL-terminated in one buffer
    return entries


def me() -> bytes | None:
    """Return control/me, or None."""
    return readline("me")


def rldef(name: str, default: T) -> bytes | T:
    """Return the control's first line, else control/me, else the literal default."""
    value = readline(name)
    if value is not None:
        return value
    value = me()
    return value if value is not None else default
