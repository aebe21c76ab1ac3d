"""qmail-getpw: find the account and extension for a local part in the passwd database (qmail-getpw(8))."""

import os

from pyqmail.lib.config import getpw
from pyqmail.lib.util.exits import GETPW_USAGE, Exit
from pyqmail.lib.util.program import main


def body(argv):
    """Print user, uid, gid, homedir, dash and ext for argv[0], each followed by a NUL."""
    if not argv:
        raise Exit(GETPW_USAGE)
    pw, dash, ext = getpw.lookup(os.fsencode(argv[0]))
    fields = (os.fsencode(pw.pw_name), b"%d" % pw.pw_uid, b"%d" % pw.pw_gid, os.fsencode(pw.pw_dir), dash, ext)
    os.write(1, b"".join(field + b"\0" for field in fields))
    return 0


def run():
    """Console-script entry point."""
    main("qmail-getpw", body)
