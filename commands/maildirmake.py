"""maildirmake: make a Maildir: dir, dir/tmp, dir/new and dir/cur, mode 0700 (umask 077)."""

import os

from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main

USAGE = "usage: maildirmake name"


def fail(what, name, e):
    """Return the Exit for a failed step: `fatal: unable to <what> <name>: <error>`, 111."""
    return Exit(TEMP_FAILURE, "fatal: unable to %s %s: %s" % (what, os.fsdecode(name), error_str(e.errno)))


def body(argv):
    """Make the four directories in qmail's order; the first that fails ends the run. The subdirectories are
    made in the directory just made (as qmail's chdir): its parent is held open and it is opened without
    following a symlink, so nobody can swap another directory or a symlink in between."""
    if not argv:
        raise Exit(PERM_FAILURE, USAGE)
    name = os.fsencode(argv[0])
    os.umask(0o077)
    parent, base = os.path.split(name.rstrip(b"/"))
    try:
        if not base:  # "" or "/": nothing to hold; mkdir says why it cannot be made
            os.mkdir(name, 0o700)
        parent_fd = os.open(parent or b".", os.O_PATH | os.O_DIRECTORY)
        os.mkdir(base, 0o700, dir_fd=parent_fd)
    except OSError as e:
        raise fail("mkdir", name, e)
    try:
        fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as e:
        raise fail("chdir to", name, e)
    for sub in (b"tmp", b"new", b"cur"):
        try:
            os.mkdir(sub, 0o700, dir_fd=fd)
        except OSError as e:
            raise fail("mkdir", name + b"/" + sub, e)
    return 0


def run():
    """Console-script entry point."""
    main("maildirmake", body, crash_code=TEMP_FAILURE)
