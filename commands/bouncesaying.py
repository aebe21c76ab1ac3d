"""bouncesaying: bounce the message with a text, or only if a program exits 0."""

from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main
from pyqmail.lib.local.runchild import bytes_argv, fatal, run_and_wait, say_exit

USAGE = "bouncesaying: usage: bouncesaying error [ program [ arg ... ] ]"


def body(argv):
    """Print error and exit 100, unless a given program exits nonzero (0: bounce, 111: defer)."""
    if not argv:
        raise say_exit(100, USAGE)
    if len(argv) > 1:
        code = run_and_wait("bouncesaying", bytes_argv(argv[1:]))
        if code == 111:
            raise fatal("bouncesaying", 111, "temporary child error")
        if code != 0:
            raise Exit(0)
    raise say_exit(100, argv[0])


def run():
    """Console-script entry point."""
    main("bouncesaying", body, crash_code=TEMP_FAILURE)
