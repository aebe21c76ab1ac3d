"""qmail-pickup: move mail that users dropped into QMAILHOME/maildrop into the queue, as its owner
(qmail-pickup(8)).

Usage: qmail-pickup [-1]   (-1: one pass over maildrop, then exit)
"""

import os
import signal
import time

from pyqmail.lib.config import control
from pyqmail.lib.queue import maildrop, queue
from pyqmail.lib.util.exits import PERM_FAILURE, Exit
from pyqmail.lib.util.dirwatch import DirWatch
from pyqmail.lib.util.program import main, warn

RESCAN = 60  # seconds between scans when inotify is silent (or unavailable)
waiting: list[int] = []  # one entry while idle, waiting for a drop
MAILDROP = "../maildrop/"
stopping: list[int] = []  # one entry once TERM arrived


def log(text):
    """One line on fd 2, the service's log."""
    warn("qmail-pickup", text)


def set_aside(current, name):
    """Rename a drop that is not queued to its bad name; if a user took that (a directory, say), to a unique
    one, so that it is never read again."""
    target = MAILDROP + maildrop.bad_name(name)
    try:
        os.rename(MAILDROP + current, target)
    except OSError:
        if not os.path.lexists(target):
            raise
        os.rename(MAILDROP + current, target + "." + os.urandom(8).hex())


def pick(claimed, name):
    """Queue one claimed drop file and remove it; a malformed one is set aside as bad.<name>."""
    shown = maildrop.shown(name)
    opened = maildrop.open_drop(MAILDROP + claimed)
    if opened is None:
        log("ignoring maildrop/%s: not a plain file with one link" % shown)
        set_aside(claimed, name)
        return
    fd, st = opened
    try:
        if maildrop.has_holes(fd, st.st_size):
            log("sparse maildrop/%s from uid %d (a file with holes), set aside" % (shown, st.st_uid))
            set_aside(claimed, name)
            return
        parsed = maildrop.read_drop(fd, st.st_size)
        if parsed is None:
            log("malformed maildrop/%s from uid %d, set aside" % (shown, st.st_uid))
            set_aside(claimed, name)
            return
        pid, sender, recipients, end = parsed
        injection = queue.Injection(pid, st.st_uid)
        mess_fd, number = injection.open_mess()
        injection.write_message(mess_fd, maildrop.file_chunks(fd, end))
        injection.commit(sender, recipients)
    finally:
        os.close(fd)
    os.unlink(MAILDROP + claimed)
    log("queued maildrop/%s: msg %d uid %d" % (shown, number, st.st_uid))


def claim(name):
    """Rename a finished drop to its claimed name and return that, or None if its writer took it back."""
    try:
        os.rename(MAILDROP + name, MAILDROP + maildrop.CLAIMED + name)
    except FileNotFoundError:
        return None
    return maildrop.CLAIMED + name


def sweep():
    """One pass over maildrop: queue finished drops, remove abandoned unfinished ones."""
    now = time.time()
    for name in sorted(os.listdir(MAILDROP)):
        if name.startswith("bad."):
            continue
        if name.startswith("t"):
            try:
                if now - os.lstat(MAILDROP + name).st_mtime > maildrop.ORPHAN_AGE:
                    os.unlink(MAILDROP + name)
            except OSError:
                pass
            continue
        try:
            if len(os.fsencode(name)) > maildrop.NAME_MAX:  # not drop()'s, and bad.<name> would not fit
                log("ignoring maildrop/%s: not a drop's name (too long)" % maildrop.shown(name))
                set_aside(name, name)
                continue
            if name.startswith(maildrop.CLAIMED):  # claimed by a pass that did not finish
                claimed, name = name, name[len(maildrop.CLAIMED):]
            else:
                claimed = claim(name)
                if claimed is None:
                    continue
            pick(claimed, name)
        except Exit as e:
            log("deferring maildrop/%s: queueing failed with qmail-queue code %d" % (maildrop.shown(name), e.code))
        except OSError as e:
            log("deferring maildrop/%s: %s" % (maildrop.shown(name), e.strerror))


class Stop(Exception):
    """TERM arrived while idle."""


def on_term(*_):
    """Stop after the current drop; while idle, stop at once."""
    stopping.append(1)
    if waiting:
        raise Stop()


def body(argv):
    """Run passes until TERM (or once with -1)."""
    if argv not in ([], ["-1"]):
        raise Exit(PERM_FAILURE, "usage: qmail-pickup [-1]")
    home = control.qmailhome()
    if os.geteuid() == 0:
        queue.become_queue_owner(home)
    queue.enter_queue(home)
    signal.signal(signal.SIGTERM, on_term)
    watcher = None if argv else DirWatch(MAILDROP, ("IN_MOVED_TO", "IN_CLOSE_WRITE"))
    while not stopping:
        sweep()
        if argv:
            break
        waiting.append(1)
        try:
            if not stopping:
                watcher.wait(RESCAN)
        except Stop:
            pass
        waiting.clear()
    return 0


def run():
    """Console-script entry point."""
    main("qmail-pickup", body)
