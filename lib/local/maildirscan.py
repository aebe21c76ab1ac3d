"""What qmail's Maildir readers share (qmail's maildir.c): $MAILDIR, cleaning tmp/, listing new/ and cur/ by
mtime; and the two readers' own parsers: maildir2mbox's From_ line and maildirwatch's one-message summary."""

from __future__ import annotations

import os
import stat
import time

from pyqmail.lib.local.delivery_env import myctime
from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable, Mapping

TMP_MAX_AGE = 129600  # 36 hours: older files in tmp/ are left-overs of failed deliveries
SCAN_MAX = 1 << 20  # names kept from one scan; a bigger Maildir is read in several runs
RETURN_PATH = b"Return-Path: <"
TEXT_MAX = 158  # maildirwatch: subject and body bytes shown per message


def chdir_maildir(environ: Mapping[bytes, bytes], program: str) -> None:
    """chdir to $MAILDIR, or end with `<program>: fatal: ...` and exit 111."""
    maildir = environ.get(b"MAILDIR")
    if maildir is None:
        raise Exit(TEMP_FAILURE, "fatal: MAILDIR not set")
    try:
        os.chdir(maildir)
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to chdir to %s: %s" % (os.fsdecode(maildir), error_str(e.errno)))


def open_dir(sub: bytes) -> int:
    """Open the Maildir's subdirectory sub for use as a dir_fd, never through a symlink; OSError otherwise. (The
    Maildir's owner can make new/, cur/ or tmp/ a symlink at any time: run by root, maildir2mbox would then read
    and unlink in, and clean_tmp unlink in, any directory.)"""
    return os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def open_dirs(subdirs: Iterable[bytes]) -> dict[bytes, int]:
    """open_dir each of subdirs; raise Exit (111, `fatal: unable to scan $MAILDIR/sub: ...`) if one fails."""
    fds = {}
    for sub in subdirs:
        try:
            fds[sub] = open_dir(sub)
        except OSError as e:
            why = "it is a symbolic link" if os.path.islink(sub) else error_str(e.errno)
            raise Exit(TEMP_FAILURE, "fatal: unable to scan $MAILDIR/%s: %s" % (os.fsdecode(sub), why))
    return fds


def clean_tmp(now: float | None = None) -> None:
    """Remove files in tmp/ not accessed for 36 hours (errors are ignored, as qmail does; a tmp/ that is a
    symlink is left alone)."""
    now = time.time() if now is None else now
    try:
        fd = open_dir(b"tmp")
    except OSError:
        return
    try:
        names = [os.fsencode(n) for n in os.listdir(fd)]  # (names of a descriptor come as str)
    except OSError:
        os.close(fd)
        return
    try:
        for name in names:
            if name.startswith(b"."):
                continue
            try:
                if now > os.stat(name, dir_fd=fd).st_atime + TMP_MAX_AGE:
                    os.unlink(name, dir_fd=fd)
            except OSError:
                pass
    finally:
        os.close(fd)


def scan(subdirs: Iterable[bytes], now: float | None = None, limit: int = SCAN_MAX,
         follow: bool = True, fds: Mapping[bytes, int] | None = None) -> list[tuple[int, bytes]]:
    """Return [(mtime, b"new/name")...] of the messages in subdirs, oldest first; files modified in this very
    second or later are left for the next run (qmail's rule, so that the order is not mixed up); only regular files
    (after symlinks, or, when not follow, not symlinks at all); through fds (open_dirs) when given. Raises Exit."""
    now_s = int(time.time() if now is None else now)
    found: list[tuple[int, bytes]] = []
    for sub in subdirs:
        try:
            names = os.listdir(sub) if fds is None else [os.fsencode(n) for n in os.listdir(fds[sub])]
        except OSError as e:
            raise Exit(TEMP_FAILURE, "fatal: unable to scan $MAILDIR/%s: %s" % (os.fsdecode(sub), error_str(e.errno)))
        for name in names:
            if name.startswith(b".") or len(found) >= limit:
                continue
            path = sub + b"/" + name
            try:
                if fds is None:
                    st = os.stat(path, follow_symlinks=follow)
                else:
                    st = os.stat(name, dir_fd=fds[sub], follow_symlinks=follow)
            except OSError:
                continue
            mtime = int(st.st_mtime)
            if stat.S_ISREG(st.st_mode) and mtime < now_s:  # a FIFO or directory there is no message
                found.append((mtime, path))
    found.sort()
    return found


def from_line(first: bytes, mtime: float) -> bytes:
    """Return maildir2mbox's From_ line for a message whose first line (with its LF, if it had one) is first:
    the address of a leading `Return-Path: <x>` with blanks made `-` (`<>` gives MAILER-DAEMON), else XXX."""
    who = b"XXX"
    if first.endswith(b"\n") and first.startswith(RETURN_PATH):
        if first[14:15] == b">":
            who = b"MAILER-DAEMON"
        else:
            who = first[14:-2].replace(b" ", b"-").replace(b"\t", b"-")  # the `>` and LF are dropped
    return b"From " + who + b" " + myctime(mtime)


def printable(value: bytes, replacement: bytes) -> bytes:
    """Return value with every byte outside 32..126 replaced."""
    return bytes(c if 32 <= c <= 126 else replacement[0] for c in value)


class Summary:
    """maildirwatch's view of one message, fed its header fields and body lines (lib/rfc822/headerbody)."""

    def __init__(self) -> None:
        self.sender = b"?"
        self.recipient = b"?"
        self.fromline = b""
        self.text = b""

    def _add(self, data: bytes) -> None:
        if len(self.text) < TEXT_MAX:
            self.text = (self.text + data[:TEXT_MAX])[:TEXT_MAX]

    def full(self) -> bool:
        """Return whether no more body text would be shown."""
        return len(self.text) >= TEXT_MAX

    def field(self, field: bytes) -> None:
        """Take one header field (its continuation lines and final LF included)."""
        from pyqmail.lib.rfc822.headerbody import field_name, field_value_start
        name = field_name(field)
        start = field_value_start(field)
        if name == b"subject":
            self._add(field[start:])
        elif name == b"delivered-to" and start < len(field):
            self.recipient = _chop(field[start:])
        elif name == b"return-path" and start < len(field):
            self.sender = _chop(field[start:])
        elif name == b"from":
            self.fromline = _chop(field)

    def body(self, line: bytes) -> None:
        """Take one body line."""
        self._add(line)

    def render(self) -> bytes:
        """Return the lines maildirwatch prints for the message."""
        out = b"FROM " + printable(self.sender, b"?") + b" TO <" + printable(self.recipient, b"?") + b">\n"
        if self.fromline:
            out += b"\033[1m" + printable(self.fromline, b"/") + b"\033[0m\n"
        return out + printable(self.text, b"/") + b"\n\n"


def _chop(value: bytes) -> bytes:
    """Return a field's text without its final LF (qmail drops the last byte, which is the LF)."""
    return value[:-1] if value.endswith(b"\n") else value
