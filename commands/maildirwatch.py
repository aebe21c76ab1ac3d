"""maildirwatch: clear the screen and show each new message of $MAILDIR (sender, recipient, From line and the
start of its subject and text, qmail 1.03's maildirwatch(1)), again whenever new/ changes (inotify) and at least
every 30 seconds, as qmail 1.03 does."""

import os
import time

from pyqmail.lib.local import maildirscan
from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.program import main

INTERVAL = 30
CLEAR = b"\033[;H\033[;J"


def summary(path):
    """Return the lines shown for the message at path, or b"" if it cannot be opened."""
    from pyqmail.lib.rfc822.headerbody import lines, split
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)  # a FIFO put there must not hang us
    except OSError:
        return b""
    try:
        s = maildirscan.Summary()
        for kind, data in split(lines(fd, 65536)):
            if kind == "field":
                s.field(data)
            else:
                if s.full():
                    break  # the header is over and no more text is shown
                s.body(data)
        return s.render()
    except OSError:
        raise Exit(TEMP_FAILURE, "fatal: trouble reading new message")
    finally:
        os.close(fd)


def show(data):
    """Write data to fd 1; its failure (the terminal or pipe gone) ends the run with 111."""
    try:
        write_all(1, data)
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to write output: " + error_str(e.errno))


def body(argv):
    """Show the screen, sleep, for ever."""
    maildirscan.chdir_maildir(os.environb, "maildirwatch")
    from pyqmail.lib.util.dirwatch import DirWatch
    watch = DirWatch(b"new", ("IN_MOVED_TO", "IN_CREATE", "IN_DELETE", "IN_MOVED_FROM"))
    while True:
        maildirscan.clean_tmp()
        messages = maildirscan.scan((b"new",))
        show(CLEAR)
        for _, path in messages:
            text = summary(path)
            if text:
                show(text)
        watch.wait(INTERVAL)
        time.sleep(1 - time.time() % 1)  # a message of this very second is listed only once it is over


def run():
    """Console-script entry point."""
    main("maildirwatch", body, crash_code=TEMP_FAILURE)
