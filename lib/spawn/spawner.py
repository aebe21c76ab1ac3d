"""The select loop qmail-lspawn and qmail-rspawn share (qmail-lspawn(8), qmail-rspawn(8); qmail's spawn.c)."""

from __future__ import annotations

import errno
import os
import select
import signal

from pyqmail.lib.config import control
from pyqmail.lib.spawn import spawnproto
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.spawn.spawnproto import Batch, Request, encode_report
from pyqmail.lib.util.regularfile import is_regular

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable
    from typing import NoReturn, Protocol
    from pyqmail.lib.spawn.localworkers import LocalWorkers, Worker

    # launch(request, message fd, output pipe's write end) -> (pid, wait status if the delivery is already done);
    # (0, None): the launch waits for something Waiting decides, and is asked again then
    Launch = Callable[[Request, int, int], tuple[int, int | None]]
    BatchChild = Callable[[bytes, list[bytes]], int]  # batch_child(sender, recipients) -> exit code
    # batch_launch(sender, recipients, message fd, output pipe's write end) -> pid of the process delivering
    BatchLaunch = Callable[[bytes, list[bytes], int, int], "int | None"]  # None: not taken, fork as before
    BatchReport = Callable[[int, bytearray, int], list[bytes]]  # (wstat, output, count) -> one report each

    class ConnCache(Protocol):
        """What the spawner asks of qmail-rspawn's connection cache (lib/remote/conncache.Cache)."""

        def fds(self) -> list[int]: ...
        def child_fds(self) -> list[int]: ...
        def lend(self, host: bytes) -> None: ...
        def forked(self) -> None: ...
        def receive(self) -> None: ...
        def timeout(self) -> float | None: ...
        def expire(self) -> None: ...
        def close_all(self) -> None: ...

    class Waiting(Protocol):
        """What the spawner asks of what launches wait for (qmail-lspawn's passwd lookups: lib/spawn/passwdlookup):
        it selects on fds() until timeout() with everything else; ready() names the delnums whose launch is to be
        asked again."""

        def fds(self) -> list[int]: ...
        def timeout(self) -> float | None: ...
        def ready(self, fds: list[int]) -> list[int]: ...

COLLECT_READS = 16  # reads of one child's output per turn of the loop


def enter_mess() -> tuple[str, int]:
    """chdir to QMAILHOME/queue/mess (exit 111 if impossible); return (absolute QMAILHOME, owner of mess/)."""
    home = os.path.abspath(control.qmailhome())
    os.environ["QMAILHOME"] = home  # children run elsewhere; forwards and qmail-remote must still find the tree
    try:
        os.chdir(os.path.join(home, "queue", "mess"))
    except OSError:
        raise Exit(TEMP_FAILURE)
    return home, os.stat(".").st_uid  # qmailq, or a single-user tree's one account


class Delivery:
    """One running child: the read end of its output pipe, our copy of the write end, its status and output."""

    def __init__(self, pid: int, fdin: int, fdout: int) -> None:
        self.pid = pid
        self.fdin = fdin
        self.fdout = fdout  # kept open until the child is reaped, so EOF means "dead and done"
        self.wstat: int | None = None
        self.output = bytearray()
        self.batch: list[bytes | None] | None = None  # a batch: each recipient's refusal, or None if it ran
        self.trunc = 0  # a batch's own output bound (0: the spawner's)
        self.waits: tuple[Request, int] | None = None  # a launch that waits: its request and message descriptor


class Spawner:
    """Reads requests on fd 0, forks one child per delivery, writes reports on fd 1 (those a turn of its loop
    finished, together at its end)."""

    def __init__(self, child: Callable[[bytes, bytes], int], report: Callable[[int, bytearray], bytes], trunc: int,
                 owner_uid: int, limit: int = spawnproto.SPAWN_LIMIT, child_crash: int = 111,
                 launch: Launch | None = None, workers: LocalWorkers | None = None,
                 batch_child: BatchChild | None = None, batch_report: BatchReport | None = None,
                 batch_launch: BatchLaunch | None = None, cache: ConnCache | None = None,
                 waiting: Waiting | None = None) -> None:
        self.child = child  # child(sender, recipient) -> exit code; runs with fd 0 = message, fds 1, 2 = pipe
        self.launch = launch or self.fork_child  # launch(req, fdmess, fdout) -> (pid, wait status if done)
        self.workers = workers  # reused delivery workers (lib/spawn/localworkers), if launch uses them
        self.report = report  # report(wstat, output) -> report text
        self.trunc = trunc
        self.owner_uid = owner_uid
        self.limit = limit
        self.child_crash = child_crash
        self.batch_child = batch_child  # batch_child(sender, recipients): set, batches are taken (qmail-rspawn)
        self.batch_report = batch_report
        self.batch_launch = batch_launch  # set: a batch goes to a reused worker (workers), not a fork
        self.running: dict[int, Delivery] = {}  # by delnum
        self.writing = True
        self.unsent: list[bytes] = []  # reports of this turn of the loop, written together at its end
        self.cache = cache  # qmail-rspawn's SMTP connection cache, if on
        self.waiting = waiting  # what launches wait for, if they may

    def fork(self, host: bytes) -> int:
        """os.fork(), lending the child a cached connection to host when there is one."""
        if self.cache is None:
            return os.fork()
        self.cache.lend(host)
        try:
            pid = os.fork()
        except OSError:
            self.cache.forked()
            raise
        if pid:
            self.cache.forked()
        return pid

    def write(self, data: bytes) -> None:
        """Queue data for qmail-send; flush() writes it at the end of the loop's turn."""
        self.unsent.append(data)

    def flush(self) -> None:
        """Write the turn's reports to qmail-send in one write (it then acts on them in one turn of its own);
        after a failure (EPIPE: SIGPIPE is ignored), stop writing for good (spawn.c's okwrite)."""
        if not self.unsent:
            return
        data = b"".join(self.unsent)
        self.unsent.clear()
        if not self.writing:
            return
        try:
            write_all(1, data)
        except OSError:
            self.writing = False

    def refuse(self, delnum: int, text: bytes) -> None:
        """Answer a request at once with a report."""
        self.write(encode_report(delnum, text))

    def start(self, req: Request) -> None:
        """Validate a request, open its message and launch its delivery; refusals are reported at once."""
        text = spawnproto.request_error(req, self.limit, self.running)
        if text:
            return self.refuse(req.delnum, text)
        try:
            fdmess = os.open(req.messid, os.O_RDONLY | os.O_NONBLOCK)  # spawn.c's open_read: a FIFO never waits
        except OSError:
            return self.refuse(req.delnum, b"Zqmail-spawn unable to open message. (#4.3.0)\n")
        waits = False
        try:
            text = self.check_message(fdmess)
            if text:
                return self.refuse(req.delnum, text)
            try:
                fdin, fdout = os.pipe()
                os.set_blocking(fdin, False)  # our end only: collect() reads on to EOF without waiting
            except OSError:
                return self.refuse(req.delnum, b"Zqmail-spawn unable to create pipe. (#4.3.0)\n")
            waits = self.begin(req, fdmess, Delivery(0, fdin, fdout))
        finally:
            if not waits:
                os.close(fdmess)

    def begin(self, req: Request, fdmess: int, d: Delivery) -> bool:
        """Launch d's delivery (again, once what it waited for is decided); return True if it waits (fdmess is
        then kept in d)."""
        try:
            pid, wstat = self.launch(req, fdmess, d.fdout)
        except OSError:
            self.running.pop(req.delnum, None)
            os.close(d.fdin)
            os.close(d.fdout)
            self.refuse(req.delnum, b"Zqmail-spawn unable to fork. (#4.3.0)\n")
            return False
        d.pid = pid
        self.running[req.delnum] = d
        if wstat is not None:  # answered without a process: the status is known now
            self.finished(d, wstat)
        elif not pid:
            d.waits = (req, fdmess)
            return True
        return False

    def resume(self, delnum: int) -> None:
        """Launch again a delivery whose launch waited, now that what it waited for is decided."""
        d = self.running.get(delnum)
        if d is None or d.waits is None:
            return
        (req, fdmess), d.waits = d.waits, None
        waits = False
        try:
            waits = self.begin(req, fdmess, d)
        finally:
            if not waits:
                os.close(fdmess)

    def refuse_all(self, delnum: int, texts: list[bytes]) -> None:
        """Answer a batch at once: one report per recipient, in order."""
        self.write(b"".join(encode_report(delnum, text) for text in texts))

    def start_batch(self, b: Batch) -> None:
        """Validate a batch, open its message and fork one child for all its acceptable recipients; refusals
        (all, or a recipient's own) are reported at once, or in their place among the run's reports."""
        if not b.total:
            return
        if b.overflow:
            return self.refuse_all(b.delnum, [spawnproto.OUT_OF_MEMORY] * b.total)
        text = spawnproto.request_error(Request(b.delnum, b.messid, b.sender, b"@", False), self.limit,
                                        self.running)
        if text:
            return self.refuse_all(b.delnum, [text] * b.total)
        own: list[bytes | None] = []
        run: list[bytes] = []
        host: bytes | None = None
        for recipient in b.recipients:
            if b"@" not in recipient:
                own.append(b"DSorry, address must include host name. (#5.1.3)\n")
                continue
            domain = spawnproto.split_recipient(recipient)[1].lower()
            if host is not None and domain != host:
                own.append(b"ZInternal error: batch mixes hosts. (#4.3.5)\n")
                continue
            host = domain
            own.append(None)
            run.append(recipient)
        if not run:
            return self.refuse_all(b.delnum, [t or b"" for t in own])
        try:
            fdmess = os.open(b.messid, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return self.refuse_all(b.delnum, [b"Zqmail-spawn unable to open message. (#4.3.0)\n"] * b.total)
        try:
            text = self.check_message(fdmess)
            if text:
                return self.refuse_all(b.delnum, [text] * b.total)
            try:
                fdin, fdout = os.pipe()
                os.set_blocking(fdin, False)
            except OSError:
                return self.refuse_all(b.delnum, [b"Zqmail-spawn unable to create pipe. (#4.3.0)\n"] * b.total)
            try:
                taken = self.batch_launch(b.sender, run, fdmess, fdout) if self.batch_launch else None
                pid = taken if taken is not None else self.fork(host or b"")
            except OSError:
                os.close(fdin)
                os.close(fdout)
                return self.refuse_all(b.delnum, [b"Zqmail-spawn unable to fork. (#4.3.0)\n"] * b.total)
            if pid == 0:
                self.in_child(fdmess, fdout, b.sender, b"", run)
            d = self.running[b.delnum] = Delivery(pid, fdin, fdout)
            d.batch = own
            d.trunc = max(self.trunc, spawnproto.REMOTE_OUTPUT_MAX // 10 * len(run))
        finally:
            os.close(fdmess)

    def fork_child(self, req: Request, fdmess: int, fdout: int) -> tuple[int, int | None]:
        """Fork a child for the delivery; return (its pid, None)."""
        pid = self.fork(req.recipient.rpartition(b"@")[2])
        if pid == 0:
            self.in_child(fdmess, fdout, req.sender, req.recipient)
        return pid, None

    def finished(self, d: Delivery, wstat: int) -> None:
        """A delivery's process is done (or its worker answered): keep the status, close our pipe end."""
        d.wstat = wstat
        os.close(d.fdout)
        d.fdout = -1

    def check_message(self, fd: int) -> bytes | None:
        """Return spawn.c's refusal for a message that is not a regular file of the queue's owner, or None."""
        try:
            st = os.fstat(fd)
        except OSError:
            return b"Zqmail-spawn unable to fstat message. (#4.3.0)\n"
        if not is_regular(st.st_mode):
            return b"ZSorry, message has wrong type. (#4.3.5)\n"
        if st.st_uid != self.owner_uid:
            return b"ZSorry, message has wrong owner. (#4.3.5)\n"
        return None

    def in_child(self, fdmess: int, fdout: int, sender: bytes, recipient: bytes,
                 recipients: list[bytes] | None = None) -> NoReturn:
        """In the forked child: become a plain process with the message on 0 and the pipe on 1 and 2; never return."""
        code = self.child_crash
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.dup2(fdmess, 0)
            os.dup2(fdout, 1)
            os.dup2(1, 2)
            from pyqmail.lib.spawn.localworkers import close_all_but
            close_all_but(*(self.cache.child_fds() if self.cache is not None else ()))
            if recipients is not None and self.batch_child is not None:
                code = self.batch_child(sender, recipients)
            else:
                code = self.child(sender, recipient)
        except BaseException:  # whatever went wrong, this process must not run on as a second spawner
            pass
        finally:
            os._exit(code if isinstance(code, int) else self.child_crash)

    def reap(self) -> None:
        """Collect every dead child's status and close our copy of its pipe."""
        by_pid = {d.pid: d for d in self.running.values() if d.wstat is None}
        while True:
            try:
                pid, wstat = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.workers is not None:
                self.workers.ended(pid)
            d = by_pid.pop(pid, None)
            if d is not None:
                self.finished(d, wstat)

    def answered(self, workers: LocalWorkers, w: Worker) -> None:
        """A worker answered for its delivery (or its socket ended: reaping gives the status then)."""
        wstat = workers.answer(w)
        if wstat is None:
            return
        for d in self.running.values():
            if d.pid == w.pid and d.wstat is None:
                self.finished(d, wstat)
                return

    def collect(self, delnum: int) -> None:
        """Read a child's output; at EOF (it is dead: we closed our end on reaping) send its report."""
        d = self.running[delnum]
        for _ in range(COLLECT_READS):  # on to EOF if it is there (a worker's answer comes with its output)
            try:
                data = os.read(d.fdin, 4096)
            except OSError:  # BlockingIOError: not yet
                return
            if not data:
                break
            spawnproto.append_output(d.output, data, d.trunc or self.trunc)
        else:
            return  # a child that keeps writing waits for the next turn, as the others do
        os.close(d.fdin)
        del self.running[delnum]
        if self.cache is not None:  # a connection the child handed back is sent before its report
            self.cache.receive()
        assert d.wstat is not None  # EOF: our copy of the write end is closed, which happens once the status is known
        if d.batch is None:
            self.write(encode_report(delnum, self.report(d.wstat, d.output)))
            return
        assert self.batch_report is not None
        ran = iter(self.batch_report(d.wstat, d.output, sum(1 for t in d.batch if t is None)))
        self.refuse_all(delnum, [t if t is not None else next(ran) for t in d.batch])

    def serve(self) -> int:
        """Announce the concurrency limit, then run until fd 0 ends and every delivery has been reported."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        self.write(bytes([self.limit]))
        self.flush()
        reader = spawnproto.RequestReader(batch=self.batch_child is not None)
        reading = True
        workers = self.workers
        cache = self.cache
        waiting = self.waiting
        while reading or self.running:
            self.flush()  # the last turn's reports, before waiting
            socks = workers.busy_socks() if workers is not None else {}
            fds = [wake_r] + [d.fdin for d in self.running.values()] + ([0] if reading else []) + list(socks)
            timeout = None
            if cache is not None:
                fds += cache.fds()
                timeout = cache.timeout()
            waited = waiting.timeout() if waiting is not None else None
            if waited is not None and waiting is not None:  # launches wait: their fds and deadline too
                fds += waiting.fds()
                timeout = waited if timeout is None else min(timeout, waited)
            try:
                ready, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                continue
            if cache is not None:
                if any(fd in ready for fd in cache.fds()):
                    cache.receive()
                cache.expire()
            if wake_r in ready:  # a SIGCHLD (the handler writes here): collect the dead
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
                self.reap()
            if 0 in ready:
                data: bytes | None
                try:
                    data = os.read(0, 4096)  # qmail-send writes a message's requests together
                except OSError as e:
                    data = b"" if e.errno != errno.EINTR else None
                if data == b"":
                    reading = False
                for req in reader.feed(data or b""):
                    if isinstance(req, Batch):
                        self.start_batch(req)
                    else:
                        self.start(req)
            if waited is not None and waiting is not None:
                for delnum in waiting.ready(ready):
                    self.resume(delnum)
            for fd, w in socks.items():
                if fd in ready and workers is not None:
                    self.answered(workers, w)
            for delnum, d in list(self.running.items()):
                if d.fdin in ready:
                    self.collect(delnum)
        self.flush()
        if cache is not None:
            cache.close_all()
        return 0
