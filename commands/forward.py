"""forward: queue the message (from $NEWSENDER, $DTLINE first) to every address given."""

import os

from pyqmail.lib.util.program import main
from pyqmail.lib.local.runchild import fatal, queue_message, queued_or_exit, say_exit
from pyqmail.lib.util.exits import TEMP_FAILURE

USAGE = "forward: usage: forward address [ address ... ]"


def body(argv):
    """Queue fd 0 to the addresses; print `forward: qp <pid>`. No address is a usage error, never a message
    queued to nobody (a successful delivery that loses it)."""
    if not argv:
        raise say_exit(100, USAGE)
    sender = os.environb.get(b"NEWSENDER")
    if sender is None:
        raise fatal("forward", 100, "NEWSENDER not set")
    dtline = os.environb.get(b"DTLINE")
    if dtline is None:
        raise fatal("forward", 100, "DTLINE not set")
    queued = queue_message("forward", dtline, sender, [os.fsencode(a) for a in argv])
    qp = queued_or_exit("forward", queued)
    raise say_exit(0, "forward: qp %d" % qp)


def run():
    """Console-script entry point."""
    main("forward", body, crash_code=TEMP_FAILURE)
