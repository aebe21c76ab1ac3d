"""qmail-send: schedule and hand out deliveries, bounce failures, log it all (qmail-send(8),
docs/qmail-send-design.md).

Descriptors, set up by qmail-start: 0 log output, 1 → qmail-lspawn, 2 ← qmail-lspawn,
3 → qmail-rspawn, 4 ← qmail-rspawn, 5 → qmail-clean, 6 ← qmail-clean.
"""

from __future__ import annotations

import os
import select
import signal
import time

from pyqmail.lib.send import destinations, qmgrconf, sendlog, todo
from pyqmail.lib.send.channel import LOCAL, REMOTE
from pyqmail.lib.send.sendchannel import Channel
from pyqmail.lib.send.sendclean import Clean
from pyqmail.lib.send.sendcontrol import Control
from pyqmail.lib.send.inmemory import InMemory
from pyqmail.lib.send.sendlog import flush_log, log
from pyqmail.lib.send.sendmessages import SLEEP_SYSFAIL, Cleanup, Todo, message_done, split_names
from pyqmail.lib.send.sendstart import FDS, Stop, reread, start
from pyqmail.lib.send.timequeue import FairQueue, TimeQueue
from pyqmail.lib.send.unlinker import Unlinker

MYPY = False
if MYPY:  # typing only: never imported at run time
    from pyqmail.lib.send.bounce import BounceControls
    from pyqmail.lib.send.rewrite import Rewriter

SLEEP_FOREVER = 86400
SLEEP_FUZZ = 1


class Send:
    """Everything qmail-send holds in memory."""

    def __init__(self, home: str, settings: dict[str, int], rewriter: Rewriter, bounce_controls: BounceControls,
                 limits: dict[str, int]) -> None:
        self.home, self.rewriter, self.bounce_controls = home, rewriter, bounce_controls
        self.lifetime = settings["lifetime"]
        self.log = log
        self.exitasap = False
        self.recent = int(time.time())
        self.delid = 0
        self.pqdone, self.pqfail = TimeQueue(), TimeQueue()
        self.channels: dict[str, Channel] = {}
        for name, (fd_out, fd_in) in FDS.items():
            self.channels[name] = Channel(self, name, fd_out, fd_in, min(settings[name], limits[name]), FairQueue())
        self.numjobs = sum(c.concurrency for c in self.channels.values())
        self.jobs_used = 0
        self.clean = Clean(self, 5, 6)
        self.unlinker = Unlinker()
        self.todo = Todo(self)
        self.inmemory = InMemory(self)
        self.cleanup = Cleanup(self)
        self.info_damaged: set[int] = set()  # info/N without a sender: warned once, then moved to corrupt/
        self.control = Control(self)  # qmail-qctl's requests (lock/qctl/socket) and damaged messages
        self.status_lines: dict[tuple[int, int, int, int, bool], bytes] = {}  # at most 121 x 121 x 2 of them
        self.read_batching()

    def read_batching(self) -> None:
        """Unless control/scheduler is qmail: batch remote recipients (qmgrrecipientlimit per qmail-remote run)
        and give each destination a qmgr concurrency window (destinations.py)."""
        try:
            config = None if qmgrconf.read_scheduler() == qmgrconf.QMAIL else qmgrconf.read()
            routes = qmgrconf.read_routes() if config is not None else None
        except OSError:
            return  # unreadable: as it was (qmail's one recipient per delivery at start)
        remote = self.channels[REMOTE]
        remote.batch_limit = 1 if config is None else config.recipient_limit
        remote.configure_qmgr(config, routes)
        self.channels[LOCAL].configure_qmgr(config)  # round robin per user

    def next_delid(self) -> int:
        """Return the next delivery number (1, 2, 3, … per run)."""
        self.delid += 1
        return self.delid

    def job_available(self) -> bool:
        """True if another job may be opened (under qmgr, messages waiting at destinations count beyond
        qmail's number, up to destinations.ACTIVE_JOBS more)."""
        extra = destinations.ACTIVE_JOBS if self.channels[REMOTE].dests is not None else 0
        return self.jobs_used < self.numjobs + extra

    def log_status(self) -> None:
        """Log the `status:` line (two per delivery: each distinct line is formatted once, then reused)."""
        local, remote = self.channels[LOCAL], self.channels[REMOTE]
        key = (local.used, local.concurrency, remote.used, remote.concurrency, self.exitasap)
        line = self.status_lines.get(key)
        if line is None:
            line = self.status_lines[key] = sendlog.status(*key)
        log(line)

    def schedule_at_start(self) -> None:
        """Put every message in info/ into its channels' schedules, as qmail's pqstart."""
        for id in split_names("info"):
            self.schedule_one(id)

    def schedule_one(self, id: int) -> None:
        """Schedule a message found in info/ (qmail's pqadd): its channels at their mtimes, or done."""
        start = todo.schedule_at_start(id)
        log(b"".join(start.log))
        if start.state == "chan":
            for name, due in start.times.items():
                self.channels[name].schedule.add(id, due)
        elif start.state == "done":
            self.pqdone.add(id, int(time.time()))
        elif start.state == "retry":
            self.pqfail.add(id, int(time.time()) + SLEEP_SYSFAIL)

    def can_exit(self) -> bool:
        """True when terminating and no live spawner has a delivery running."""
        return self.exitasap and not any(c.alive and c.used for c in self.channels.values()) and self.unlinker.idle()

    def triggered(self, recent: int) -> bool:
        """Act on the requests read from lock/trigger (qmgr(8)'s): A runs every schedule now (as ALRM), F forgets
        the dead destinations, D and W only wake the loop; return True if todo/ is to be scanned (I)."""
        requests = self.todo.read_trigger()
        if "A" in requests:
            for c in self.channels.values():
                c.schedule.run_all_now(recent)
        if "F" in requests:
            for c in self.channels.values():
                c.flush_dead()
        return "I" in requests

    def round(self, flags: dict[str, bool], wake_r: int) -> None:
        """One turn of qmail-send's loop: compute the wakeup, select, then do each kind of work once."""
        recent = self.recent = int(time.time())
        if flags.pop("alrm", None):
            for c in self.channels.values():
                c.schedule.run_all_now(recent)
        if flags.pop("hup", None):
            self.rewriter = reread(self.home, self.rewriter)
            self.read_batching()
        wake = recent + SLEEP_FOREVER
        rfds, wfds = [wake_r], []
        for c in self.channels.values():
            if c.pending and c.alive:
                wfds.append(c.fd_out)
            if c.alive:
                rfds.append(c.fd_in)
        if self.clean.waiting:
            rfds.append(self.clean.fd_in)
        if not self.unlinker.idle():
            rfds.append(self.unlinker.done_r)
        rfds += self.control.fds()
        wake = self.control.wakeup(wake, recent)
        rest = 0.0
        if not self.exitasap:
            if any(c.busy() for c in self.channels.values()):
                wake = 0
            elif self.job_available():
                for c in self.channels.values():
                    due = c.schedule.next_due()
                    if c.job is None and due is not None:
                        wake = min(wake, due)
            dests = self.channels[REMOTE].dests
            revival = dests.next_event() if dests is not None else None
            if revival is not None:
                wake = min(wake, int(revival))
            for q in (self.pqfail, self.pqdone):
                due = q.next_due()
                if due is not None:
                    wake = min(wake, due)
            rest = self.todo.resting()
            if self.todo.inflight is not None:
                rfds.append(self.todo.done_r)  # a pull meanwhile stays readable in the trigger until then
            elif self.todo.trigger >= 0 and not rest:
                rfds.append(self.todo.trigger)  # (while resting, a pull stays readable until the rest ends)
            wake = self.todo.wakeup(wake)
            wake = self.cleanup.wakeup(wake)
        timeout: float = 0 if wake <= recent else wake - recent + SLEEP_FUZZ
        if rest:
            timeout = min(timeout, rest)
        self.clean.flush()  # and the log before it: nothing waits in a buffer while qmail-send sleeps
        try:
            ready_r, ready_w, _ = select.select(rfds, wfds, [], timeout)
        except OSError:
            log(sendlog.fixed_warning("select"))
            return
        if wake_r in ready_r:
            os.read(wake_r, 512)
        recent = self.recent = int(time.time())
        for c in self.channels.values():
            if c.fd_out in ready_w:
                c.write_pending()
            if c.fd_in in ready_r:
                c.read_reports()
        if self.clean.fd_in in ready_r:
            self.clean.read_answers()
        if self.unlinker.done_r in ready_r:
            self.unlinker.run_finished()
        if self.todo.done_r in ready_r:
            self.todo.finish_batch()
        if not self.exitasap:
            self.todo.step(self.todo.trigger in ready_r and self.triggered(recent), recent)
        for c in self.channels.values():
            c.step(recent)
        self.control.step(ready_r, recent)
        id = self.pqfail.pop_due(recent)
        if id is not None:
            self.schedule_one(id)
        id = self.pqdone.pop_due(recent)
        if id is not None:
            message_done(self, id)
        if not self.exitasap:
            self.cleanup.step(recent)


def serve(send: Send) -> int:
    """Run the loop until TERM has been handled, then persist retry times and say so."""
    flags: dict[str, bool] = {}
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGALRM, lambda *_: flags.__setitem__("alrm", True))
    signal.signal(signal.SIGHUP, lambda *_: flags.__setitem__("hup", True))

    def term(*_: object) -> None:
        send.exitasap = True
    signal.signal(signal.SIGTERM, term)
    send.schedule_at_start()
    send.log_status()
    while not send.can_exit():
        send.round(flags, wake_r)
    send.control.shutdown()  # (before persisting: a waiting request's schedule entries go back first)
    for c in send.channels.values():
        c.release_waiting()  # recipients waiting at qmgr destinations: their messages go back to the schedule
    send.inmemory.spill_at_exit()
    for c in send.channels.values():
        c.persist(log)
    log(sendlog.exiting())
    return 0


def run() -> None:
    """Console-script entry point: alerts go to the log (fd 0), never a traceback."""
    try:
        code = serve(Send(*start()))
    except Stop as e:
        log(e.args[0])
        code = 111
    except MemoryError:
        log(sendlog.alert("nomem"))
        code = 111
    except Exception as e:  # the last line of defence: one alert line, and qmail-start's supervisor restarts us
        log(b"alert: internal error: %s: %s\n" % (type(e).__name__.encode(), str(e).encode(errors="replace")))
        code = 111
    flush_log()
    os._exit(code)
