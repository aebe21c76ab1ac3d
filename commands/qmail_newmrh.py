"""qmail-newmrh: compile control/morercpthosts into control/morercpthosts.cdb, atomically (qmail-newmrh(8))."""

import os

from pyqmail.lib.config import cdbmake, control
from pyqmail.lib.util.exits import Exit
from pyqmail.lib.util.program import main

TEMP = 111


def fatal(text):
    """Return the Exit qmail-newmrh dies with: `fatal: <text>`, exit 111."""
    return Exit(TEMP, "fatal: " + text)


def domains(data):
    """Return the keys: each line lowercased, trailing blanks (a CRLF file's CR too) stripped, blank and # lines
    skipped."""
    lines = (line.rstrip(control.BLANKS).lower() for line in data.split(b"\n"))
    return [line for line in lines if line and not line.startswith(b"#")]


def read_source():
    """Return control/morercpthosts' bytes (a regular file only: a FIFO would hold the run for ever)."""
    from pyqmail.lib.util.regularfile import open_regular
    try:
        with open(open_regular("control/morercpthosts", follow=True), "rb") as f:
            return f.read()
    except OSError:
        raise fatal("unable to read control/morercpthosts")


def write_cdb(keys):
    """Write keys (empty data) to control/morercpthosts.tmp, fsync, and rename it over the .cdb."""
    cdbmake.replace("control/morercpthosts.tmp", "control/morercpthosts.cdb", ((k, b"") for k in keys),
                    "unable to write to control/morercpthosts.tmp", "unable to write to control/morercpthosts.tmp")


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
