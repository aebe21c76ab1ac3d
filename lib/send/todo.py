"""qmail-send's todo preprocessing: todo/N → info/N, local/N, remote/N (qmail-send(8), the todo scan and
damaged messages; docs/qmail-send-design.md)."""

from __future__ import annotations

import os
from typing import NamedTuple  # qmail-send only, started once: not a per-message program

from pyqmail.lib.send import sendlog
from pyqmail.lib.send.channel import CHANNELS, LOCAL
from pyqmail.lib.config.control import scan_ulong
from pyqmail.lib.queue.queue import split_name
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.regularfile import is_regular

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Iterable
    from pyqmail.lib.send.rewrite import Rewriter

    StatKey = tuple[int, int, int, int, int]
    Split = Callable[[str], str]  # split(directory) -> the path of the message's file in that split directory
    FsyncAll = Callable[[list[int]], set[int]]  # fsyncs descriptors, returns those that failed


class Plan(NamedTuple):
    """Bytes for info/N and {channel: bytes}, log lines, and the failing warning or None. chan holds a channel
    only if a T record went to it (its file is created O_EXCL then)."""
    info: bytes
    chan: dict[str, bytes]
    log: list[bytes]
    failure: bytes | None


class Result(NamedTuple):
    """Whether todo/N may be handed to qmail-clean, the log lines, the channels that got a file; aside: todo/N's
    stat_key when its content is damaged (it is not read again while unchanged)."""
    ok: bool
    log: list[bytes]
    channels: tuple[str, ...]
    aside: StatKey | None = None


class Kept(NamedTuple):
    """A message to deliver from memory (lib/send/inmemory): the log lines, info/N's bytes and its one channel's
    file's bytes as they would be written; no file was written: todo/N stays its only record until it is
    finished."""
    n: int
    log: list[bytes]
    info: bytes
    records: bytes
    channel: str = LOCAL


FILE_MODE = 0o600  # qmail opens with 0644 under qmail-send's umask 077
KEEP_RCPTS = 16  # recipients a message kept in memory may have; more go through info/ and a channel file as in qmail


def keepable(p: Plan, remote: bool = False) -> str | None:
    """Return the channel if the Plan p may be kept in memory (no failure, every recipient in one channel, at
    most KEEP_RCPTS of them; that channel local, or remote if remote is allowed), else None."""
    if p.failure is not None or p.info[:1] != b"F" or len(p.chan) != 1:
        return None
    [channel] = p.chan
    if channel != LOCAL and not remote:
        return None
    return channel if p.chan[channel].count(b"\0") <= KEEP_RCPTS else None


def plan(n: int, todo_data: bytes, mess_size: int, rewriter: Rewriter) -> Plan:
    """Return the Plan for todo/N's bytes: a trailing record without its NUL is ignored, as qmail does
    (prepare refuses such a file first); no F record is a failure (qmail would write an empty info/N)."""
    info = b""
    chan: dict[str, bytes] = {}
    log: list[bytes] = []
    uid = pid = 0
    for record in todo_data.split(b"\0")[:-1]:
        kind, value = record[:1], record[1:]
        if kind == b"u":
            uid = scan_ulong(value, 0)
        elif kind == b"p":
            pid = scan_ulong(value, 0)
        elif kind == b"F":
            info += record + b"\0"
            log.append(sendlog.info_msg(n, mess_size, value, pid, uid))
        elif kind == b"T":
            channel, addr = rewriter.rewrite(value)
            chan[channel] = chan.get(channel, b"") + b"T" + addr + b"\0"
        else:
            return Plan(info, chan, log, sendlog.warning("unknown_todo", sendlog.flat_fn("todo", n)))
    if not info:
        return Plan(info, chan, log, sendlog.warning("no_sender", sendlog.flat_fn("todo", n)))
    return Plan(info, chan, log, None)


def stat_key(st: os.stat_result) -> StatKey:
    """What changes when a file is replaced, rewritten, touched or chmodded."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def unlink_stale(name: str) -> bool:
    """Remove name; True if it is gone (ENOENT is fine)."""
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


class Written(NamedTuple):
    """todo/N's files written but not yet fsynced: the log so far, the channels that got a file, and
    [(open descriptor, name for the log)] in qmail's order, info first."""
    n: int
    log: list[bytes]
    channels: tuple[str, ...]
    files: list[tuple[int, bytes]]


def create(name: str) -> int:
    """Create name O_EXCL with qmail-send's mode; return its descriptor."""
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)


def failed(log: list[bytes], what: str, fn: bytes, files: Iterable[tuple[int, bytes]] = ()) -> Result:
    """Close what was opened; return a failed Result: the log so far plus one warning."""
    for fd, _ in files:
        os.close(fd)
    return Result(False, log + [sendlog.warning(what, fn)], ())


class Unwritten(NamedTuple):
    """todo/N read and planned, its files not created yet (write_files does that, and the fsyncs)."""
    n: int
    plan: Plan
    log: list[bytes]


def splitter(queue: str, n: int) -> Split:
    """Return split(directory) -> the path of message n's file in that split directory of the queue."""
    if queue == ".":  # (qmail-send's: the names as they are, without a join for each of a message's files)
        def split(directory: str) -> str:
            return split_name(directory, n)
        return split

    def joined(directory: str) -> str:
        return os.path.join(queue, split_name(directory, n))
    return joined


def prepare(n: int, rewriter: Rewriter, queue: str = ".", keep: bool = False,
            keep_remote: bool = False) -> Unwritten | Kept | Result:
    """Read and plan todo/N, no file created: an Unwritten, a Kept (if keep and the message qualifies; a remote-only
    one too if keep_remote), or a failed Result (with aside set if todo/N's content is damaged: a last record
    without its NUL, an unknown record, no F record). todo/N and intd/N are left alone."""
    split = splitter(queue, n)
    try:
        # O_NONBLOCK as qmail's open_read: a FIFO planted in todo/ reads as empty instead of hanging the loop
        name = "todo/%d" % n if queue == "." else os.path.join(queue, "todo", str(n))
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return failed([], "open", sendlog.flat_fn("todo", n))
    try:
        try:
            size = os.stat(split("mess")).st_size  # only for the log line
        except OSError:
            return failed([], "stat", sendlog.split_fn("mess", n))
        stale = remove_stale(n, split)
        if stale is not None:
            return stale
        log = [sendlog.new_msg(n)]
        try:
            st = os.fstat(fd)
            key = stat_key(st)
            data = read_all(fd, st.st_size if is_regular(st.st_mode) else -1)
        except OSError:
            return failed(log, "read", sendlog.flat_fn("todo", n))
    finally:
        os.close(fd)
    if data[-1:] not in (b"", b"\0"):  # qmail-queue ends every record with NUL: the file was cut
        return Result(False, log + [sendlog.warning("truncated", sendlog.flat_fn("todo", n))], (), key)
    p = plan(n, data, size, rewriter)
    if p.failure:
        return Result(False, log + p.log + [p.failure], (), key)  # no info/N: nothing is scheduled
    channel = keepable(p, keep_remote) if keep else None
    if channel is not None:
        return Kept(n, log + p.log, p.info, p.chan[channel], channel)
    return Unwritten(n, p, log)


def read_all(fd: int, size: int = -1) -> bytes:
    """Read fd to its end. size: a regular file's st_size, asked for plus one byte: a regular file's read
    comes back short only at its end, so then that one read was all (no second read to see the end)."""
    chunks: list[bytes] = []
    if size >= 0:
        chunk = os.read(fd, size + 1)
        if len(chunk) <= size:
            return chunk
        chunks.append(chunk)  # it grew meanwhile: on to its end
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def remove_stale(n: int, split: Split) -> Result | None:
    """Unlink info/N and the channel files: never trusted while todo/N exists, as a crash may have left
    them half-written. Return None, or a failed Result."""
    for directory in (*CHANNELS, "info"):
        if not unlink_stale(split(directory)):
            return failed([], "unlink", sendlog.split_fn(directory, n))
    return None


def create_files(n: int, p: Plan, log: list[bytes], split: Split) -> Written | Result:
    """Create info/N and the plan p's channel files and write them (not fsynced): a Written, or a failed
    Result (a failure to create info/N is logged without log, as qmail does)."""
    try:
        files = [(create(split("info")), sendlog.split_fn("info", n))]
    except OSError:
        return failed([], "create", sendlog.split_fn("info", n))
    return fill(n, p, log, files, split)


def fill(n: int, p: Plan, log: list[bytes], files: list[tuple[int, bytes]],
         split: Split) -> Written | Result:
    """Write info/N and the channel files of the plan p; return the Written or a failed Result."""
    log += p.log
    try:
        write_all(files[0][0], p.info)
    except OSError:
        return failed(log, "write", files[0][1], files)
    for channel in CHANNELS:
        if channel in p.chan:
            logged = sendlog.split_fn(channel, n)
            try:
                fd = create(split(channel))
            except OSError:
                return failed(log, "create", logged, files)
            files.append((fd, logged))
            try:
                write_all(fd, p.chan[channel])
            except OSError:
                return failed(log, "write", logged, files)
    return Written(n, log, tuple(c for c in CHANNELS if c in p.chan), files)


def fsync_each(fds: Iterable[int]) -> set[int]:
    """fsync each descriptor in turn; return the set of those that failed."""
    bad = set()
    for fd in fds:
        try:
            os.fsync(fd)
        except OSError:
            bad.add(fd)
    return bad


def complete(written: Written, bad: set[int]) -> Result:
    """Close a Written's files; return its Result, failed if one of them (in bad) could not be fsynced."""
    for fd, _ in written.files:
        os.close(fd)
    for fd, logged in written.files:
        if fd in bad:
            return Result(False, written.log + [sendlog.warning("fsync", logged)], ())
    return Result(True, written.log, written.channels)


def write_files(unwritten: Iterable[Unwritten], queue: str = ".",
                fsync_all: FsyncAll = fsync_each) -> dict[int, Result]:
    """Create and write the files of several Unwritten entries, their fsyncs handed to fsync_all together
    so they can overlap; return {N: Result}. As in qmail, todo/N may be removed only once its Result is
    ok: every file is fsynced by then."""
    results: dict[int, Result] = {}
    written: list[Written] = []
    for u in unwritten:
        w = create_files(u.n, u.plan, u.log, splitter(queue, u.n))
        if isinstance(w, Written):
            written.append(w)
        else:
            results[u.n] = w
    bad = fsync_all([fd for w in written for fd, _ in w.files]) if written else set()
    for w in written:
        results[w.n] = complete(w, bad)
    return results


class Start(NamedTuple):
    """How a message found in info/ is scheduled when qmail-send starts: state 'skip' (no info/N, or todo/N
    exists), 'chan' with {channel: mtime}, 'done' (no channel file), 'retry' (stat failed)."""
    state: str
    times: dict[str, int]
    log: list[bytes]


def exists(name: str) -> bool:
    """Return True/False for name's existence; raise OSError for anything but ENOENT."""
    try:
        os.stat(name)
    except FileNotFoundError:
        return False
    return True


def schedule_at_start(n: int, queue: str = ".") -> Start:
    """Return the Start for message n, as qmail-send's pqadd: a todo/N means info/local/remote are not trusted."""
    name = os.path.join(queue, split_name("info", n))
    logged = sendlog.split_fn("info", n)
    try:
        if not exists(name):
            return Start("skip", {}, [])
        name, logged = os.path.join(queue, "todo", str(n)), sendlog.flat_fn("todo", n)
        if exists(name):
            return Start("skip", {}, [])  # preprocessing never finished: the todo scan redoes it
        times: dict[str, int] = {}
        for channel in CHANNELS:
            name, logged = os.path.join(queue, split_name(channel, n)), sendlog.split_fn(channel, n)
            try:
                times[channel] = int(os.stat(name).st_mtime)
            except FileNotFoundError:
                pass
    except OSError:
        return Start("retry", {}, [sendlog.warning("stat_later", logged)])
    return Start("chan", times, []) if times else Start("done", {}, [])
