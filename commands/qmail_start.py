"""qmail-start: start qmail-send with its helpers wired to qmail's descriptors (qmail-start(8)).

Usage: qmail-start [defaultdelivery [logger arg ...]]
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import signal
import subprocess
import time
from collections import namedtuple

from pyqmail.lib.config import control
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main

DEFAULT_DELIVERY = "./Mailbox"
POLL = 1.0  # seconds between the pickup guard's checks that qmail-send still runs
RESTART_DELAY = 60
children: list[subprocess.Popen[bytes]] = []  # what start() started
Ids = namedtuple("Ids", "uid gid groups")  # uid None: keep ours
Roles = namedtuple("Roles", "logger lspawn rspawn clean send pickup")


def qmail_roles():
    """Return qmail's accounts for each process (qmail-start.c with conf-users and conf-groups)."""
    qmail, nofiles = grp.getgrnam("qmail").gr_gid, grp.getgrnam("nofiles").gr_gid

    def uid(name):
        """The uid of one of qmail's accounts."""
        return pwd.getpwnam(name).pw_uid
    queue = Ids(uid("qmailq"), qmail, [qmail])
    return Roles(Ids(uid("qmaill"), nofiles, [nofiles]), Ids(None, qmail, [qmail]),
                 Ids(uid("qmailr"), qmail, [qmail]), queue, Ids(uid("qmails"), qmail, [qmail]),
                 Ids(queue.uid, qmail, []))


def roles(home):
    """Decide who runs what: qmail's accounts for a root-started qmail tree, else the queue's owner or us."""
    st = os.stat(os.path.join(home, "queue"))
    if os.geteuid() != 0 or st.st_uid == 0:
        return Roles(*[None] * 6)
    if pwd.getpwuid(st.st_uid).pw_name == "qmailq":
        return qmail_roles()
    one = Ids(st.st_uid, st.st_gid, [])  # a single-user tree of another account: everything as that account
    return Roles(*[one] * 6)


def credentials(ids):
    """Return Popen's keyword arguments that switch a child to ids (none when ids is None)."""
    if ids is None:
        return {}
    kw = {"group": ids.gid, "extra_groups": ids.groups}
    if ids.uid is not None:
        kw["user"] = ids.uid
    return kw


def become(ids):
    """Switch this process (the pickup guard, or qmail-start about to become qmail-send) to ids."""
    if ids is None:
        return
    os.setgroups(ids.groups)
    os.setgid(ids.gid)
    if ids.uid is not None:
        os.setuid(ids.uid)


def start(argv, stdin, stdout, stderr, ids):
    """Start argv, found through PATH, with descriptors 0, 1, 2 and ids; Exit(TEMP_FAILURE) if it cannot run."""
    try:
        child = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, close_fds=True,
                                 **credentials(ids))
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to run %s: %s" % (argv[0], reason(e)))
    children.append(child)  # kept, so that the subprocess module never reaps it behind qmail-send's back
    return child


def watch_pickup(log, ids, ready):
    """Run qmail-pickup (restarting it if it dies) until our parent, qmail-send, is gone or TERM comes."""
    parent = os.getppid()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    become(ids)
    child = start(["qmail-pickup"], subprocess.DEVNULL, log, log, None)
    os.write(ready, b"+")
    os.close(ready)
    restart_at = 0
    while not stop and os.getppid() == parent:
        time.sleep(POLL)
        if child is not None and child.poll() is not None:
            os.write(log, b"warning: qmail-pickup exited with status %d; restarting it in %d seconds\n"
                     % (child.returncode, RESTART_DELAY))
            child, restart_at = None, time.time() + RESTART_DELAY
        elif child is None and time.time() >= restart_at:
            try:
                child = start(["qmail-pickup"], subprocess.DEVNULL, log, log, None)
            except Exit:
                restart_at = time.time() + RESTART_DELAY
    if child is not None:
        child.terminate()
        child.wait()
    return 0


def guard_pickup(log, ids):
    """Fork the guard that runs qmail-pickup; return when qmail-pickup has started, Exit(TEMP_FAILURE) if it cannot."""
    ready_r, ready_w = pipe()
    try:
        pid = os.fork()
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to fork: %s" % reason(e))
    if pid == 0:
        code = 111
        try:
            os.close(ready_r)
            code = watch_pickup(log, ids, ready_w)
        except BaseException:
            pass
        os._exit(code)
    os.close(ready_w)
    started = os.read(ready_r, 1)
    os.close(ready_r)
    if not started:
        raise Exit(TEMP_FAILURE, "fatal: unable to run qmail-pickup")


def reason(e):
    """The words for why e happened: its strerror, or a KeyError's text (getpwnam's: which account is missing)."""
    if isinstance(e, KeyError):
        return str(e.args[0]) if e.args else "an account is missing"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def pipe():
    """os.pipe(), or Exit(TEMP_FAILURE) with a line saying why."""
    try:
        return os.pipe()
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to create pipe: %s" % reason(e))


def place(fds):
    """Make fds[i] descriptor i (inheritable) for every i, whatever numbers they have now."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]
    for number, fd in enumerate(high):
        os.dup2(fd, number)
        os.close(fd)


def environment(home):
    """Make QMAILHOME absolute and put QMAILHOME/bin first on PATH, for us and everything we start."""
    home = os.path.abspath(home)
    os.environ["QMAILHOME"] = home
    path = os.environ.get("PATH", os.defpath)
    bindir = os.path.join(home, "bin")
    if path.split(":")[0] != bindir:
        os.environ["PATH"] = bindir + ":" + path
    return home


def body(argv):
    """Start the logger, qmail-lspawn, qmail-rspawn, qmail-clean and qmail-pickup, then become qmail-send."""
    delivery = argv[0] if argv else DEFAULT_DELIVERY
    # rc and the run scripts pass control/defaultdelivery through `cat`: a CRLF file's CR would end each line,
    # and `./Maildir/<CR>` is an mbox named CR inside the Maildir (control files drop that CR: control.BLANKS)
    delivery = "\n".join(line.rstrip("\r") for line in delivery.split("\n"))
    logger = argv[1:]
    try:
        home = environment(control.qmailhome())
        who = roles(home)
        os.chdir("/")
    except (OSError, KeyError) as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to find the queue or qmail's accounts: %s" % reason(e))
    os.umask(0o077)
    if logger:
        log_r, log = pipe()
        start(logger, log_r, None, None, who.logger)
        os.close(log_r)
    else:
        try:
            log = os.dup(1)
        except OSError as e:  # EBADF when fd 1 is closed: nowhere to log
            raise Exit(TEMP_FAILURE, "fatal: unable to use descriptor 1 for the log: %s" % reason(e))
    guard_pickup(log, who.pickup)  # before the other pipes exist, so that it holds none of them open
    l_in, l_in_w = pipe()
    l_out_r, l_out = pipe()
    r_in, r_in_w = pipe()
    r_out_r, r_out = pipe()
    c_in, c_in_w = pipe()
    c_out_r, c_out = pipe()
    # unlike qmail (which closes their fd 2), the helpers' diagnostics go to the log
    start(["qmail-lspawn", delivery], l_in, l_out, log, who.lspawn)
    start(["qmail-rspawn"], r_in, r_out, log, who.rspawn)
    start(["qmail-clean"], c_in, c_out, log, who.clean)
    for fd in (l_in, l_out, r_in, r_out, c_in, c_out):
        os.close(fd)
    try:
        place([log, l_in_w, l_out_r, r_in_w, r_out_r, c_in_w, c_out_r])
        become(who.send)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.execvp("qmail-send", ["qmail-send"])
    except OSError as e:
        # descriptor 2 is a helper's pipe now (place): the line goes to the log, descriptor 0, where qmail-send's would
        try:
            os.write(0, b"qmail-start: fatal: unable to run qmail-send: %s\n" % reason(e).encode())
        except OSError:
            pass
    raise Exit(TEMP_FAILURE)


def run():
    """Console-script entry point."""
    from pyqmail.lib.util.envsnapshot import undo_locale_coercion
    undo_locale_coercion()  # everything started inherits our environment: not the interpreter's LC_CTYPE
    main("qmail-start", body, crash_code=TEMP_FAILURE)
