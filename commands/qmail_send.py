"""qmail-send: schedule and hand out deliveries, bounce failures, log it all (reference §1.4, §2, §3).

Descriptors, set up by qmail-start: 0 log output, 1 → qmail-lspawn, 2 ← qmail-lspawn,
3 → qmail-rspawn, 4 ← qmail-rspawn, 5 → qmail-clean, 6 ← qmail-clean.
"""

import fcntl
import os
import select
import signal
import time

from pyqmail.lib import bounce, control, sendlog, todo
from pyqmail.lib.channel import LOCAL, REMOTE
from pyqmail.lib.rewrite import Rewriter
from pyqmail.lib.sendchannel import Channel
from pyqmail.lib.sendmessages import SLEEP_SYSFAIL, Cleanup, Clean, Todo, message_done, read_info, split_names
from pyqmail.lib.timequeue import TimeQueue

SLEEP_FOREVER = 86400
SLEEP_FUZZ = 1
SLEEP_ALERT = 10
FDS = {LOCAL: (1, 2), REMOTE: (3, 4)}
DEFAULT_CONCURRENCY = {LOCAL: 10, REMOTE: 20}


class Stop(Exception):
    """qmail-send cannot start: the alert has been logged; exit 111."""


def log(line):
    """Write one log line to fd 0 in one write; a dead logger must not stop deliveries."""
    try:
        os.write(0, line)
    except OSError:
        pass


def read_controls():
    """Read qmail-send's controls from QMAILHOME/control; return (settings dict, Rewriter, BounceControls)."""
    def raw(name):
        try:
            with open("control/" + name, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
    me = control.readline("me")
    settings = {"lifetime": control.readint("queuelifetime", 604800),
                LOCAL: control.readint("concurrencylocal", DEFAULT_CONCURRENCY[LOCAL]),
                REMOTE: control.readint("concurrencyremote", DEFAULT_CONCURRENCY[REMOTE])}
    envnoathost = control.rldef("envnoathost", b"envnoathost")
    rewriter = Rewriter.from_controls(envnoathost, raw("locals"), me, raw("percenthack"), raw("virtualdomains"))
    return settings, rewriter, bounce.controls_from(control.readline, me)


class Send:
    """Everything qmail-send holds in memory."""

    def __init__(self, home, settings, rewriter, bounce_controls, limits):
        self.home, self.rewriter, self.bounce_controls = home, rewriter, bounce_controls
        self.lifetime = settings["lifetime"]
        self.log = log
        self.exitasap = False
        self.recent = int(time.time())
        self.delid = 0
        self.pqdone, self.pqfail = TimeQueue(), TimeQueue()
        self.channels = {}
        for name, (fd_out, fd_in) in FDS.items():
            self.channels[name] = Channel(self, name, fd_out, fd_in, min(settings[name], limits[name]), TimeQueue())
        self.numjobs = sum(c.concurrency for c in self.channels.values())
        self.jobs_used = 0
        self.clean = Clean(self, 5, 6)
        self.todo = Todo(self)
        self.cleanup = Cleanup(self)
        self.read_info = read_info

    def next_delid(self):
        """Return the next delivery number (1, 2, 3, … per run)."""
        self.delid += 1
        return self.delid

    def job_available(self):
        """True if another job may be opened."""
        return self.jobs_used < self.numjobs

    def log_status(self):
        """Log the `status:` line."""
        c = self.channels
        log(sendlog.status(c[LOCAL].used, c[LOCAL].concurrency, c[REMOTE].used, c[REMOTE].concurrency,
                           self.exitasap))

    def schedule_at_start(self):
        """Put every message in info/ into its channels' schedules, as qmail's pqstart."""
        for id in split_names("info"):
            self.schedule_one(id)

    def schedule_one(self, id):
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

    def reread(self):
        """SIGHUP: reread locals and virtualdomains only."""
        try:
            os.chdir(self.home)
        except OSError:
            return log(sendlog.alert("reread_home"))
        try:
            try:
                with open("control/locals", "rb") as f:
                    locals_data = f.read()
            except FileNotFoundError:
                locals_data = None
            me = control.readline("me")
            if locals_data is None and me is None:
                locals_data = b""  # qmail then knows no local domains at all
        except OSError:
            log(sendlog.alert("reread_locals"))
        else:
            try:
                try:
                    with open("control/virtualdomains", "rb") as f:
                        vdoms = f.read()
                except FileNotFoundError:
                    vdoms = None
                self.rewriter = self.rewriter.reloaded(locals_data, me, vdoms)
            except OSError:
                log(sendlog.alert("reread_virtualdomains"))
        while True:
            try:
                return os.chdir("queue")
            except OSError:
                log(sendlog.alert("back_to_queue"))
                time.sleep(SLEEP_ALERT)

    def can_exit(self):
        """True when terminating and no live spawner has a delivery running."""
        return self.exitasap and not any(c.alive and c.used for c in self.channels.values())

    def round(self, flags, wake_r):
        """One turn of qmail-send's loop: compute the wakeup, select, then do each kind of work once."""
        recent = self.recent = int(time.time())
        if flags.pop("alrm", None):
            for c in self.channels.values():
                c.schedule.run_all_now(recent)
        if flags.pop("hup", None):
            self.reread()
        wake = recent + SLEEP_FOREVER
        rfds, wfds = [wake_r], []
        for c in self.channels.values():
            if c.pending and c.alive:
                wfds.append(c.fd_out)
            if c.alive:
                rfds.append(c.fd_in)
        if not self.exitasap:
            if any(c.busy() for c in self.channels.values()):
                wake = 0
            elif self.job_available():
                for c in self.channels.values():
                    if c.job is None and c.schedule.next_due() is not None:
                        wake = min(wake, c.schedule.next_due())
            for q in (self.pqfail, self.pqdone):
                if q.next_due() is not None:
                    wake = min(wake, q.next_due())
            if self.todo.trigger >= 0:
                rfds.append(self.todo.trigger)
            wake = self.todo.wakeup(wake)
            wake = self.cleanup.wakeup(wake)
        timeout = 0 if wake <= recent else wake - recent + SLEEP_FUZZ
        try:
            ready_r, ready_w, _ = select.select(rfds, wfds, [], timeout)
        except OSError:
            return log(sendlog.fixed_warning("select"))
        if wake_r in ready_r:
            os.read(wake_r, 512)
        recent = self.recent = int(time.time())
        for c in self.channels.values():
            if c.fd_out in ready_w:
                c.write_pending()
            if c.fd_in in ready_r:
                c.read_reports()
        if not self.exitasap:
            self.todo.step(self.todo.trigger in ready_r, recent)
        for c in self.channels.values():
            c.step(recent)
        id = self.pqfail.pop_due(recent)
        if id is not None:
            self.schedule_one(id)
        id = self.pqdone.pop_due(recent)
        if id is not None:
            message_done(self, id)
        if not self.exitasap:
            self.cleanup.step(recent)

def spawn_limits():
    """Read the one byte each spawner sends first: its concurrency limit."""
    limits = {}
    for name, (_, fd_in) in FDS.items():
        try:
            byte = os.read(fd_in, 1)
        except OSError:
            byte = b""
        if not byte:
            raise Stop(sendlog.cannot_start("spawn"))
        limits[name] = byte[0]
    return limits


def start():
    """Start as qmail-send does: home, controls, queue, signals, umask, mutex, spawner limits."""
    home = os.path.abspath(control.qmailhome())
    try:
        os.chdir(home)
    except OSError:
        raise Stop(sendlog.cannot_start("home"))
    try:
        settings, rewriter, bounce_controls = read_controls()
    except (OSError, ValueError):
        raise Stop(sendlog.cannot_start("controls"))
    try:
        os.chdir("queue")
    except OSError:
        raise Stop(sendlog.cannot_start("queue"))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.umask(0o077)
    try:
        mutex = os.open("lock/sendmutex", os.O_WRONLY)
    except OSError:
        raise Stop(sendlog.cannot_start("mutex"))
    try:
        fcntl.flock(mutex, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise Stop(sendlog.cannot_start("running"))
    return Send(home, settings, rewriter, bounce_controls, spawn_limits())


def serve(send):
    """Run the loop until TERM has been handled, then persist retry times and say so."""
    flags = {}
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGALRM, lambda *_: flags.__setitem__("alrm", True))
    signal.signal(signal.SIGHUP, lambda *_: flags.__setitem__("hup", True))

    def term(*_):
        send.exitasap = True
    signal.signal(signal.SIGTERM, term)
    send.schedule_at_start()
    send.log_status()
    while not send.can_exit():
        send.round(flags, wake_r)
    for c in send.channels.values():
        c.persist(log)
    log(sendlog.exiting())
    return 0


def run():
    """Console-script entry point: alerts go to the log (fd 0), never a traceback."""
    try:
        code = serve(start())
    except Stop as e:
        log(e.args[0])
        code = 111
    except MemoryError:
        log(sendlog.alert("nomem"))
        code = 111
    except Exception as e:  # the last line of defence: one alert line, and qmail-start's supervisor restarts us
        log(b"alert: internal error: %s: %s\n" % (type(e).__name__.encode(), str(e).encode(errors="replace")))
        code = 111
    os._exit(code)
