"""qbiff's notice and the ttys it goes to (qbiff(1); Linux glibc utmp records)."""

from __future__ import annotations

import os
import stat
import sys

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable

UTMP = "/var/run/utmp"
RECORD = 384  # sizeof(struct utmp) on Linux glibc (x86-64, aarch64 and i386 alike)
LINE_AT, LINE_LEN = 8, 32
USER_AT, USER_LEN = 44, 32
USER_PROCESS = 7
TEXT_MAX = 78
LINE_MAX = 1024  # bytes read of each line: a Subject line cut there still fills the preview


def printable(data: bytes, replacement: int) -> bytes:
    """Return data with every byte outside 32..126 replaced."""
    return bytes(c if 32 <= c <= 126 else replacement for c in data)


def notice(local: bytes, sender: bytes, text: bytes) -> bytes:
    """Return the bytes written to a tty: bell, `*** TO <local> FROM <sender>`, then the text line."""
    tofrom = printable(b"*** TO <" + local + b"> FROM <" + sender + b">", ord("_"))
    return b"\r\n\a" + tofrom + b"\r\n" + printable(text[:TEXT_MAX], ord("/")) + b"\r\n"


def preview(parts: Iterable[tuple[str, bytes]]) -> bytes:
    """Return 4 spaces + the Subject value + body lines, cut to 78 bytes; parts are (kind, bytes)."""
    from pyqmail.lib.rfc822.headerbody import field_name, field_value_start
    text = b"    "
    for kind, data in parts:
        if len(text) >= TEXT_MAX:
            break
        if kind == "body":
            text += data
        elif field_name(data) == b"subject":
            text += data[field_value_start(data):]
    return text[:TEXT_MAX]


def tty_lines(utmp: bytes, user: bytes) -> list[bytes]:
    """Return the tty names (relative to /dev) of user's login records in utmp bytes."""
    out: list[bytes] = []
    if len(user) > USER_LEN:
        return out
    for at in range(0, len(utmp) - RECORD + 1, RECORD):
        rec = utmp[at:at + RECORD]
        if int.from_bytes(rec[0:2], sys.byteorder) != USER_PROCESS:
            continue
        if rec[USER_AT:USER_AT + USER_LEN].split(b"\0", 1)[0] != user:
            continue
        line = rec[LINE_AT:LINE_AT + LINE_LEN].split(b"\0", 1)[0]
        # no absolute names and no dots: the name cannot leave /dev; `pts/N` is allowed (qmail: no `/`)
        if not line or line.startswith(b"/") or b"." in line:
            continue
        out.append(line)
    return out


def write_tty(name: bytes, data: bytes, uid: int) -> bool:
    """Append data to /dev/<name> if it is a terminal (a character device: a name with an inner `/` could
    reach any file below /dev, /dev/fd/N and /dev/shm among them) that is ours and owner-executable (biff y);
    never block."""
    try:
        fd = os.open(b"/dev/" + name, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISCHR(st.st_mode) or not st.st_mode & 0o100 or st.st_uid != uid:
            return False
        os.write(fd, data)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
