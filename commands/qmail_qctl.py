"""qmail-qctl: look at a running queue without changing it: list (-p), show (-m), shape (-q), check (-s)
(qmail-qctl(8)); the requests that change the queue are not implemented yet."""

import os
import time

from pyqmail.lib.config import control
from pyqmail.lib.queue import qcheck, qlist, qshape
from pyqmail.lib.queue.queue import split_name
from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.program import main
from pyqmail.lib.util.sgetopt import BadOption, options

PROGRAM = "qmail-qctl"
SPEC = "pm:qsF:T:o:hHd:r:fS"
CHANGES = "hHdrfS"  # the requests that would change the queue: not implemented yet
USAGE = "usage: qmail-qctl -p [-F sender] [-T recipient] [-o domain] | -m id | -q [new|active]... | -s"
MESS_CHUNK = 65536


def say(data):
    """Write bytes to stdout."""
    write_all(1, data)


def fatal(what, e):
    """End with `qmail-qctl: fatal: <what>: <error>` on fd 2 and exit 111."""
    raise Exit(TEMP_FAILURE, "fatal: %s: %s" % (what, error_str(e.errno) if e.errno else e))


def enter():
    """chdir to QMAILHOME/queue."""
    home = control.qmailhome()
    try:
        os.chdir(home)
        os.chdir("queue")
    except OSError as e:
        fatal("unable to chdir to %s/queue" % home, e)


def messages():
    """Yield every message in the queue, in ascending number (messages vanishing meanwhile are skipped)."""
    try:
        found = qlist.numbers()
    except OSError as e:
        fatal("unable to read the queue directories", e)
    for n in found:
        try:
            m = qlist.read_message(n)
        except OSError as e:
            fatal("unable to read message %d" % n, e)
        if m is not None:
            yield m


def arg(value):
    """Return an option's argument as bytes (as the queue holds addresses)."""
    return os.fsencode(value)


def listing(filters):
    """-p: list the messages passing the filters, then a summary line."""
    now = time.time()
    shown = []
    for m in messages():
        if qlist.matches(m, **filters):
            say(qlist.message_lines(m, now))
            shown.append(m)
    say(qlist.summary_line(shown))
    return 0


def show(ident):
    """-m: one message's envelope, then mess/n (headers and body) as it is, in bounded chunks."""
    if not (ident.isascii() and ident.isdigit()):
        raise Exit(PERM_FAILURE, "fatal: not a message id: %s" % ident)
    n = int(ident)
    try:
        m = qlist.read_message(n)
    except OSError as e:
        fatal("unable to read message %d" % n, e)
    if m is None:
        raise Exit(PERM_FAILURE, "fatal: no message %d in the queue" % n)
    say(qlist.envelope_lines(m, time.time()))
    try:
        fd = os.open(split_name("mess", n), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise Exit(PERM_FAILURE, "fatal: no message %d in the queue" % n)
    except OSError as e:
        fatal("unable to open mess/%d/%d" % (n % 23, n), e)
    try:
        while True:
            data = os.read(fd, MESS_CHUNK)
            if not data:
                break
            say(data)
    except OSError as e:
        fatal("unable to read mess/%d/%d" % (n % 23, n), e)
    finally:
        os.close(fd)
    return 0


def shape(operands):
    """-q [new|active]...: the table of recipients to do, by domain and age."""
    sets = set()
    for word in operands or ["new", "active"]:
        if word not in ("new", "active"):
            raise Exit(PERM_FAILURE, USAGE)
        sets.add(qlist.NEW if word == "new" else qlist.QUEUED)
    now = time.time()
    say(qshape.format_table(qshape.shape(qlist.shape_entries(messages(), now, sets))))
    return 0


def check():
    """-s: report each defect; 0 when clean, 100 when defects were found."""
    try:
        snap = qcheck.scan(".")
    except OSError as e:
        fatal("unable to read the queue", e)
    top = snap.nodes[""]
    defects = qcheck.check(snap, qcheck.system_owners(top.uid, top.gid), time.time())
    say(qcheck.report(defects))
    return PERM_FAILURE if defects else 0


def body(argv):
    """Parse the options and run the one request."""
    try:
        pairs, operands = options(argv, SPEC, PROGRAM)
    except BadOption as e:
        raise Exit(PERM_FAILURE, "%s\n%s" % (e.why, USAGE))
    filters = {}
    requests = []
    for letter, value in pairs:
        if letter in CHANGES:
            raise Exit(PERM_FAILURE, "-%s is not implemented yet" % letter)
        if letter == "F":
            filters["sender"] = arg(value)
        elif letter == "T":
            filters["recipient"] = arg(value)
        elif letter == "o":
            filters["domain"] = arg(value)
        else:
            requests.append((letter, value))
    if len(requests) != 1 or (filters and requests[0][0] != "p") or (operands and requests[0][0] != "q"):
        raise Exit(PERM_FAILURE, USAGE)
    letter, value = requests[0]
    enter()
    if letter == "p":
        return listing(filters)
    if letter == "m":
        return show(value)
    if letter == "q":
        return shape(operands)
    return check()


def run():
    """Console-script entry point."""
    main(PROGRAM, body, crash_code=TEMP_FAILURE)
