"""condredirect: forward the message to a new address if a program exits 0, and stop the .qmail file."""

import os

from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main
from pyqmail.lib.local.runchild import bytes_argv, fatal, queue_message, queued_or_exit, run_and_wait, say_exit

USAGE = "condredirect: usage: condredirect newaddress program [ arg ... ]"


def body(argv):
    """Run the program; on 0 queue the message (sender $SENDER, $DTLINE first) and exit 99."""
    if len(argv) < 2:
        raise say_exit(100, USAGE)
    code = run_and_wait("condredirect", bytes_argv(argv[1:]))
    if code == 111:
        raise fatal("condredirect", 111, "temporary child error")
    if code != 0:
        raise Exit(0)
    try:
        os.lseek(0, 0, os.SEEK_SET)
    except OSError as e:
        raise fatal("condredirect", 111, "unable to rewind: " + error_str(e.errno))
    sender = os.environb.get(b"SENDER")
    if sender is None:
        raise fatal("condredirect", 100, "SENDER not set")
    dtline = os.environb.get(b"DTLINE")
    if dtline is None:
        raise fatal("condredirect", 100, "DTLINE not set")
    queued = queue_message("condredirect", dtline, sender, [os.fsencode(argv[0])])
    qp = queued_or_exit("condredirect", queued)
    raise say_exit(99, "condredirect: qp %d" % qp)


def run():
    """Console-script entry point."""
    main("condredirect", body, crash_code=TEMP_FAILURE)
