"""qmail-send's message life outside the channels: todo scans, bounces, end of message, clean-up (qmail-send(8),
the loop)."""

from __future__ import annotations

import collections
import functools
import os
import stat
import time
from itertools import filterfalse

from pyqmail.lib.send import bounce, sendlog, todo
from pyqmail.lib.send.qmgr import collapse_triggers
from pyqmail.lib.send.channel import CHANNELS, REMOTE
from pyqmail.lib.queue.queuehere import open_queue
from pyqmail.lib.queue.queue import SPLIT, split_name
from pyqmail.lib.util.regularfile import open_regular

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from concurrent.futures import Future, ThreadPoolExecutor
    from pyqmail.lib.send.sendstate import SendState

    Outcome = todo.Result | todo.Kept  # what became of a todo entry read in the loop

SLEEP_TODO = 1500
SLEEP_NOTRIGGER = 10  # without a usable lock/trigger, todo/ is listed this often instead (not qmail's 1500 s)
SLEEP_CLEANUP = 76431
SLEEP_SYSFAIL = 123  # retry after trouble with a file
SLEEP_ALERT = 10  # pause after an alert that needs the administrator
RESCAN_REST = 9  # a listing of todo/ is followed by 9 times its cost without another one
TODO_BATCH = 16  # todo entries preprocessed per round, their fsyncs overlapped (qmail: one, fsynced in turn)
FSYNC_THREADS = 8
OSSIFIED = 129600  # 36 hours: longer than qmail-queue's 24-hour limit, so no injection still owns it
TRIGGER = "lock/trigger"
TRIGGER_READ = 512  # bytes read from the trigger per round: requests collapse, so more would say nothing new


class InfoDamaged(OSError):
    """info/N was read but holds no F record: trying again cannot help."""


def read_info(id: int) -> tuple[int, bytes]:
    """Return (birth, sender) from info/N: its mtime and its F record; OSError if unreadable, InfoDamaged if
    it has no F record."""
    with open(split_name("info", id), "rb") as f:
        birth = int(os.fstat(f.fileno()).st_mtime)
        data = f.read()
    nul = data.find(b"\0")
    if nul < 0 or data[:1] != b"F":
        raise InfoDamaged("info has no sender")
    return birth, data[1:nul]


def is_number(name: str) -> bool:
    """True for a queue file's name: ASCII digits only (str.isdigit alone also takes `²`, which int refuses)."""
    return name.isdigit() and name.isascii()


def is_queue_name(name: str) -> bool:
    """True for a name qmail-queue makes: a number without a leading zero (`0028` is a stray copy of 28's)."""
    return is_number(name) and name[0] != "0"


def numeric_names(directory: str) -> Iterator[int]:
    """Yield the numeric entries of one directory as ints (none if it cannot be read)."""
    try:
        entries = os.scandir(directory)
    except OSError:
        return
    yield from numeric_entries(entries)


def split_names(directory: str) -> Iterator[int]:
    """Yield the numeric entries of directory/0 … directory/22, in qmail's order; a name that is not where
    split_name puts its number (`info/3/28`, `info/5/0028`: a stray copy) is left alone, as qmail does not: its
    message would be scheduled twice, and delivered twice."""
    for i in range(SPLIT):
        for n in numeric_names("%s/%d" % (directory, i)):
            if n % SPLIT == i:
                yield n


def numeric_entries(entries: os._ScandirIterator[str]) -> Iterator[int]:
    """Yield the numeric names of an open os.scandir iterator as ints, lazily, and close it (is_queue_name)."""
    with entries:
        for entry in entries:
            if is_queue_name(entry.name):
                yield int(entry.name)


class Todo:
    """The todo scan: on a trigger or every SLEEP_TODO seconds, batches of up to TODO_BATCH todo entries,
    read and planned in the loop (a message kept in memory needs no more), their files created and fsynced in a
    thread while the loop goes on; a message is scheduled only after qmail-clean's answer. A todo/N that
    fails is logged once: tried again at each scan (qmail's way) but silent while it fails the same way,
    and not even read again while a damaged one (todo.Result.aside) is unchanged."""

    def __init__(self, send: SendState) -> None:
        self.send = send
        self.trigger = -1
        self.cleaning: set[int] = set()  # preprocessed; qmail-clean has not answered for todo/N yet
        self.gone: set[int] = set()  # todo/N removed while this scan's directory listing may still name it
        self.scan: Iterator[int] | None = None
        # ids of this listing taken back while the messages kept in memory left no room
        self.pending: collections.deque[int] = collections.deque()
        # id -> (todo.Result.aside, its log lines) of a todo/N whose last try failed
        self.failing: dict[int, tuple[todo.StatKey | None, bytes]] = {}
        self.next_run = 0  # scan at once when starting
        self.pull_pending = False  # an I request read from the trigger, no listing started since
        self.fsyncer: ThreadPoolExecutor | None = None  # threads for fsync_all, started at the first batch
        # the thread a batch is preprocessed in, off the loop (creates and fsyncs block)
        self.batcher: ThreadPoolExecutor | None = None
        self.inflight: Future[dict[int, todo.Result]] | None = None  # that batch's Future
        self.rest_until = 0.0  # monotonic time before which a pull does not start another listing
        self.done_r, self.done_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.trigger_trouble: str | None = None  # why lock/trigger is not selected on (logged once)
        self.reopen_trigger()

    def reopen_trigger(self) -> None:
        """Close and reopen lock/trigger, so that it selects readable only after the next pull. One that cannot
        be opened, or is no FIFO (a file or a directory reads at once: the loop would list todo/ without end),
        is not selected on; that is logged once, until it changes."""
        if self.trigger >= 0:
            os.close(self.trigger)
        trouble = None
        try:
            self.trigger = os.open(TRIGGER, os.O_RDONLY | os.O_NONBLOCK)
            if not stat.S_ISFIFO(os.fstat(self.trigger).st_mode):
                os.close(self.trigger)
                self.trigger, trouble = -1, "trigger_kind"
        except OSError:
            self.trigger, trouble = -1, "trigger_open"
        if trouble != self.trigger_trouble and trouble is not None:
            self.send.log(sendlog.warning(trouble, TRIGGER.encode()))
        self.trigger_trouble = trouble

    def read_trigger(self) -> tuple[str, ...]:
        """The trigger is readable: read its bytes and return the requests (qmgr.collapse_triggers: A, F, D, I in
        that order, each once; qmail's own byte, a NUL, and W mean I). End of file alone (writers gone) is I. A
        read without I reopens the FIFO at once, so that its end of file does not read as a pull."""
        try:
            data = os.read(self.trigger, TRIGGER_READ)
        except BlockingIOError:
            return ()
        except OSError:
            data = b""
        requests = collapse_triggers(data) if data else ("I",)
        if "I" in requests:
            self.pull_pending = True  # until a listing starts: a pull read during a scan is not lost
        else:
            self.reopen_trigger()
        return requests

    def resting(self) -> float:
        """Seconds left before a pull may start the next listing of todo/, or the next entry be taken while
        the messages kept in memory make them wait (0 when it may now)."""
        return max(0.0, self.rest_until - time.monotonic(), self.send.inmemory.intake_pause())

    def wakeup(self, wake: int) -> int:
        """Return the earliest time the todo scan needs the loop (0 while scanning, unless a batch runs)."""
        if self.inflight is not None or self.send.inmemory.intake_pause():
            return wake  # done_r wakes the loop; or a message leaving the memory, or the end of its stall
        if self.pull_pending and not self.resting():
            return 0
        return 0 if self.scan is not None or self.pending else min(wake, self.next_run)

    def step(self, pulled: bool, recent: int) -> None:
        """Preprocess up to TODO_BATCH todo entries; start a scan when it is due."""
        send = self.send
        if self.inflight is not None:
            return  # one batch at a time: finish_batch takes its results
        if send.inmemory.intake_pause():
            return  # the scan goes on, and a pull is seen, once a message leaves the memory
        if self.scan is None and not self.pending:
            pulled = pulled or (self.pull_pending and not self.resting())
            if not pulled and recent < self.next_run:
                return
            self.pull_pending = False
            self.reopen_trigger()
            began = time.monotonic()
            try:
                names = os.listdir("todo")
            except OSError:
                send.log(sendlog.unable_to_opendir("todo"))
                sendlog.flush_log()
                time.sleep(SLEEP_ALERT)  # qmail's pausedir; the scan is tried again next round
                return
            self.gone = set()
            # messages kept in memory keep their todo/N: every scan meets them, so they are left out here at once,
            # by name, before any name is converted (a queue name is its number's str(): the same ones go)
            cleaning = {str(n) for n in self.cleaning}
            fresh = filterfalse(send.inmemory.names.__contains__, filterfalse(cleaning.__contains__, names))
            listed = [int(s) for s in fresh if is_queue_name(s)]
            if self.failing:
                self.forget_removed(set(listed))
            self.scan = iter(listed)
            self.next_run = recent + (SLEEP_TODO if self.trigger >= 0 else SLEEP_NOTRIGGER)
            # messages kept in memory stay in todo/, so a listing can cost milliseconds; pulls come once per
            # message: the next listing waits RESCAN_REST times this one's cost, so that listing takes
            # at most a tenth of the loop's time (a new message then waits that long, at most)
            now = time.monotonic()
            self.rest_until = now + RESCAN_REST * (now - began)
        ids: list[int] = []
        room = send.inmemory.room()
        # while the store is filling, no more entries are taken than it has room for: taken and put back, the
        # others cost their checks in every round for as long as a backlog lasts
        limit = room if room < TODO_BATCH and send.inmemory.moving() else TODO_BATCH
        while len(ids) < limit:
            if self.pending:
                id: int | None = self.pending.popleft()
            else:
                id = next(self.scan, None) if self.scan is not None else None
            if id is None:
                self.scan = None
                break
            if id not in self.cleaning and id not in self.gone and not send.inmemory.owns(id) \
                    and not self.set_aside(id):
                ids.append(id)  # (else qmail-clean has not answered yet, it is being delivered from memory, or damaged)
        results: dict[int, Outcome] = {}
        unwritten: list[todo.Unwritten] = []
        for i, id in enumerate(ids):  # reading and planning is quick: here; files and fsyncs: in the thread
            if room <= 0 and send.inmemory.moving():  # the rest waits for room, in todo/
                self.pending.extendleft(reversed(ids[i:]))  # not a chain around the scan: those nest
                break
            r = todo.prepare(id, send.rewriter, keep=room > 0, keep_remote=send.channels[REMOTE].qmgr)
            if isinstance(r, todo.Unwritten):
                unwritten.append(r)
            else:
                results[id] = r
                room -= isinstance(r, todo.Kept)
        self.take(results)
        if not unwritten:
            return
        if self.batcher is None:
            from concurrent.futures import ThreadPoolExecutor
            self.batcher = ThreadPoolExecutor(1)
        self.inflight = self.batcher.submit(self.run_batch, unwritten)

    def run_batch(self, unwritten: list[todo.Unwritten]) -> dict[int, todo.Result]:
        """In the batch thread: write and fsync the files, then wake the loop; return {id: Result}."""
        try:
            return todo.write_files(unwritten, fsync_all=self.fsync_all)
        finally:
            os.write(self.done_w, b"+")

    def set_aside(self, id: int) -> bool:
        """True if todo/N was found damaged and has not changed since: it is not read again."""
        failed = self.failing.get(id)
        if failed is None or failed[0] is None:
            return False
        try:
            return todo.stat_key(os.stat("todo/%d" % id)) == failed[0]
        except OSError:
            return False  # then the try says what is wrong

    def forget_removed(self, present: set[int]) -> None:
        """Forget failing entries whose todo/N is no longer listed (removed by hand)."""
        self.failing = {id: f for id, f in self.failing.items() if id in present}

    def news(self, id: int, result: Outcome) -> bytes:
        """Return the lines to log for an entry's result: none if it failed just as at its last try."""
        lines = b"".join(result.log)
        if isinstance(result, todo.Kept) or result.ok:
            self.failing.pop(id, None)
            return lines
        before = self.failing.get(id)
        self.failing[id] = (result.aside, lines)
        return b"" if before is not None and before[1] == lines else lines

    def take(self, results: Mapping[int, Outcome]) -> None:
        """Log each entry's lines (a failure once); keep those to be kept in memory, hand the good ones' todo/N
        to qmail-clean."""
        for id, result in results.items():
            self.send.log(self.news(id, result))
            if isinstance(result, todo.Kept):
                self.send.inmemory.add(result, int(time.time()))
            elif result.ok:
                self.remove(id, then=functools.partial(self.schedule, id, result.channels))
            elif result.aside is not None and self.send.control.set_aside(id, damage(result.log), foop=False):
                self.failing.pop(id, None)  # damaged: moved to corrupt/, never retried

    def finish_batch(self) -> None:
        """In the loop, once done_r is readable: log each entry and hand the good ones to qmail-clean."""
        try:
            os.read(self.done_r, 16)
        except BlockingIOError:
            pass
        if self.inflight is None:
            return
        future, self.inflight = self.inflight, None
        # the byte is written just before the batch returns: wait for that moment, never skip the batch.
        # An unexpected exception surfaces here, as an internal error.
        self.take(future.result())

    def fsync_all(self, fds: list[int]) -> set[int]:
        """fsync the batch's files from several threads at once, so that one journal commit serves many."""
        if len(fds) < 2:
            return todo.fsync_each(fds)
        if self.fsyncer is None:
            from concurrent.futures import ThreadPoolExecutor
            self.fsyncer = ThreadPoolExecutor(FSYNC_THREADS)
        return set().union(*self.fsyncer.map(todo.fsync_each, [[fd] for fd in fds]))

    def remove(self, id: int, then: Callable[[], None] | None = None) -> None:
        """Hand todo/N to qmail-clean, the scan leaving it alone meanwhile; call then() once it is gone. If
        qmail-clean cannot remove it, todo/N stays and the next scan preprocesses the message again."""
        def cleaned(ok: bool) -> None:
            self.cleaning.discard(id)
            if ok:
                self.gone.add(id)
                if then is not None:
                    then()
        self.cleaning.add(id)
        self.send.clean.ask("todo/%d" % id, cleaned)

    def schedule(self, id: int, channels: Iterable[str]) -> None:
        """todo/N is gone: the message's channels may start at once (with none, it is done)."""
        now = int(time.time())
        for name in channels:
            self.send.channels[name].schedule.add_new(id, now)
        if not channels:
            self.send.pqdone.add(id, now)


def damage(lines: list[bytes]) -> str:
    """Return why a todo entry is damaged: its last log line (the warning), without `warning: `."""
    last = lines[-1].rstrip(b"\n") if lines else b"damaged"
    return last.split(b": ", 1)[-1].decode("ascii", "replace")


def inject_bounce(send: SendState, id: int) -> bool:
    """Queue the bounce for bounce/N if there is one and remove it; False means try again later."""
    name = "bounce/%d" % id
    try:
        os.stat(name)
    except FileNotFoundError:
        return True
    except OSError:
        send.log(sendlog.warning("stat", sendlog.flat_fn("bounce", id)))
        return False
    try:
        _, sender = read_info(id)
    except OSError:
        return False
    plan = bounce.plan(sender, send.bounce_controls)
    if plan.kind == bounce.TRIPLE:
        send.log(sendlog.triple_bounce(id))
    else:
        assert plan.sender is not None and plan.recipient is not None  # only a TRIPLE bounce has none
        try:
            qq = open_queue(send.home)
        except OSError:
            send.log(sendlog.fixed_warning("start_qq"))
            return False
        try:
            # mess/N belongs to the queue's owner, not to us: never a FIFO to wait on, nor a link to follow
            with open(name, "rb") as text, open(open_regular(split_name("mess", id)), "rb") as mess:
                # bounce/N in pieces, as the message: its reports (10,000 recipients, up to 10 kB each from a
                # hostile server) never sit in qmail-send's memory at once
                qq.put(bounce.header(plan, send.bounce_controls, time.time()))
                for chunk in iter(lambda: text.read(65536), b""):
                    qq.put(chunk)
                qq.put(bounce.trailer(plan))
                for chunk in iter(lambda: mess.read(65536), b""):
                    qq.put(chunk)
        except OSError:
            qq.fail()
        if qq.close(plan.sender, [plan.recipient]):
            send.log(sendlog.fixed_warning("inject"))
            return False
        send.log(sendlog.bounce_msg(id, qq.pid))
    try:
        os.unlink(name)
    except OSError:
        send.log(sendlog.warning("unlink", sendlog.flat_fn("bounce", id)))
        return False
    return True


def still_there(send: SendState, names: Iterable[tuple[str, int, bytes]]) -> bool | None:
    """Return True if any of names exists, None after logging a stat failure, False if all are gone."""
    for directory, id, logged in names:
        try:
            os.stat(directory)
            return True
        except FileNotFoundError:
            continue
        except OSError:
            send.log(sendlog.warning("stat_later", logged))
            return None
    return False


def message_done(send: SendState, id: int) -> None:
    """The message has no channel work left: bounce, log `end msg`, remove info/N, have mess/N removed."""
    if send.unlinker.busy(split_name("info", id)):
        return  # a second pqdone entry while its info/N is being unlinked: that one ends the message
    names = [(split_name(c, id), id, sendlog.split_fn(c, id)) for c in CHANNELS]
    names.append(("todo/%d" % id, id, sendlog.flat_fn("todo", id)))
    busy = still_there(send, names)
    if busy is None:
        return send.pqdone.add(id, int(time.time()) + SLEEP_SYSFAIL)
    if busy:
        return  # a false alarm: work remains
    info = still_there(send, [(split_name("info", id), id, sendlog.split_fn("info", id))])
    if info is None or (info and not inject_bounce(send, id)):
        return send.pqdone.add(id, int(time.time()) + SLEEP_SYSFAIL)
    if not info:
        return
    send.log(sendlog.end_msg(id))

    def unlinked(ok: bool) -> None:
        if not ok:
            send.log(sendlog.warning("unlink_later", sendlog.split_fn("info", id)))
            return send.pqdone.add(id, int(time.time()) + SLEEP_SYSFAIL)
        send.clean.ask("foop/%d" % id)
    send.unlinker.unlink(split_name("info", id), unlinked)


class Cleanup:
    """Every SLEEP_CLEANUP seconds walk mess/, one entry per round, and remove debris of dead injections."""

    def __init__(self, send: SendState) -> None:
        self.send = send
        self.scan: Iterator[int] | None = None
        self.next_run = 0

    def wakeup(self, wake: int) -> int:
        """Return the earliest time the clean-up needs the loop."""
        return min(wake, self.next_run) if self.scan is None else 0

    def step(self, recent: int) -> None:
        """Look at one mess/ entry: old, with neither info/N nor todo/N, means an injection died."""
        if self.scan is None:
            if recent < self.next_run:
                return
            self.scan = split_names("mess")
        id = next(self.scan, None)
        if id is None:
            self.scan = None
            self.next_run = recent + SLEEP_CLEANUP
            return
        try:
            if recent <= os.stat(split_name("mess", id)).st_atime + OSSIFIED:
                return
        except OSError:
            return
        for name in (split_name("info", id), "todo/%d" % id, "hold/%d" % id):  # a held message keeps mess/N
            try:
                os.stat(name)
                return
            except FileNotFoundError:
                continue
            except OSError:
                return
        self.send.clean.ask("foop/%d" % id)
