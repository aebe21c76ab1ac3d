"""qmail-qread's and qmail-qstat's views of the queue (qmail-qread(8), qmail-qstat(8)), as pure functions."""

from __future__ import annotations

from pyqmail.lib.queue.queue import date822

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable


def printable(data: bytes, replacement: bytes = b"_") -> bytes:
    """Replace every byte outside 32..126 (qmail-qread's out())."""
    return bytes(b if 32 <= b <= 126 else replacement[0] for b in data)


def first_record(data: bytes) -> bytes:
    """Return the bytes up to the first NUL (a C string)."""
    return data.split(b"\0", 1)[0]


def header_line(mtime: int, n: int, size: int, info: bytes, bouncing: bool, held: bool = False) -> bytes:
    """Return a message's header line: date, number, size, sender, ` bouncing` if bounce/n exists, and
    ` held` for a message in hold/ (not qmail's: qmail has no hold/)."""
    sender = first_record(info)[1:]
    date = date822(mtime)[:-len(" -0000")]
    line = b"%s GMT  #%d  %d  <%s> " % (date.encode(), n, size, sender)
    if bouncing:
        line += b" bouncing"
    if held:
        line += b" held"
    return printable(line) + b"\n"


def recipient_lines(channel: bytes, data: bytes) -> bytes:
    """Return the lines for a local/n or remote/n file: `\\t<channel>\\t<addr>`, `  done` before delivered ones."""
    out = []
    records = data.split(b"\0")[:-1]  # a record without its NUL is unfinished: ignored
    for record in records:
        kind = record[:1]
        if kind not in (b"T", b"D"):
            continue
        prefix = b"  done" if kind == b"D" else b""
        out.append(b"%s\t%s\t%s\n" % (prefix, channel, printable(record[1:])))
    return b"".join(out)


def message_numbers(names: Iterable[str]) -> list[int]:
    """Return the message numbers among directory entry names, in ascending order (non-numeric names skipped)."""
    return sorted(int(name) for name in names if name.isdigit() and name.isascii())


def qstat_lines(in_queue: int, not_preprocessed: int, held: int = 0, corrupt: int = 0) -> bytes:
    """Return qmail-qstat's two lines, then (only when not 0, so that qmail's output stays as it was) the
    held messages (counted in the queue too) and the damaged ones set aside in corrupt/ (not counted)."""
    out = (b"messages in queue: %d\n"
           b"messages in queue but not yet preprocessed: %d\n" % (in_queue, not_preprocessed))
    if held:
        out += b"messages in queue but held: %d\n" % held
    if corrupt:
        out += b"damaged messages set aside in corrupt/: %d\n" % corrupt
    return out


def corrupt_warning(corrupt: int) -> bytes:
    """Return qmail-qread's last line when corrupt/ is not empty (none when it is)."""
    if not corrupt:
        return b""
    return b"warning: %d damaged message%s set aside in corrupt/ (qmail-qctl -s lists them)\n" % (
        corrupt, b"" if corrupt == 1 else b"s")
