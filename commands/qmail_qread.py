"""qmail-qread: list every preprocessed message in the queue with its recipients, then the held ones
(qmail-qread(8))."""

import os
import sys

from pyqmail.lib.config import control
from pyqmail.lib.queue import qadmin, qlist, qreport
from pyqmail.lib.util.errstr import error_str, oserror_str
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main
from pyqmail.lib.queue.queue import SPLIT, split_name


def say(text):
    """Write bytes to stdout (qmail-qread reports even its problems there)."""
    sys.stdout.buffer.write(text)


def trouble(n, error):
    """Report a message that cannot be read, and go on."""
    say(b"warning: trouble with #%d: %s\n" % (n, oserror_str(error).encode(
        "utf-8", "backslashreplace")))


def die(what, error):
    """Report a fatal problem on stdout and exit 111."""
    say(b"fatal: %s: %s\n" % (what.encode(), error_str(error.errno).encode()))
    raise Exit(TEMP_FAILURE)


def read_info(n, held=False):
    """Return (info bytes, mtime) of info/n (or of hold/n); bounded, never through a link or from a FIFO."""
    return qlist.read_bounded(qadmin.hold_name(n) if held else split_name("info", n))


def show(n, held=False):
    """Print message n: its header line, then its local and remote recipients (held: its info is hold/n)."""
    try:
        size = os.stat(split_name("mess", n)).st_size
    except OSError as e:
        return trouble(n, e)
    bouncing = os.path.exists("bounce/%d" % n)
    try:
        info, mtime = read_info(n, held)
    except OSError as e:
        return trouble(n, e)
    say(qreport.header_line(int(mtime), n, size, info, bouncing, held))
    for channel in (b"local", b"remote"):
        try:
            say(qreport.recipient_lines(channel, qlist.read_bounded(split_name(channel.decode(), n))[0]))
        except FileNotFoundError:
            pass
        except OSError as e:
            trouble(n, e)


def body(argv):
    """Walk info/0..22 and show each message."""
    try:
        os.chdir(control.qmailhome())
        os.chdir("queue")
    except OSError as e:
        die("unable to chdir", e)
    for split in range(SPLIT):
        directory = "info/%d" % split
        try:
            names = os.listdir(directory)
        except OSError as e:
            die("unable to opendir " + directory, e)
        for n in qreport.message_numbers(names):
            show(n)
    try:
        for n in qadmin.held_numbers():  # then the held messages, and a word about damaged ones (not qmail's)
            show(n, held=True)
        say(qreport.corrupt_warning(qadmin.corrupt_count()))
    except OSError as e:
        die("unable to read hold/ or corrupt/", e)
    return 0


def run():
    """Console-script entry point."""
    main("qmail-qread", body)
