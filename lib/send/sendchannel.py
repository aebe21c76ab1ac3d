"""qmail-send's delivery channels: spawner pipes, delivery slots, jobs and passes (qmail-send(8), passes and
reports; qmail-send.c comm/del/job/pass)."""

from __future__ import annotations

import errno
import os
import time
from collections import deque

from pyqmail.lib.send import bounce, destinations, qmgr, retry, sendlog, verp
from pyqmail.lib.send.channel import CHANNELS, LOCAL
from pyqmail.lib.send.qmgrconf import QMGR
from pyqmail.lib.queue.queue import SPLIT, split_name
from pyqmail.lib.util.fdio import nul_records
from pyqmail.lib.send.sendmessages import SLEEP_ALERT, SLEEP_SYSFAIL, InfoDamaged, read_info
from pyqmail.lib.spawn.spawnproto import BATCH_MAX, encode_batch, encode_request

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable
    from pyqmail.lib.send.qmgrconf import QmgrConfig
    from pyqmail.lib.send.destinations import Entry
    from pyqmail.lib.send.sendstate import SendState
    from pyqmail.lib.send.timequeue import FairQueue

REPORTMAX = 10000  # qmail-send keeps at most this much of a report, whatever the spawner sends


class Job:
    """A message's work in one channel, alive while its pass or any of its deliveries runs. Under qmgr/oqmgr it
    also holds its entries waiting per destination (peers), their rotation and its preemption record (pj)."""
    __slots__ = ("id", "retry", "sender", "numtodo", "hiteof", "dying", "refs", "birth", "peers", "rr", "pj",
                 "live", "messid")

    def __init__(self, id: int, retry_at: int, sender: bytes, dying: bool, birth: int = 0) -> None:
        self.id, self.retry, self.sender, self.dying, self.birth = id, retry_at, sender, dying, birth
        self.messid = b"%d/%d" % (id % SPLIT, id)  # the spawners' name for the message, in every request
        self.numtodo, self.hiteof, self.refs = 0, False, 1
        self.peers: dict[str, deque[destinations.Entry[Job]]] = {}
        self.rr: qmgr.RoundRobin[str] = qmgr.RoundRobin()
        self.pj: qmgr.Job | None = None
        self.live = 0  # entries not selected yet


class Delivery:
    """One delivery a spawner is working on."""
    __slots__ = ("job", "delid", "mpos", "recip")

    def __init__(self, job: Job, delid: int, mpos: int, recip: bytes) -> None:
        self.job, self.delid, self.mpos, self.recip = job, delid, mpos, recip


class Batch:
    """Several deliveries of one job handed to the spawner as one request (one slot, one qmail-remote run); its
    reports come back in the deliveries' order, all with the batch's delnum."""
    __slots__ = ("items", "next")

    def __init__(self, items: list[Delivery]) -> None:
        self.items, self.next = items, 0


def split_reports(buf: bytearray, data: bytes) -> list[bytes]:
    """Add data to the report buffer; return finished reports (delnum byte + text), the NUL excluded."""
    return nul_records(buf, data, REPORTMAX - 1, head=1)  # the first byte is the delivery number, even a NUL


def append_bounce(name: str, text: bytes, log: Callable[[bytes], None]) -> None:
    """Append text to bounce/N and fsync it, sleeping and retrying while that fails, as qmail does: a write cut
    short (a full disk) goes on where it stopped, so no piece of an entry is written twice."""
    fd, done = -1, 0
    try:
        while True:
            try:
                if fd < 0:
                    fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o600)
                while done < len(text):
                    written = os.write(fd, memoryview(text)[done:])
                    if not written:
                        raise OSError("nothing written")
                    done += written
                os.fsync(fd)  # qmail does not; we keep the bounce before the record is marked D
                return
            except OSError:
                log(sendlog.alert("bounce_append"))
                sendlog.flush_log()
                time.sleep(SLEEP_ALERT)
    finally:
        if fd >= 0:
            os.close(fd)


class Channel:
    """The local or remote channel: its spawner, delivery slots, scheduler and the one pass it reads."""

    def __init__(self, send: SendState, name: str, fd_out: int, fd_in: int, concurrency: int,
                 schedule: FairQueue) -> None:
        self.send, self.name, self.fd_out, self.fd_in = send, name, fd_out, fd_in
        self.concurrency, self.schedule = concurrency, schedule
        self.slots: list[Delivery | Batch | None] = [None] * concurrency
        self.used = 0
        self.alive = True
        self.pending = b""  # commands the spawner's pipe has not taken yet
        self.held = 0  # bytes of pending that this step's starts put there (the pipe is free but for them)
        self.reports = bytearray()
        self.job: Job | None = None  # the pass: its job, the channel file's records and the read position
        self.records, self.pos = b"", 0
        self.batch_limit = 1  # recipients per entry under qmgr/oqmgr (remote): batches
        # the qmgr scheduler (remote, control/scheduler qmgr or oqmgr): windows per destination (None: never on)
        self.qmgr = False  # passes put their recipients into self.dests
        self.dests: destinations.Destinations[Job] | None = None
        self.preemptive = False  # control/scheduler qmgr: the job list with preemption; oqmgr: FIFO per destination
        self.slot_policy = qmgr.SlotPolicy()
        self.routes: dict[bytes, bytes] | None = None  # control/smtproutes (remote): destinations are next hops
        self.jobs: list[Job] = []  # qmgr's job list: messages with entries not selected yet, in arrival order
        self.stack: list[tuple[Job, Job]] = []  # (preempting job, the job it preempted), the current one last
        self.debug = False  # control/qmgrdebug: log window changes
        self.backoff: tuple[int, int] | None = None  # (minimal, maximal) backoff instead of qmail's retry schedule
        self.slot_dest: list[str | None] = [None] * concurrency  # a slot's destination under qmgr
        self.slot_feedback: list[int] = [0] * concurrency  # its run's feedback so far
        self.slot_reason: list[bytes] = [b""] * concurrency  # the report that gave it
        os.set_blocking(fd_out, False)

    def configure_qmgr(self, config: QmgrConfig | None, routes: dict[bytes, bytes] | None = None) -> None:
        """Turn the qmgr windows on (a config) or off (None) for the passes to come; what waits goes on. The local
        channel gets a fixed window per user (LOCAL_USER_WINDOW), no feedback, no backoff, no preemption."""
        self.qmgr = config is not None
        self.schedule.fair = self.qmgr  # new and deferred mail take turns
        if config is None:
            self.backoff = None
            return
        local = self.name == LOCAL
        window = destinations.LOCAL_POLICY if local else config.window
        self.preemptive = config.scheduler == QMGR and not local
        self.slot_policy = config.slots
        self.debug = config.debug and not local
        self.routes = None if local else routes
        self.backoff = None if local else (config.minimal_backoff, config.maximal_backoff)
        if self.dests is None:
            self.dests = destinations.Destinations(window, config.dead_cache_size)
        else:
            self.dests.configure(window, config.dead_cache_size)

    def fn(self, id: int) -> str:
        """Return the channel file's path for message id."""
        return split_name(self.name, id)

    def can_deliver(self) -> bool:
        """qmail's del_avail: spawner alive, its pipe free (but for the requests this step holds), a slot free."""
        return self.alive and len(self.pending) == self.held and self.used < self.concurrency

    def hand_over(self, request: bytes) -> None:
        """Hold a request for the spawner: step() writes it at its end with the others it starts."""
        self.pending += request
        self.held = len(self.pending)

    def write_pending(self) -> None:
        """Write as much of the pending commands as the pipe takes (after the log lines before them)."""
        sendlog.flush_log()
        try:
            n = os.write(self.fd_out, self.pending)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno == errno.EPIPE:
                self.died()
            return
        self.pending = self.pending[n:]

    def died(self) -> None:
        """The spawner is gone: no more deliveries here, and qmail-send winds down."""
        if self.alive:
            self.alive = False
            self.send.log(sendlog.alert("lost_spawn"))
            self.send.exitasap = True

    def start_delivery(self, job: Job, mpos: int, recip: bytes, dest: str | None = None) -> None:
        """Hand one recipient to the spawner in a free slot (qmail's del_start)."""
        delnum = self.slots.index(None)
        self.slot_dest[delnum], self.slot_feedback[delnum], self.slot_reason[delnum] = dest, destinations.NONE, b""
        send = self.send
        d = Delivery(job, send.next_delid(), mpos, recip)
        self.slots[delnum] = d
        self.used += 1
        job.refs += 1
        self.hand_over(encode_request(delnum, job.messid, verp.delivery_sender(job.sender, recip), recip))
        send.log(sendlog.starting_delivery(d.delid, job.id, self.name, recip))
        send.log_status()

    def start_batch(self, job: Job, first: tuple[int, bytes], more: list[tuple[int, bytes]],
                    dest: str | None = None) -> None:
        """Hand several recipients to the spawner in one free slot, as one request; log each one's start."""
        delnum = self.slots.index(None)
        self.slot_dest[delnum], self.slot_feedback[delnum], self.slot_reason[delnum] = dest, destinations.NONE, b""
        send = self.send
        items = []
        for mpos, recip in [first] + more:
            items.append(Delivery(job, send.next_delid(), mpos, recip))
        job.numtodo += len(more)
        self.slots[delnum] = Batch(items)
        self.used += 1
        job.refs += 1
        self.hand_over(encode_batch(delnum, job.messid, job.sender, [d.recip for d in items]))
        for d in items:
            send.log(sendlog.starting_delivery(d.delid, job.id, self.name, d.recip))
        send.log_status()

    def read_reports(self) -> None:
        """Read the spawner's reports and act on each finished one (qmail's del_dochan)."""
        try:
            data = os.read(self.fd_in, 4096)
        except OSError:
            return
        if not data:
            self.died()
            return
        for line in split_reports(self.reports, data):
            self.finish(line[0], line[1:])

    def finish(self, delnum: int, report: bytes) -> None:
        """Log a delivery's result, mark its record, note a bounce, release the slot."""
        send = self.send
        entry = self.slots[delnum] if delnum < self.concurrency else None
        if entry is None:
            send.log(sendlog.fixed_warning("report_range"))
            return
        last = True
        if isinstance(entry, Batch):
            d = entry.items[entry.next]
            entry.next += 1
            last = entry.next == len(entry.items)
        else:
            d = entry
        job = d.job
        self.result(d, report)
        name = self.slot_dest[delnum]
        if name is not None:
            kind = destinations.classify(report) if self.name != LOCAL else destinations.NONE
            if kind > self.slot_feedback[delnum] or not self.slot_reason[delnum]:
                self.slot_feedback[delnum], self.slot_reason[delnum] = kind, report
        if not last:
            return  # the batch's slot is still in use: no status change
        if name is not None:
            self.slot_dest[delnum] = None
            self.run_feedback(name, self.slot_feedback[delnum], self.slot_reason[delnum])
        self.close_job(job)
        self.slots[delnum] = None
        self.used -= 1
        send.log_status()

    def result(self, d: Delivery, report: bytes) -> None:
        """Log a recipient's result, note a bounce, mark a finished record done."""
        send = self.send
        job = d.job
        if job.dying:
            report = retry.dying_report(report)
        send.log(sendlog.delivery_result(d.delid, report))
        letter = report[:1]
        if letter != b"K":
            send.inmemory.spill(job.id)  # if kept in memory: a deferral or a bounce needs qmail's files from here on
        if letter == b"D":
            append_bounce("bounce/%d" % job.id, bounce.entry(d.recip, report[1:].split(b"\0", 1)[0],
                                                             send.rewriter.strip_vdom_prepend), send.log)
        if letter in (b"K", b"D"):
            self.mark_done(job.id, d.mpos)
            job.numtodo -= 1

    def run_feedback(self, name: str, kind: int, report: bytes) -> None:
        """Give a finished run's feedback to its destination; a death defers everything waiting for it."""
        assert self.dests is not None
        queue = self.dests.queues.get(name)
        before = queue.window if queue is not None else None
        change = self.dests.feedback(name, kind, report, self.send.recent)
        if self.debug and queue is not None and queue.window != before:
            self.send.log(destinations.window_line(name, queue.window, queue.busy))
        if change == destinations.DIED:
            self.send.log(destinations.dead_line(name, report))
            for entry in self.dests.drain(name):
                job = entry.owner
                job.refs += len(entry.items) - 1  # one for each deferral, instead of the entry's
                for mpos, recip in entry.items:
                    self.defer_dead(job, mpos, recip, report)
                self.selected(entry)
        elif change == destinations.REVIVED:
            self.send.log(destinations.alive_line(name))

    def defer_dead(self, job: Job, mpos: int, recip: bytes, reason: bytes) -> None:
        """Defer a recipient of a dead destination at once, logged as a delivery deferred with the saved reason."""
        d = Delivery(job, self.send.next_delid(), mpos, recip)
        self.send.log(sendlog.starting_delivery(d.delid, job.id, self.name, recip))
        self.result(d, b"Z" + reason[1:])
        self.close_job(job)  # the reference the waiting recipient held

    def mark_done(self, id: int, pos: int) -> None:
        """Turn the record's T into D in place (no fsync: a crash means a second delivery, never a loss)."""
        if self.send.inmemory.mark_done(id, pos):
            return
        name = self.fn(id)
        try:
            fd = os.open(name, os.O_WRONLY)
            try:
                if os.pwrite(fd, b"D", pos) == 1:
                    return
            finally:
                os.close(fd)
        except OSError:
            pass
        self.send.log(sendlog.warning("mark", sendlog.split_fn(self.name, id)))

    def close_job(self, job: Job) -> None:
        """Drop a reference; the last one unlinks a finished channel file or reschedules (qmail's job_close)."""
        job.refs -= 1
        if job.refs > 0:
            return
        send = self.send
        send.jobs_used -= 1
        due = job.retry
        if job.hiteof and not job.numtodo:
            if send.inmemory.finish(job.id):
                return
            send.unlinker.unlink(self.fn(job.id), lambda ok: self.unlinked(job.id, ok))
            return
        self.schedule.add(job.id, due)

    def unlinked(self, id: int, ok: bool) -> None:
        """The finished channel file's unlink is done: if no other channel has work, the message is done."""
        send = self.send
        if not ok:
            send.log(sendlog.warning("unlink_later", sendlog.split_fn(self.name, id)))
            self.schedule.add(id, int(time.time()) + SLEEP_SYSFAIL)
            return
        for other in CHANNELS:
            if other != self.name:
                try:
                    os.stat(split_name(other, id))
                    return  # the other channel still has work (or its file's unlink is still under way)
                except FileNotFoundError:
                    pass
                except OSError:
                    send.log(sendlog.warning("stat", sendlog.split_fn(other, id)))
                    break
        send.pqdone.add(id, int(time.time()))

    def open_pass(self, recent: int) -> Job | None:
        """Start reading the next due message's channel file; return the pass's job, None if there is none."""
        send = self.send
        id = self.schedule.pop_due(recent)
        if id is None:
            return None
        try:
            kept = send.inmemory.read(id)
            if kept is not None:
                records, birth, sender = kept
            else:
                with open(self.fn(id), "rb") as f:
                    records = f.read()
                birth, sender = read_info(id)
        except InfoDamaged:
            # no sender, no delivery and no bounce: retrying every 123 s would only repeat the warning
            if id not in send.info_damaged:
                send.info_damaged.add(id)
                send.log(sendlog.warning("info_no_sender", sendlog.split_fn("info", id)))
            return None  # left out of the schedule: the next start looks again
        except OSError:
            send.log(sendlog.warning("open_later", sendlog.split_fn(self.name, id)))
            self.schedule.add(id, recent + SLEEP_SYSFAIL)
            return None
        send.jobs_used += 1
        if self.backoff is not None:  # qmgr/oqmgr remote: Postfix's exponential backoff
            due = qmgr.next_attempt(recent, birth, *self.backoff)
        else:
            due = retry.next_retry(birth, recent, self.name)
        self.job = Job(id, due, sender, retry.is_dying(birth, recent, send.lifetime), birth)
        self.records, self.pos = records, 0
        return self.job

    def end_pass(self, job: Job, hiteof: bool) -> None:
        """Stop reading the channel file and release the pass's reference on its job."""
        self.job, self.records = None, b""
        job.hiteof = hiteof
        self.close_job(job)

    def step(self, recent: int) -> None:
        """Pass steps (qmail's pass_dochan): open a due message, then start its deliveries while slots are free
        (qmail starts one per turn of its loop; the others would follow in the next turns, each with its own
        select and write); under qmgr, read the message's recipients in and start what the windows allow. The
        requests go to the spawner in one write at the end, after the log lines of their starts."""
        try:
            self.pass_step(recent)
            plain = self.dests is None  # (no destination to revive or resume between two starts)
            while not self.qmgr and self.job is not None and self.can_deliver() and not self.send.exitasap:
                if plain and self.start_next(self.job):
                    continue
                used = self.used
                self.pass_step(recent)
                if self.used == used:
                    break  # a D record, or the pass's end: the next turn goes on
            self.dispatch()
        finally:
            held, self.held = self.held, 0
        if held:
            self.write_pending()

    def start_next(self, job: Job) -> bool:
        """Start the pass's next record if it is a whole T record (pass_step's common step, also taken on its
        own between two starts); False leaves anything else to pass_step."""
        records, pos = self.records, self.pos
        nul = records.find(b"\0", pos)
        if nul <= pos or records[pos] != 0x54:  # `T`
            return False
        self.pos = nul + 1
        job.numtodo += 1
        self.start_delivery(job, pos, records[pos + 1:nul])
        return True

    def pass_step(self, recent: int) -> None:
        """One pass step (qmail's pass_dochan), or a whole pass read in under qmgr."""
        send = self.send
        job = self.job
        if send.exitasap:
            if job is not None and not send.inmemory.owns(job.id):
                self.end_pass(job, False)  # scheduled as at a pass's end, so that persist() writes its retry time
            self.release_waiting()
            return
        if self.dests is not None:
            for name in self.dests.revive_due(recent):
                send.log(destinations.alive_line(name))
            self.dests.resume_due(recent)
        if job is None and self.qmgr and self.dests is not None and not self.dests.has_room():
            return
        if job is None:
            if not send.job_available():
                return
            job = self.open_pass(recent)
            if job is None:
                return
        if self.qmgr:
            self.read_in(job)
            return
        if not self.can_deliver() or self.start_next(job):
            return
        nul = self.records.find(b"\0", self.pos)
        if nul < 0:
            cut = self.pos < len(self.records)  # a last record without its NUL: damaged, never delivered
            if cut:
                send.control.note_damaged(job.id, "last record of %s/%d cut short" % (self.name, job.id))
            self.end_pass(job, not cut)
            return
        kind = self.records[self.pos:self.pos + 1]
        self.pos = nul + 1
        if kind != b"D":
            send.log(sendlog.warning("unknown_chan", sendlog.split_fn(self.name, job.id)))
            send.control.note_damaged(job.id, "unknown record type in %s/%d" % (self.name, job.id))
            self.end_pass(job, False)

    def destination(self, recip: bytes) -> str:
        """Return the destination a recipient waits at: the local user, or the remote next hop or domain."""
        if self.name == LOCAL:
            return destinations.local_user_of(recip)
        return destinations.destination_of(recip, self.routes)

    def read_in(self, job: Job) -> None:
        """Under qmgr/oqmgr: put the whole pass's T records to wait at their destinations as entries (up to the
        recipient limit per entry, one per entry for a VERP sender; a dead destination defers them at once), put
        the job on the job list and end the pass; each waiting entry holds a reference on the job."""
        assert self.dests is not None
        dests = self.dests
        hiteof = True
        limit = min(self.batch_limit, BATCH_MAX)
        groups: dict[str, list[tuple[int, bytes]]] = {}
        while True:
            nul = self.records.find(b"\0", self.pos)
            if nul < 0:
                if self.pos < len(self.records):  # a last record without its NUL: damaged, never delivered
                    self.send.control.note_damaged(job.id, "last record of %s/%d cut short" % (self.name, job.id))
                    hiteof = False
                break
            record, mpos = self.records[self.pos:nul], self.pos
            self.pos = nul + 1
            kind = record[:1]
            if kind == b"T":
                recip = record[1:]
                job.numtodo += 1
                name = self.destination(recip)
                if dests.is_dead(name):
                    job.refs += 1
                    self.defer_dead(job, mpos, recip, dests.reason(name))
                else:
                    groups.setdefault(name, []).append((mpos, recip))
            elif kind != b"D":
                self.send.log(sendlog.warning("unknown_chan", sendlog.split_fn(self.name, job.id)))
                self.send.control.note_damaged(job.id, "unknown record type in %s/%d" % (self.name, job.id))
                hiteof = False
                break
        for name, items in groups.items():
            per = limit if verp.delivery_sender(job.sender, items[0][1]) == job.sender else 1  # VERP: one each
            peer: deque[Entry[Job]] = deque()
            for i in range(0, len(items), per):
                entry = destinations.Entry(job, name, items[i:i + per])
                peer.append(entry)
                dests.add(entry)
                job.refs += 1
            job.peers[name] = peer
            job.rr.add(name)
            job.live += len(peer)
        if job.live:
            job.pj = qmgr.Job(str(job.id), job.live, job.live, job.birth)
            self.jobs.append(job)
        self.end_pass(job, hiteof)

    def dispatch(self) -> None:
        """Under qmgr/oqmgr: start deliveries while a slot is free: the next entry the scheduler selects."""
        dests = self.dests
        if dests is None:
            return
        while self.can_deliver() and not self.send.exitasap and dests.ready():
            entry = self.select_preemptive() if self.preemptive else self.select_fifo()
            if entry is None:
                return
            self.start_entry(entry)

    def select_fifo(self) -> Entry[Job] | None:
        """oqmgr: the oldest entry of the next destination in the round robin with room in its window."""
        assert self.dests is not None
        name = self.dests.pick()
        if name is None:
            return None
        entry = self.dests.pop(name)
        self.selected(entry)
        return entry

    def job_entry(self, job: Job) -> Entry[Job] | None:
        """Return (and take) a job's next entry: round robin over its destinations with room, or None."""
        dests = self.dests
        assert dests is not None

        def ready(name: str) -> bool:
            peer = job.peers[name]
            while peer and peer[0].taken:
                peer.popleft()
            return bool(peer) and dests.can_start(name)
        name = job.rr.pick(ready)
        if name is None:
            return None
        entry = job.peers[name].popleft()
        dests.take(entry)
        dests.compact(name)
        return entry

    def select_preemptive(self) -> Entry[Job] | None:
        """qmgr: walk the job list from the current job (after trying a preemption), the first job with an entry
        whose destination has room gives it; an entry of the current job earns it a slot (reference §7.4)."""
        if not self.jobs:
            return None
        current = self.stack[-1][0] if self.stack else self.jobs[0]
        cur = current.pj
        assert cur is not None
        policy = self.slot_policy
        if qmgr.may_try_preemption(cur, policy):
            for job in self.jobs:
                assert job.pj is not None
                job.pj.blocker = not self.has_room_for(job)
            pjs = [j.pj for j in self.jobs if j.pj is not None]
            chosen = qmgr.preempt(pjs, cur, policy, self.send.recent)
            if chosen is not cur:
                winner = next(j for j in self.jobs if j.pj is chosen)
                self.jobs.remove(winner)
                self.jobs.insert(self.jobs.index(current), winner)
                self.stack.append((winner, current))
                self.send.log(sendlog.preempted(current.id, winner.id, self.name, qmgr.expected_slots(chosen)))
                current, cur = winner, chosen
        for job in self.jobs[self.jobs.index(current):]:
            entry = self.job_entry(job)
            if entry is not None:
                assert job.pj is not None
                qmgr.select_entry(job.pj, cur)
                self.selected(entry)
                return entry
        return None

    def has_room_for(self, job: Job) -> bool:
        """True if some destination of the job with a waiting entry has room (else the job is a blocker)."""
        dests = self.dests
        assert dests is not None
        return any(dests.can_start(name) and any(not e.taken for e in peer) for name, peer in job.peers.items())

    def selected(self, entry: Entry[Job]) -> None:
        """An entry left its job's waiting entries: retire the job from the job list when none is left."""
        job = entry.owner
        job.live -= 1
        if job.live > 0:
            return
        if job in self.jobs:
            self.jobs.remove(job)
        for i, (winner, victim) in enumerate(self.stack):
            if winner is job:  # a preempting job done: the job it preempted may be preempted again
                del self.stack[i]
                if victim.pj is not None:
                    victim.pj.stacked = False
                break
        job.peers.clear()

    def start_entry(self, entry: Entry[Job]) -> None:
        """Start one run for an entry's recipients (one request, or a batch)."""
        job, items, name = entry.owner, entry.items, entry.dest
        assert self.dests is not None
        self.dests.started(name)
        if len(items) == 1:
            self.start_delivery(job, items[0][0], items[0][1], name)
        else:
            job.numtodo -= len(items) - 1  # start_batch counts the others itself
            self.start_batch(job, items[0], items[1:], name)
        job.refs -= 1  # the entry's reference, now one for the run

    def flush_dead(self) -> None:
        """Forget every dead destination (the F trigger): each is alive again, logged as after its backoff."""
        if self.dests is None:
            return
        for name in self.dests.flush_dead():
            self.send.log(destinations.alive_line(name))

    def withdraw(self, id: int) -> None:
        """Take message id's entries still waiting at destinations out (qmail-qctl hold, delete, requeue): they
        are released as at exit, so the job leaves the job list and, with its last reference, is rescheduled."""
        dests = self.dests
        if dests is None:
            return
        for job in [j for j in self.jobs if j.id == id]:
            entries = [e for peer in job.peers.values() for e in peer if not e.taken]
            for entry in entries:
                dests.take(entry)
                dests.compact(entry.dest)
                self.selected(entry)
                self.close_job(job)  # the reference the waiting entry held
            for name in {e.dest for e in entries}:
                dests.drop_if_idle(name)

    def release_waiting(self) -> None:
        """At exit: let go of the entries still waiting (their messages are scheduled as after a pass)."""
        if self.dests is None:
            return
        for entry in self.dests.drain_all():
            entry.owner.live -= 1
            self.close_job(entry.owner)
        self.jobs, self.stack = [], []

    def busy(self) -> bool:
        """True if a pass could do something right now (the loop must not sleep)."""
        if self.dests is not None and self.dests.count and self.can_deliver() and self.dests.ready():
            return True
        return self.job is not None and self.can_deliver()

    def persist(self, log: Callable[[bytes], None]) -> None:
        """At exit: store each scheduled time as the channel file's mtime (qmail's pqfinish)."""
        for id, due in self.schedule.drain():
            if self.send.inmemory.owns(id):
                continue  # no file: todo/N brings it back at the next start
            try:
                os.utime(self.fn(id), (due, due))
            except OSError:
                log(sendlog.warning("utime", sendlog.split_fn(self.name, id)))
