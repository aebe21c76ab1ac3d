"""The lines and environment qmail-local gives every delivery (qmail-local(8), dot-qmail(5) PROGRAMS)."""

from __future__ import annotations

import time

from pyqmail.lib.config.dotqmail import ext_parts, host_parts
from pyqmail.lib.rfc822.quote import LINE_SAFE, line_safe, quote2

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Mapping

DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")


def myctime(t: float) -> bytes:
    """Return qmail's mbox date `Www Mmm DD HH:MM:SS YYYY\\n` in GMT, day zero-padded."""
    g = time.gmtime(t)
    return b"%s %s %02d %02d:%02d:%02d %d\n" % (
        DAYS[g.tm_wday], MONTHS[g.tm_mon - 1], g.tm_mday, g.tm_hour, g.tm_min, g.tm_sec, g.tm_year)


# the From_ line: qmail's blanks become `-` (LF included, as qmail does), CR and NUL `_`
FROM_SAFE = bytes.maketrans(b" \t\n\r\0", b"---__")


def one_line(value: bytes) -> bytes:
    """Return a header line's text as one line: CR, NUL and every LF but a final one become `_`."""
    if value.endswith(b"\n"):
        return value[:-1].translate(LINE_SAFE) + b"\n"
    return value.translate(LINE_SAFE)


def dtline(local: bytes, host: bytes) -> bytes:
    """Return `Delivered-To: local@host\\n`, every CR, LF and NUL inside the address turned into `_`."""
    return b"Delivered-To: " + line_safe(local + b"@" + host) + b"\n"


def rpline(sender: bytes) -> bytes:
    """Return `Return-Path: <sender>\\n` with the sender quoted, then CR, LF and NUL turned into `_`."""
    return b"Return-Path: <" + line_safe(quote2(sender)) + b">\n"


def ufline(sender: bytes, now: float) -> bytes:
    """Return the mbox From_ line: blanks in the sender become `-`, CR and NUL `_`; empty is MAILER-DAEMON."""
    who = sender.translate(FROM_SAFE) if sender else b"MAILER-DAEMON"
    return b"From " + who + b" " + myctime(now)


class Delivery:
    """What one qmail-local run knows about its recipient: the lines and the program environment (the From_
    line and the environment made only when an mbox or a |program line asks: a maildir needs neither)."""

    def __init__(self, user: bytes, home: bytes, local: bytes, ext: bytes, host: bytes, sender: bytes,
                 now: float) -> None:
        self.user, self.home, self.local, self.ext, self.host, self.sender, self.now = (
            user, home, local, ext, host, sender, now)
        self.dtline = dtline(local, host)
        self.rpline = rpline(sender)
        self._ufline: bytes | None = None

    @property
    def ufline(self) -> bytes:
        """The mbox From_ line, made on first use."""
        if self._ufline is None:
            self._ufline = ufline(self.sender, self.now)
        return self._ufline

    @property
    def env(self) -> dict[bytes, bytes]:
        """The variables qmail-local sets for |program lines (dot-qmail(5) ENVIRONMENT VARIABLES)."""
        ext2, ext3, ext4 = ext_parts(self.ext)
        host2, host3, host4 = host_parts(self.host)
        local, host = self.local, self.host
        return {
            b"HOST": host, b"HOME": self.home, b"USER": self.user, b"LOCAL": local,
            b"RECIPIENT": local + b"@" + host, b"DTLINE": self.dtline, b"SENDER": self.sender,
            b"RPLINE": self.rpline, b"UFLINE": self.ufline,
            b"EXT": self.ext, b"EXT2": ext2, b"EXT3": ext3, b"EXT4": ext4,
            b"HOST2": host2, b"HOST3": host3, b"HOST4": host4,
        }

    def program_env(self, inherited: Mapping[bytes, bytes], default: bytes | None,
                    newsender: bytes) -> dict[bytes, bytes]:
        """Return the environment for `|program` lines: inherited variables overridden by ours."""
        env = {k: v for k, v in inherited.items() if k != b"DEFAULT"}
        env.update(self.env)
        env[b"NEWSENDER"] = newsender
        if default is not None:
            env[b"DEFAULT"] = default
        return {k: v.replace(b"\0", b"") for k, v in env.items()}
