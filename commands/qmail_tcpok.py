"""qmail-tcpok: forget every remembered connection timeout: 1024 NUL bytes over queue/lock/tcpto (qmail-tcpok(8))."""

import os

from pyqmail.lib.config import control
from pyqmail.lib.remote import tcpto
from pyqmail.lib.util.errstr import oserror_str
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.program import main


def fatal(what, e):
    """End with `qmail-tcpok: fatal: <what>: <error>` on fd 2 and exit 111."""
    raise Exit(TEMP_FAILURE, "fatal: %s: %s" % (what, oserror_str(e)))


def body(argv):
    """Clear the table under its lock."""
    home = control.qmailhome()
    try:
        os.chdir(home)
    except OSError as e:
        fatal("unable to chdir to %s" % home, e)
    try:
        os.chdir("queue/lock")
    except OSError as e:
        fatal("unable to chdir to %s/queue/lock" % home, e)
    try:
        fd = tcpto.open_table("tcpto", os.O_WRONLY)
    except OSError as e:
        fatal("unable to write %s/queue/lock/tcpto" % home, e)
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:
        fatal("unable to lock %s/queue/lock/tcpto" % home, e)
    try:
        write_all(fd, bytes(tcpto.SIZE))
    except OSError as e:
        fatal("unable to clear %s/queue/lock/tcpto" % home, e)
    return 0


def run():
    """Console-script entry point."""
    main("qmail-tcpok", body, crash_code=TEMP_FAILURE)
