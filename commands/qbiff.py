"""qbiff: announce the new message on the user's terminals; always exits 0."""

import os

from pyqmail.lib.local import biff
from pyqmail.lib.rfc822 import headerbody
from pyqmail.lib.util.program import main


def read_utmp():
    """Return the utmp file's bytes (empty if unreadable), bounded."""
    try:
        with open(biff.UTMP, "rb") as f:
            return f.read(biff.RECORD * 65536)
    except OSError:
        return b""


def body(argv):
    """Write the notice to every tty of $USER that has biff on."""
    env = os.environb
    user, sender, local = env.get(b"USER"), env.get(b"SENDER"), env.get(b"LOCAL")
    if user is None or sender is None or local is None:
        return 0
    try:
        text = biff.preview(headerbody.split(headerbody.lines(0, biff.LINE_MAX)))
    except OSError:
        return 0
    data = biff.notice(local, sender, text)
    for line in biff.tty_lines(read_utmp(), user):
        biff.write_tty(line, data, os.getuid())
    return 0


def run():
    """Console-script entry point."""
    main("qbiff", body, crash_code=0)
