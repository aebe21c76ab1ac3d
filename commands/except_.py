"""except: reverse a program's verdict: success becomes a bounce (100), failure becomes success."""

from pyqmail.lib.util.program import main
from pyqmail.lib.local.runchild import bytes_argv, run_and_wait, say_exit
from pyqmail.lib.util.exits import TEMP_FAILURE

USAGE = "except: usage: except program [ arg ... ]"


def body(argv):
    """Run the program; exit 100 if it exits 0, 111 if it exits 111, else 0."""
    if not argv:
        raise say_exit(100, USAGE)
    code = run_and_wait("except", bytes_argv(argv))
    if code == 0:
        return 100
    return 111 if code == 111 else 0


def run():
    """Console-script entry point."""
    main("except", body, crash_code=TEMP_FAILURE)
