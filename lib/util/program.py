"""The one wrapper every program runs under: exceptions become exit codes, never tracebacks; and the signal
dispositions every program we exec starts with (default_signals)."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)
import sys

from pyqmail.lib.util.exits import Exit

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Sequence
    from typing import NoReturn

    Body = Callable[[list[str]], int | None]  # a program's body: argv without its name -> exit code


def warn(program: str, text: str) -> None:
    """Write one diagnostic line to fd 2, ignoring a closed or broken descriptor."""
    try:
        posix.write(2, ("%s: %s\n" % (program, text)).encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def default_signals(pipe: bool = True) -> None:
    """Before an exec: put SIGXFSZ (and SIGPIPE, unless pipe is False) back to SIG_DFL. Python's start-up
    ignores both, and an ignored signal stays ignored through exec: a program over its file size limit
    would get EFBIG instead of the SIGXFSZ it does under qmail's C programs."""
    import _signal
    if pipe:
        _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)


def call(program: str, body: Body, crash_code: int = 111, argv: list[str] | None = None) -> int:
    """Run body(argv) and return its exit code; Exit gives its code and message, anything else crash_code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = body(argv)
    except Exit as e:
        if e.message:
            warn(program, e.message)
        code = e.code
    except KeyboardInterrupt:
        code = crash_code
    except MemoryError:
        warn(program, "out of memory")
        code = crash_code
    except Exception as e:  # the last line of defence: one clear line, no traceback
        warn(program, "internal error: %s: %s" % (type(e).__name__, e))
        code = crash_code
    try:
        sys.stdout.flush()
    except Exception:
        pass
    return code or 0


def main(program: str, body: Body, crash_code: int = 111, argv: list[str] | None = None) -> NoReturn:
    """Run body(argv) and exit with its code (see call)."""
    posix._exit(call(program, body, crash_code, argv))
