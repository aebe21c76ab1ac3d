"""qmail-newu: compile QMAILHOME/users/assign into users/cdb, atomically (reference §1.27)."""

import os

from pyqmail.lib import control, users
from pyqmail.lib.exits import Exit
from pyqmail.lib.program import main

TEMP = 111


def fatal(text):
    """Return the Exit qmail-newu dies with: `fatal: <text>`, exit 111."""
    return Exit(TEMP, "fatal: " + text)


def read_assign():
    """Return users/assign's bytes."""
    try:
        f = open("users/assign", "rb")
    except OSError:
        raise fatal("unable to open users/assign")
    with f:
        try:
            return f.read()
        except OSError:
            raise fatal("unable to read users/assign")


def write_cdb(records):
    """Write records to users/cdb.tmp, fsync and close it, then rename it over users/cdb."""
    import cdbx
    try:
        fd = os.open("users/cdb.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        raise fatal("unable to open users/cdb.tmp")
    try:
        maker = cdbx.CDB.make(fd, close=False)
        for key, value in records:
            maker.add(key, value)
        maker.commit().close()
        os.fsync(fd)
    except (OSError, ValueError):
        os.close(fd)
        raise fatal("unable to write users/cdb.tmp")
    try:
        os.close(fd)  # NFS reports write errors at close
    except OSError:
        raise fatal("unable to write users/cdb.tmp")
    try:
        os.rename("users/cdb.tmp", "users/cdb")
    except OSError:
        raise fatal("unable to move users/cdb.tmp to users/cdb")


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
    write_cdb(users.cdb_records(entries))
    return 0


def run():
    """Console-script entry point."""
    main("qmail-newu", body)
