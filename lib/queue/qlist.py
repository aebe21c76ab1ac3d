"""qmail-qctl's listing: each queued message with its id, size, age, sender and recipients' states,
read from the queue without changing it, the filters of `-p`, and the envelope view of `-m` (qmail-qctl(8)).

Reading is in read_message; records, filters and lines are pure functions."""

from __future__ import annotations

import os
from typing import NamedTuple

from pyqmail.lib.queue.qreport import printable
from pyqmail.lib.queue.qshape import domain_of
from pyqmail.lib.queue.queue import SPLIT, date822, split_name
from pyqmail.lib.util.regularfile import open_regular

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable

MAX_ENVELOPE = 1 << 26  # bytes read of one todo/info/local/remote file; a larger one is reported as trouble
NEW, QUEUED, HELD = "new", "queued", "held"  # in todo/ (not yet preprocessed), preprocessed, or in hold/


class Recipient(NamedTuple):
    """One recipient: its channel (`local`, `remote`, or `new` before preprocessing), address, done or not."""

    channel: str
    address: bytes
    done: bool


class Message(NamedTuple):
    """One message as read from the queue."""

    n: int
    state: str  # NEW, QUEUED or HELD
    size: int  # of mess/n
    arrival: float  # mtime of info/n (QUEUED, as qmail-qread) or of todo/n (NEW)
    sender: bytes
    recipients: list[Recipient]
    bouncing: bool


class TooLarge(OSError):
    """An envelope file larger than MAX_ENVELOPE."""


def records(data: bytes) -> list[bytes]:
    """Return the NUL-ended records of a queue file; a last record without its NUL is unfinished: ignored."""
    return data.split(b"\0")[:-1]


def todo_envelope(data: bytes) -> tuple[bytes, list[Recipient]]:
    """Return (sender, recipients) of todo/n's records (u, p, F, T); other kinds are skipped."""
    sender = b""
    rcpts = []
    for record in records(data):
        kind = record[:1]
        if kind == b"F":
            sender = record[1:]
        elif kind == b"T":
            rcpts.append(Recipient(NEW, record[1:], False))
    return sender, rcpts


def channel_recipients(channel: str, data: bytes) -> list[Recipient]:
    """Return the recipients of a local/n or remote/n file (T: to do, D: done; other kinds skipped)."""
    return [Recipient(channel, r[1:], r[:1] == b"D") for r in records(data) if r[:1] in (b"T", b"D")]


def open_file(name: str) -> int:
    """Open a queue file for reading, never through a symbolic link nor waiting on a FIFO; NotRegularFile if it
    is not a regular file (the queue's users, qmail-smtpd's among them, could plant one where root reads)."""
    return open_regular(name)


def read_bounded(name: str) -> tuple[bytes, float]:
    """Return (contents, mtime) of a queue file, refusing one larger than MAX_ENVELOPE or not a regular file."""
    fd = open_file(name)
    try:
        st = os.fstat(fd)
        chunks = []
        size = 0
        while size <= MAX_ENVELOPE:
            chunk = os.read(fd, min(1 << 20, MAX_ENVELOPE + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > MAX_ENVELOPE:
        raise TooLarge(27, "file too large")  # EFBIG
    return b"".join(chunks), st.st_mtime


def numbers(queue: str = ".") -> list[int]:
    """Return the numbers of the messages in todo/, info/* and hold/, ascending."""
    found: set[int] = set()
    dirs = [os.path.join(queue, "todo")] + [os.path.join(queue, "info", str(k)) for k in range(SPLIT)]
    for d in dirs + [os.path.join(queue, "hold")]:
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            if d.endswith("hold"):
                continue  # a queue made before hold/ existed
            raise
        found.update(int(name) for name in names if name.isascii() and name.isdigit())
    return sorted(found)


def read_message(n: int, queue: str = ".") -> Message | None:
    """Read message n (None when it is not in todo/ nor info/ any more); raises OSError on trouble."""
    def path(name: str) -> str:
        return name if queue == "." else os.path.join(queue, name)
    try:
        size = os.stat(path(split_name("mess", n))).st_size
    except FileNotFoundError:
        return None
    try:
        data, mtime = read_bounded(path("todo/%d" % n))
        sender, rcpts = todo_envelope(data)
        return Message(n, NEW, size, mtime, sender, rcpts, False)
    except FileNotFoundError:
        pass
    state = QUEUED
    try:
        data, mtime = read_bounded(path(split_name("info", n)))
    except FileNotFoundError:
        try:
            data, mtime = read_bounded(path("hold/%d" % n))
            state = HELD
        except FileNotFoundError:
            return None
    sender = records(data)[0][1:] if records(data) else b""
    rcpts = []
    for channel in ("local", "remote"):
        try:
            rcpts += channel_recipients(channel, read_bounded(path(split_name(channel, n)))[0])
        except FileNotFoundError:
            pass
    bouncing = os.path.exists(path("bounce/%d" % n))
    return Message(n, state, size, mtime, sender, rcpts, bouncing)


def matches(m: Message, sender: bytes | None = None, recipient: bytes | None = None,
            domain: bytes | None = None) -> bool:
    """True if m passes every filter given: sender is its envelope sender, recipient one of its recipients,
    domain one of its recipients' domains (all compared case-insensitively; the empty sender is `<>` or ``)."""
    if sender is not None and m.sender.lower() != sender.lower().strip(b"<>"):
        return False
    if recipient is not None and all(r.address.lower() != recipient.lower() for r in m.recipients):
        return False
    if domain is not None and all(domain_of(r.address) != domain.lower().lstrip(b"@") for r in m.recipients):
        return False
    return True


def age_text(seconds: float) -> bytes:
    """Return an age as `45s`, `12m05s`, `3h07m` or `2d04h` (a negative age, from a clock set back, is 0s)."""
    s = max(0, int(seconds))
    if s < 60:
        return b"%ds" % s
    if s < 3600:
        return b"%dm%02ds" % (s // 60, s % 60)
    if s < 86400:
        return b"%dh%02dm" % (s // 3600, s % 3600 // 60)
    return b"%dd%02dh" % (s // 86400, s % 86400 // 3600)


def message_lines(m: Message, now: float) -> bytes:
    """Return a message's lines: `#n  date GMT  size  age  <sender>  state[ bouncing]`, then one line per
    recipient: TAB, `done` or `todo`, TAB, `local`, `remote` or `new`, TAB, the address."""
    date = date822(m.arrival)[:-len(" -0000")]
    head = b"#%d  %s GMT  %d  %s  <%s>  %s%s" % (m.n, date.encode(), m.size, age_text(now - m.arrival),
                                                m.sender, m.state.encode(), b" bouncing" if m.bouncing else b"")
    out = [printable(head) + b"\n"]
    for r in m.recipients:
        out.append(b"\t%s\t%s\t%s\n" % (b"done" if r.done else b"todo", r.channel.encode(), printable(r.address)))
    return b"".join(out)


def summary_line(listed: Iterable[Message]) -> bytes:
    """Return the closing line: messages and recipients listed, recipients still to do."""
    msgs = rcpts = todo = 0
    for m in listed:
        msgs += 1
        rcpts += len(m.recipients)
        todo += sum(1 for r in m.recipients if not r.done)
    return b"%d messages, %d recipients, %d to do\n" % (msgs, rcpts, todo)


def envelope_lines(m: Message, now: float) -> bytes:
    """Return `-m`'s envelope part: the listing's lines followed by an empty line."""
    return message_lines(m, now) + b"\n"


def shape_entries(messages: Iterable[Message], now: float, sets: Iterable[str]) -> list[tuple[bytes, float]]:
    """Return the (domain, age) of every recipient still to do in the messages whose state is in sets."""
    wanted = set(sets)
    return [(domain_of(r.address), now - m.arrival) for m in messages if m.state in wanted
            for r in m.recipients if not r.done]
