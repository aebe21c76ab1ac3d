"""splogger's line state machine: input bytes to syslog records, as qmail's splogger cuts them (splogger(8)).

Each input line becomes `<stamp> <text>`; a line longer than CHUNK bytes is cut every CHUNK bytes and each
further piece is logged as `<stamp>+<piece>` with the first piece's stamp and priority. Bytes outside 32..126
become `?`; empty lines give nothing. At most CHUNK bytes are held."""

from __future__ import annotations

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable

CHUNK = 799  # qmail's 800-byte buffer less its NUL
INFO, WARNING, ALERT = 6, 4, 1  # syslog(3)'s LOG_INFO, LOG_WARNING, LOG_ALERT
PRINTABLE = bytes(c if 32 <= c <= 126 else 63 for c in range(256))


def priority(first: bytes) -> int:
    """Return the priority of a line from its first piece: `alert:` ALERT, `warning:` WARNING, else INFO."""
    if first.startswith(b"alert:"):
        return ALERT
    if first.startswith(b"warning:"):
        return WARNING
    return INFO


class Folder:
    """Feed bytes, get (priority, record) pairs; stamp() is called once per line, when its first piece goes."""

    def __init__(self, stamp: Callable[[], bytes]) -> None:
        self.stamp = stamp  # a callable returning the time stamp as bytes, e.g. b"1700000000.012345"
        self.buf = b""
        self.cont = False
        self.line_stamp = b""
        self.prio = INFO

    def _flush(self, out: list[tuple[int, bytes]]) -> None:
        if self.buf:
            if self.cont:
                out.append((self.prio, self.line_stamp + b"+" + self.buf))
            else:
                self.line_stamp = self.stamp()
                self.prio = priority(self.buf)
                out.append((self.prio, self.line_stamp + b" " + self.buf))
                self.cont = True
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Return the records completed by data."""
        out: list[tuple[int, bytes]] = []
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            end = len(data) if nl < 0 else nl
            while pos < end:
                if len(self.buf) == CHUNK:
                    self._flush(out)
                take = min(end - pos, CHUNK - len(self.buf))
                self.buf += data[pos:pos + take].translate(PRINTABLE)
                pos += take
            if nl >= 0:
                self._flush(out)
                self.cont = False
                pos = nl + 1
        return out
