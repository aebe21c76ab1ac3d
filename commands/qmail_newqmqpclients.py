"""qmail-newqmqpclients: compile control/qmqpclients into control/qmqpclients.cdb, atomically (as qmail-newmrh)."""

from pyqmail.lib.config import access, cdbmake, control
from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main

SOURCE = "qmqpclients"
TEMP = "qmqpclients.tmp"
TARGET = "qmqpclients.cdb"


def numbered_lines(data):
    """Yield (line number, pattern) for the meaningful lines of a list control file."""
    for number, line in enumerate(data.split(b"\n"), 1):
        line = line.rstrip(control.BLANKS)
        if line and not line.startswith(b"#"):
            yield number, line


def read_source():
    """Return the bytes of control/qmqpclients; exit 111 if it cannot be read or is not a regular file (a named
    pipe would hang the run)."""
    from pyqmail.lib.util.regularfile import open_regular
    try:
        with open(open_regular(control.path("control", SOURCE), follow=True), "rb") as f:
            return f.read()
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to read control/%s: %s" % (SOURCE, e.strerror))


def write_cdb(records):
    """Write records to control/qmqpclients.tmp, fsync, rename it over control/qmqpclients.cdb, fsync control/."""
    from pyqmail.lib.queue.queue import fsync_dir
    cdbmake.replace(control.path("control", TEMP), control.path("control", TARGET), records,
                    "unable to write control/%s" % TEMP, "unable to write control/%s" % TEMP,
                    move_text="unable to move control/%s to control/%s" % (TEMP, TARGET), reasons=True)
    try:
        fsync_dir(control.path("control"))  # the rename survives a crash only once control/ is on disk
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to sync control/: %s" % e.strerror)


def body(argv):
    """Compile the patterns; a bad line leaves the old table in place and exits 111."""
    if argv:
        raise Exit(PERM_FAILURE, "usage: qmail-newqmqpclients")
    try:
        records = access.compile_patterns(numbered_lines(read_source()))
    except access.PatternError as e:
        raise Exit(TEMP_FAILURE, "fatal: control/%s: %s" % (SOURCE, e))
    write_cdb(records)
    return 0


def run():
    """Entry point."""
    main("qmail-newqmqpclients", body, crash_code=TEMP_FAILURE)
