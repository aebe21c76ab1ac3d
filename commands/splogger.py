"""splogger: each line of fd 0 to syslog, stamped, with qmail's priorities and folding (splogger(8))."""

import os

from pyqmail.lib.util.exits import TEMP_FAILURE
from pyqmail.lib.util.program import main
from pyqmail.lib.util.syslogfold import Folder

MAIL = 2  # syslog's LOG_MAIL facility number


def facility(arg):
    """Return qmail's scan_ulong of arg (its leading digits, 0 if none), shifted into a facility: wrapped as C
    wraps it (a 64-bit unsigned long, then openlog's int), so an overlong number is glibc's to refuse."""
    digits = ""
    for ch in arg:
        if not "0" <= ch <= "9":
            break
        digits += ch
    value = ((int(digits) if digits else 0) << 3) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def stamp():
    """Return `<seconds>.<microseconds, 6 digits>` now."""
    import time
    ns = time.time_ns()
    return b"%d.%06d" % (ns // 1000000000, ns // 1000 % 1000000)


def body(argv):
    """Log until EOF, then exit 0."""
    import syslog
    ident = argv[0] if argv else "splogger"
    ident = ident.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    fac = facility(argv[1]) if len(argv) > 1 else MAIL << 3
    syslog.openlog(ident, 0, fac)
    folder = Folder(stamp)
    while True:
        try:
            data = os.read(0, 65536)
        except OSError:
            data = b""
        if not data:
            return 0
        for prio, record in folder.feed(data):
            syslog.syslog(prio, record.decode("ascii"))


def run():
    """Console-script entry point."""
    main("splogger", body, crash_code=TEMP_FAILURE)
