"""qmail-newu: compile QMAILHOME/users/assign into users/cdb, atomically (qmail-newu(8))."""

import os

from pyqmail.lib.config import cdbmake, control, users
from pyqmail.lib.util.exits import Exit
from pyqmail.lib.util.program import main

TEMP = 111


def fatal(text):
    """Return the Exit qmail-newu dies with: `fatal: <text>`, exit 111."""
    return Exit(TEMP, "fatal: " + text)


def read_assign():
    """Return users/assign's bytes (a regular file only: a FIFO would hold the run for ever)."""
    from pyqmail.lib.util.regularfile import open_regular
    try:
        f = open(open_regular("users/assign", follow=True), "rb")
    except OSError:
        raise fatal("unable to open users/assign")
    with f:
        try:
            return f.read()
        except OSError:
            raise fatal("unable to read users/assign")


def write_cdb(records):
    """Write records to users/cdb.tmp, fsync and close it, then rename it over users/cdb."""
    cdbmake.replace("users/cdb.tmp", "users/cdb", records,
                    "unable to open users/cdb.tmp", "unable to write users/cdb.tmp")


def body(argv):
    """Read users/assign, check it, and replace users/cdb."""
    os.umask(0o033)
    try:
        os.chdir(control.qmailhome())
    except OSError:
        raise fatal("unable to chdir")
    data = read_assign()
    try:
        entries = users.parse_assign(data)
    except users.AssignError:
        raise fatal("bad format in users/assign")
    for number, entry in enumerate(entries, 1):  # entries are the lines before the `.`, one each
        why = users.unusable(entry)
        if why is not None:
            raise fatal("bad format in users/assign: line %d: %s" % (number, why))
    write_cdb(users.cdb_records(entries))
    return 0


def run():
    """Console-script entry point."""
    main("qmail-newu", body)
