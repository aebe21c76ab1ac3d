"""mailsubj: send fd 0 with a Subject and To header through qmail-inject (which takes the recipients from To)."""

import os

from pyqmail.lib.config import control
from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.program import main
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.local.runchild import fatal, say_exit, wait_code
from pyqmail.lib.util.exits import TEMP_FAILURE

USAGE = "mailsubj: usage: mailsubj subject recip ..."


def folded(value):
    """Return value with each newline followed by a space, so that it stays one header field."""
    return value.replace(b"\n", b"\n ")


def head(subject, recipients):
    """Return the header mailsubj writes before the message text."""
    return b"Subject: " + folded(subject) + b"\nTo: " + folded(b" ".join(recipients)) + b"\n\n"


def copy(fd_in, fd_out):
    """Copy fd_in to fd_out until the end of fd_in."""
    while True:
        data = os.read(fd_in, 65536)
        if not data:
            return
        write_all(fd_out, data)


def body(argv):
    """Run QMAILHOME/bin/qmail-inject on the header and fd 0; exit with its exit code."""
    if len(argv) < 2:
        raise say_exit(100, USAGE)
    args = [os.fsencode(a) for a in argv]
    inject = control.path("bin", "qmail-inject")
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        raise fatal("mailsubj", 111, "unable to fork: " + error_str(e.errno))
    if pid == 0:
        try:
            os.dup2(r, 0)
            os.close(r)
            os.close(w)
            os.execv(inject, [inject])
        except OSError as e:
            say_exit(111, "mailsubj: fatal: unable to run qmail-inject: " + error_str(e.errno))
        finally:
            os._exit(111)
    os.close(r)
    try:
        write_all(w, head(args[0], args[1:]))
        copy(0, w)
    except OSError:
        pass  # qmail-inject stopped reading: its exit code says why
    os.close(w)
    return wait_code("mailsubj", pid)


def run():
    """Console-script entry point."""
    main("mailsubj", body, crash_code=TEMP_FAILURE)
