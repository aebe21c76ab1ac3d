"""maildirmake: make a Maildir: dir, dir/tmp, dir/new and dir/cur, mode 0700 (umask 077)."""

import os

from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main

USAGE = "usage: maildirmake name"


def body(argv):
    """Make the four directories in qmail's order; the first that fails ends the run."""
    if not argv:
        raise Exit(PERM_FAILURE, USAGE)
    name = os.fsencode(argv[0])
    os.umask(0o077)
    for path in (name, name + b"/tmp", name + b"/new", name + b"/cur"):
        try:
            os.mkdir(path, 0o700)
        except OSError as e:
            raise Exit(TEMP_FAILURE, "fatal: unable to mkdir %s: %s" % (os.fsdecode(path), error_str(e.errno)))
    return 0


def run():
    """Console-script entry point."""
    main("maildirmake", body, crash_code=TEMP_FAILURE)
