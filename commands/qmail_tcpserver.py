"""qmail-tcpserver: tcpserver's interface and log; pyqmail's own programs run in pre-loaded forked children
(qmail-tcpserver(8))."""

import errno
import os
import select
import signal
import socket
import sys

from pyqmail.lib.tcpserver import ruleenv, tcppool, tcprules, tcpserve
from pyqmail.lib.tcpserver import inprocess
from pyqmail.lib.util import envsnapshot
from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.util.program import default_signals, main

HANDLED = (signal.SIGCHLD, signal.SIGTERM)


class Drop(Exception):
    """This connection cannot be served: tcpserver's `dropping connection` warning, exit 111."""


def say(line):
    """Write one log line to fd 2, ignoring a closed descriptor."""
    try:
        os.write(2, (line + "\n").encode("utf-8", "backslashreplace"))
    except OSError:
        pass


class Listener:
    """The accept loop: at most limit children, reaped and logged as tcpserver does."""

    def __init__(self, o, sock, entry, reuse=False, module=None, here=None):
        self.o, self.sock, self.entry = o, sock, entry
        self.here = here  # the working directory, opened before -u: workers return to it after each connection
        self.module = module  # the pre-loaded program's module: its WARM is made again before each worker
        self.children = 0
        try:
            self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:  # EMFILE under a descriptor limit of a few
            raise Exit(TEMP_FAILURE, "fatal: unable to create pipe: %s" % error_str(e.errno))
        try:
            self.pool = tcppool.Pool() if reuse else None  # workers serving many connections each
        except OSError:
            self.pool = None
            self.too_few_descriptors()
        if self.pool and not tcppool.fits(max(self.pool.status_r, self.pool.status_w, self.here or 0)):
            self.too_few_descriptors()
            os.close(self.pool.status_r)
            os.close(self.pool.status_w)
            self.pool = None
        if self.here is not None and not self.pool:  # only workers go back to it: one descriptor more to accept with
            os.close(self.here)
            self.here = None

    def too_few_descriptors(self):
        """Say that reused workers are off for the descriptor limit: a child per connection then."""
        say("tcpserver: warning: descriptor limit %d too low for reused workers: one child per connection"
            % os.sysconf("SC_OPEN_MAX"))

    def status(self):
        """Log the number of children at -v."""
        if self.o.verbosity >= 2:
            say(tcpserve.status_line(self.pool.serving() if self.pool else self.children, self.o.limit))

    def run(self):
        """Accept and serve connections until TERM."""
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only to wake poll through the pipe
        signal.signal(signal.SIGTERM, self.terminate)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.sock.setblocking(False)
        self.status()
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        if self.pool:
            poller.register(self.pool.status_r, select.POLLIN)
        accepting = False
        while True:
            if accepting != self.room():  # over the limit, wait as tcpserver does
                accepting = not accepting
                poller.register(self.sock, select.POLLIN) if accepting else poller.unregister(self.sock)
            ready = {fd for fd, _ in poller.poll()}
            if self.pool and self.pool.status_r in ready and self.pool.read():
                self.status()
            if self.wake_r in ready:
                while True:
                    try:
                        if not os.read(self.wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                self.reap()
            if self.sock.fileno() in ready and self.room():
                self.fork_worker() if self.pool else self.accept()

    def room(self):
        """True if a waiting connection should be taken now: below the limit (and, with workers, none idle)."""
        if self.pool:
            return self.pool.idle() == 0 and len(self.pool.busy) < self.o.limit
        return self.children < self.o.limit

    def terminate(self, signum, frame):
        """TERM: stop listening; children (and busy workers) finish their connections, as with tcpserver."""
        if self.pool:
            self.pool.stop()
        os._exit(0)

    def reap(self):
        """Collect finished children and log them."""
        while True:
            try:
                pid, wstat = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            if self.pool and not self.pool.ended(pid):
                if wstat:  # an idle worker failed, at its start perhaps: no fork loop faster than ten a second
                    select.select([], [], [], 0.1)
                continue  # an idle worker ended: no connection ended with it
            lines = tcpserve.end_lines(pid, wstat)
            for line in lines if self.o.verbosity >= 2 else lines[1:] if self.o.verbosity else ():
                say(line)
            self.children = max(0, self.children - 1)
            self.status()

    def accept(self):
        """Accept one connection and fork its child."""
        try:
            conn, remote = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as e:  # out of descriptors: let children finish instead of spinning
            say("tcpserver: warning: unable to accept: %s" % error_str(e.errno))
            select.select([], [], [], 0.1)
            return
        self.children += 1
        self.status()
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except OSError as e:
            say("tcpserver: warning: dropping connection, unable to fork: %s" % error_str(e.errno))
            self.children -= 1
            self.status()
            pid = -1
        if pid == 0:
            self.child(conn, remote)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        conn.close()

    def forked(self):
        """In a new child: start clean, as an exec'd program would, without the listener's descriptors."""
        signal.set_wakeup_fd(-1)
        for signum in HANDLED:
            signal.signal(signum, signal.SIG_DFL)
        os.close(self.wake_r)
        os.close(self.wake_w)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])

    def child(self, conn, remote):
        """Become the connection's process: never returns."""
        try:
            self.forked()
            self.sock.close()
            code = self.serve_safely(conn, remote)
        except BaseException:
            code = 111
        os._exit(code or 0)

    def fork_worker(self):
        """Fork a worker that accepts and serves connections itself (lib/tcpserver/tcppool)."""
        if self.module:
            inprocess.warm(self.module)  # a worker forked now shares fresh TLS ticket keys, not aged ones
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        listener = os.getpid()
        try:
            pid = os.fork()
        except OSError as e:
            say("tcpserver: warning: unable to fork: %s" % error_str(e.errno))
            select.select([], [], [], 0.1)
            pid = -1
        if pid == 0:
            try:
                self.forked()
                worker = tcppool.Worker(self.sock.detach(), self.pool.status_w, self.serve_safely, self.say_end,
                                        tcpserve.ENVIRONMENT, self.here, say)
            except BaseException as e:  # one line, not a silent death the listener would answer with a new fork
                say("tcpserver: warning: unable to start a worker: %s: %s" % (type(e).__name__, e))
                os._exit(111)
            try:
                worker.run(listener)
            finally:
                os._exit(111)
        if pid > 0:
            self.pool.added(pid)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)

    def say_end(self, pid, wstat):
        """A worker finished a connection: tcpserver's `end` line at -v."""
        if self.o.verbosity >= 2:
            say(tcpserve.end_lines(pid, wstat)[0])

    def serve_safely(self, conn, remote):
        """Serve one connection; return its exit code, with one warning line instead of any traceback."""
        try:
            return self.serve(conn, remote)
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else 111
        except (Drop, tcprules.Unreadable) as e:
            say("tcpserver: warning: dropping connection, %s" % e)
        except BaseException as e:  # one clear line, never a traceback
            say("tcpserver: warning: dropping connection, internal error: %s: %s" % (type(e).__name__, e))
        return 111

    def serve(self, conn, remote):
        """tcpserver's doit(): log, banner, environment, rules, descriptors, then the program."""
        o = self.o
        pid = os.getpid() if o.verbosity >= 2 else 0  # only for the log lines
        env = tcpserve.environment(conn.getsockname(), remote, o.localname)
        if o.verbosity >= 2:
            say(tcpserve.pid_line(pid, env["TCPREMOTEIP"]))
        if o.kill_ipoptions and env["PROTO"] == "TCP":  # IPv4, on an IPv6 socket too (a client of "::")
            try:
                conn.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"")
            except OSError:
                pass  # as tcpserver, which ignores it
        if o.nodelay:
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if o.banner:
            try:
                conn.sendall(o.banner)
            except OSError as e:
                raise Drop("unable to print banner: %s" % error_str(e.errno))
        # bytes: os.environ's str keys and values cost an encode call each
        changes = [(name.encode(), None if value is None else value.encode("utf-8", "surrogateescape"))
                   for name, value in env.items()]
        rule = tcprules.read(o.rules, env["TCPREMOTEIP"], o.rules_optional) if o.rules else None
        if rule:
            changes += [(name, value) for name, value in rule.env if tcprules.settable(name)]
        ruleenv.put(changes)
        deny = bool(rule and rule.deny)
        if o.verbosity >= 2:
            say(tcpserve.verdict_line(deny, pid, env))
        if deny:
            return 100
        if rule and rule.env and self.entry is not None and ruleenv.exec_refuses(o.argv):
            raise Drop("unable to run %s: %s" % (o.argv[0], error_str(errno.E2BIG)))  # as tcpserver's exec
        fd = conn.detach()
        os.dup2(fd, 0)
        os.dup2(0, 1)
        if fd > 1:
            os.close(fd)
        sys.argv = list(o.argv)
        if self.entry is not None:
            return self.entry() or 0  # run() ends with os._exit; connection() returns the exit code
        default_signals()  # Python ignores SIGPIPE and SIGXFSZ; an exec'd program must not
        try:
            os.execvp(o.argv[0], o.argv)
        except OSError as e:
            raise Drop("unable to run %s: %s" % (o.argv[0], error_str(e.errno)))


def body(argv):
    """Parse tcpserver's options, bind, pre-load our program if it is one, and serve."""
    try:
        o = tcpserve.parse(argv, os.environ)
    except tcpserve.UsageError as e:
        raise Exit(PERM_FAILURE, "%s\ntcpserver: %s" % (e, tcpserve.USAGE))
    envsnapshot.undo_locale_coercion()  # programs get tcpserver's environment, not the interpreter's LC_CTYPE
    tcpserve.open_standard_fds()
    sock = tcpserve.listen(o)
    try:  # for reused workers, before -u: a uid that cannot search this directory could not open it
        here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        here = None  # the workers try again, as the -u user
    tcpserve.drop_privileges(o)
    module = inprocess.recognise(o.argv[0])
    loaded = inprocess.load(module) if module else None
    entry = getattr(loaded, "connection", None) or getattr(loaded, "run", None)
    if entry is not None:
        inprocess.preload(module)
        if o.verbosity >= 2:
            say("tcpserver: info: running %s in forked children of this process (%s)" % (o.argv[0], module))
    if o.rules:
        import cdbx  # noqa: F401 -- imported once here, not in every child
    if hasattr(loaded, "connection"):
        import ctypes  # noqa: F401 -- for the workers' prctl, imported once here
    import gc
    gc.freeze()  # what is loaded now stays out of the collector: children neither scan nor copy it
    Listener(o, sock, entry, reuse=hasattr(loaded, "connection"), module=module, here=here).run()


def run():
    """Entry point."""
    main("tcpserver", body, crash_code=TEMP_FAILURE)
