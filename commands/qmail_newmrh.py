"""qmail-newmrh: compile control/morercpthosts into control/morercpthosts.cdb, atomically (reference §1.28)."""

import os

from pyqmail.lib import control
from pyqmail.lib.exits import Exit
from pyqmail.lib.program import main

TEMP = 111


def fatal(text):
    """Return the Exit qmail-newmrh dies with: `fatal: <text>`, exit 111."""
    return Exit(TEMP, "fatal: " + text)


def domains(data):
    """Return the keys: each line lowercased, trailing spaces and tabs stripped, blank and # lines skipped."""
    lines = (line.rstrip(b" \t").lower() for line in data.split(b"\n"))
    return [line for line in lines if line and not line.startswith(b"#")]


def read_source():
    """Return control/morercpthosts' bytes."""
    try:
        with open("control/morercpthosts", "rb") as f:
            return f.read()
    except OSError:
        raise fatal("unable to read control/morercpthosts")


def write_cdb(keys):
    """Write keys (empty data) to control/morercpthosts.tmp, fsync, and rename it over the .cdb."""
    import cdbx
    try:
        fd = os.open("control/morercpthosts.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        raise fatal("unable to write to control/morercpthosts.tmp")
    try:
        maker = cdbx.CDB.make(fd, close=False)
        for key in keys:
            maker.add(key, b"")
        maker.commit().close()
        os.fsync(fd)
    except (OSError, ValueError):
        os.close(fd)
        raise fatal("unable to write to control/morercpthosts.tmp")
    try:
        os.close(fd)
    except OSError:
        raise fatal("unable to write to control/morercpthosts.tmp")
    try:
        os.rename("control/morercpthosts.tmp", "control/morercpthosts.cdb")
    except OSError:
        raise fatal("unable to move control/morercpthosts.tmp to control/morercpthosts.cdb")


def body(argv):
    """Read control/morercpthosts and replace control/morercpthosts.cdb."""
    os.umask(0o033)
    try:
        os.chdir(control.qmailhome())
    except OSError:
        raise fatal("unable to chdir to " + control.qmailhome())
    write_cdb(domains(read_source()))
    return 0


def run():
    """Console-script entry point."""
    main("qmail-newmrh", body)
