"""qmail-checkpassword: a checkpassword program (cr.yp.to/checkpwd/interface.html) for qmail-popup:
checks the tree's users/pop3passwords, and the system's shadow entries when root, then runs its
argument as the user. `qmail-checkpassword -H` prints a password file hash for a password on stdin."""

import os
import sys

from pyqmail.lib.config import control
from pyqmail.lib.pop3 import checkpw
from pyqmail.lib.pop3.checkpw import BAD_PASSWORD, MISUSE
from pyqmail.lib.util.exits import TEMP_FAILURE
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.program import default_signals, main, warn
from pyqmail.lib.util.sgetopt import BadOption, options

NAME = "qmail-checkpassword"


def hash_mode():
    """Read one password line from stdin and print its hash field."""
    password = sys.stdin.buffer.readline(4096).rstrip(b"\r\n")
    if not password:
        warn(NAME, "usage: qmail-checkpassword -H < password")
        return MISUSE
    write_all(1, checkpw.make_hash(password) + b"\n")
    return 0


def refuse():
    """A wrong login or password: no hint which, after a delay."""
    import time
    time.sleep(checkpw.DELAY)
    return BAD_PASSWORD


def body(argv):
    """Check the login on fd 3 and run the program as its user."""
    try:
        flags, command = options(argv, "H", NAME)
    except BadOption as e:
        warn(NAME, e.why)
        return MISUSE
    if flags:
        return hash_mode()
    if not command:
        warn(NAME, "usage: qmail-checkpassword prog [arg ...]")
        return MISUSE
    try:
        data = checkpw.read_request(3)
    except OSError as e:
        warn(NAME, "unable to read fd 3: %s" % e.strerror)
        return TEMP_FAILURE
    request = checkpw.parse_request(data)
    del data
    if request is None:
        return MISUSE
    login, password, _ = request
    if not login or not password:
        return refuse()
    try:
        entry = checkpw.file_entry(login, control.path(checkpw.PASSWORD_FILE))
    except OSError as e:
        warn(NAME, "unable to read %s: %s" % (checkpw.PASSWORD_FILE, e.strerror))
        return TEMP_FAILURE
    if entry is None and os.getuid() == 0:
        try:
            entry = checkpw.system_entry(login)
        except OSError as e:
            warn(NAME, "unable to read the shadow file: %s" % e.strerror)
            return TEMP_FAILURE
    good = checkpw.verify(entry, password)
    del password
    if not good or entry is None or entry.uid == 0:
        return refuse()
    if os.getuid() != 0 and entry.uid != os.getuid():
        warn(NAME, "not root: unable to switch to uid %d" % entry.uid)
        return TEMP_FAILURE
    try:
        checkpw.become(entry, login)
    except OSError as e:
        warn(NAME, "unable to become the user: %s" % e.strerror)
        return TEMP_FAILURE
    try:
        default_signals()  # Python ignores SIGPIPE and SIGXFSZ; the program run must not
        os.execvp(command[0], command)
    except OSError as e:
        warn(NAME, "unable to run %s: %s" % (command[0], e.strerror))
    return TEMP_FAILURE


def run():
    """Console-script entry point."""
    main(NAME, body, crash_code=TEMP_FAILURE)
