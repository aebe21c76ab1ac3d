"""qmail-rspawn: run qmail-remote for each remote delivery qmail-send asks for (reference §1.5, §1.7)."""

import os

from pyqmail.lib import spawnproto
from pyqmail.lib.errstr import error_str
from pyqmail.lib.program import main

OVERRIDE = "QMAILREMOTE"
TCPTO_SIZE = 1024


def clear_tcpto():
    """Forget every remembered connection timeout, as qmail-rspawn does at start (lock/tcpto, not created)."""
    try:
        fd = os.open("../lock/tcpto", os.O_WRONLY)
    except OSError:
        return
    try:
        os.write(fd, b"\0" * TCPTO_SIZE)
    except OSError:
        pass
    finally:
        os.close(fd)


def remote_program():
    """Return the program to run: $QMAILREMOTE, else qmail-remote, found through PATH."""
    return os.environb.get(OVERRIDE.encode()) or b"qmail-remote"


def remote_child(program):
    """Return the child body: exec `program host sender recipient` (no shell, fixed argv)."""
    def child(sender, recipient):
        _, host = spawnproto.split_recipient(recipient)
        try:
            os.execvp(program, [program, host, sender, recipient])
        except OSError as e:
            # any failure to start it is temporary: a missing program must not bounce mail (qmail: D on ENOENT)
            report = b"ZUnable to run qmail-remote (%s): %s. (#4.3.0)\n\0" % (program, error_str(e.errno).encode())
            os.write(1, report)
            return 0
        return 111
    return child


def body(argv):
    """Serve qmail-send on fds 0 and 1 until it closes fd 0 and every delivery is reported."""
    from pyqmail.lib.spawner import Spawner, enter_mess
    _, owner = enter_mess()
    clear_tcpto()
    return Spawner(remote_child(remote_program()), spawnproto.remote_report, spawnproto.REMOTE_OUTPUT_MAX,
                   owner).serve()


def run():
    """Console-script entry point."""
    main("qmail-rspawn", body, crash_code=111)
