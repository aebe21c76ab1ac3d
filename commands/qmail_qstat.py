"""qmail-qstat: count the messages in the queue, those not yet preprocessed, held, and set aside as damaged
(qmail-qstat(8))."""

import os
import sys

from pyqmail.lib.config import control
from pyqmail.lib.queue import qadmin, qreport
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main


def count_below(directory):
    """Count every entry below directory, at any depth, as `find dir | wc` minus the directory itself."""
    total = 0
    for entry in os.scandir(directory):
        total += 1
        if entry.is_dir(follow_symlinks=False):
            total += count_below(entry.path)
    return total


def body(argv):
    """Print the two counts."""
    try:
        os.chdir(control.qmailhome())
        in_queue = sum(count_below(d.path) for d in os.scandir("queue/mess") if d.is_dir(follow_symlinks=False))
        not_preprocessed = count_below("queue/todo")
        held = len(qadmin.held_numbers("queue"))
        corrupt = qadmin.corrupt_count("queue")
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to read the queue: %s" % (e.strerror or e))
    sys.stdout.buffer.write(qreport.qstat_lines(in_queue, not_preprocessed, held, corrupt))
    return 0


def run():
    """Console-script entry point."""
    main("qmail-qstat", body)
