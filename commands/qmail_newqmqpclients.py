"""qmail-newqmqpclients: compile control/qmqpclients into control/qmqpclients.cdb, atomically (as qmail-newmrh)."""

import os

from pyqmail.lib.config import access, cdbmake, control
from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main
from pyqmail.lib.util.regularfile import create_afresh

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
    """Return the bytes of control/qmqpclients; exit 111 if it cannot be read."""
    try:
        with open(control.path("control", SOURCE), "rb") as f:
            return f.read()
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to read control/%s: %s" % (SOURCE, e.strerror))


def write_cdb(records):
    """Write records to control/qmqpclients.tmp, fsync, and rename it over control/qmqpclients.cdb."""
    import cdbx
    temp, target = control.path("control", TEMP), control.path("control", TARGET)
    try:
        fd = create_afresh(temp, 0o644)  # never through a planted link
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to write control/%s: %s" % (TEMP, e.strerror))
    try:
        maker = cdbx.CDB.make(fd)
        for key, value in records:
            maker.add(key, value)
        maker.commit().close()
        os.fsync(fd)
        ours = cdbmake.is_ours(fd, temp)
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to write control/%s: %s" % (TEMP, e.strerror or e))
    finally:
        os.close(fd)
    if not ours:  # a second run at once removed ours and writes its own there: the table is left to it
        raise Exit(TEMP_FAILURE, "fatal: unable to move control/%s to control/%s: replaced meanwhile" % (TEMP, TARGET))
    try:
        os.rename(temp, target)
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to move control/%s to control/%s: %s" % (TEMP, TARGET, e.strerror))
    dirfd = os.open(control.path("control"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


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
