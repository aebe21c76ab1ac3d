"""qmail-tcpto: print the TCP timeout table queue/lock/tcpto (see qmail-tcpto(8))."""

import os
import time

from pyqmail.lib.config import control
from pyqmail.lib.remote import tcpto
from pyqmail.lib.util.errstr import oserror_str
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.program import main


def fatal(what, e):
    """End with qmail-tcpto's `fatal: ...: <error>` line on fd 1 and exit 111."""
    os.write(1, b"fatal: %s: %s\n" % (what.encode(), oserror_str(e).encode()))
    raise Exit(TEMP_FAILURE)


def body(argv):
    """Read the table under its lock and print one line per address with recent timeouts."""
    try:
        os.chdir(control.qmailhome())
        os.chdir("queue/lock")
    except OSError as e:
        fatal("unable to chdir", e)
    try:
        fdlock = tcpto.open_table("tcpto", os.O_WRONLY)
        fd = tcpto.open_table("tcpto", os.O_RDONLY)
    except OSError as e:
        fatal("unable to open tcpto", e)
    import fcntl
    try:
        fcntl.flock(fdlock, fcntl.LOCK_EX)
    except OSError as e:
        fatal("unable to lock tcpto", e)
    try:
        table = os.read(fd, tcpto.SIZE)
    except OSError as e:
        fatal("unable to read tcpto", e)
    os.close(fd)
    os.close(fdlock)
    write_all(1, tcpto.report_lines(table, int(time.time())))
    return 0


def run():
    """Console-script entry point."""
    main("qmail-tcpto", body, crash_code=TEMP_FAILURE)
