"""preline: feed a command the message preceded by $UFLINE, $RPLINE and $DTLINE."""

import os

from pyqmail.lib.local.delivery_env import one_line
from pyqmail.lib.util.errstr import error_str, is_temp
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.program import main
from pyqmail.lib.util.sgetopt import BadOption, options
from pyqmail.lib.local.runchild import execvp, fatal, say_exit, wait_code
from pyqmail.lib.util.program import default_signals
from pyqmail.lib.util.exits import TEMP_FAILURE

USAGE = "preline: usage: preline cmd [ arg ... ]"
FLAGS = {"f": ("ufline", False), "r": ("rpline", False), "d": ("dtline", False),
         "F": ("ufline", True), "R": ("rpline", True), "D": ("dtline", True)}


def parse_args(argv):
    """Return ({line: wanted?}, command argv) from `[-frdFRD] cmd [arg ...]`."""
    wanted = {"ufline": True, "rpline": True, "dtline": True}
    try:
        flags, operands = options(argv, "frdFRD", "preline")
    except BadOption:
        raise say_exit(100, USAGE)
    if not operands:
        raise say_exit(100, USAGE)
    for flag, _ in flags:
        wanted[FLAGS[flag][0]] = FLAGS[flag][1]
    return wanted, [os.fsencode(a) for a in operands]


def start(command):
    """Start command reading from a new pipe; return (pid, write end), or (pid, None) if it could not
    be run (the child has said why and exits with the code for that)."""
    r, w = os.pipe()
    failed_r, failed_w = os.pipe2(os.O_CLOEXEC)  # closed by a successful exec: EOF means it ran
    try:
        pid = os.fork()
    except OSError as e:
        raise fatal("preline", 111, "unable to fork: " + error_str(e.errno))
    if pid == 0:
        try:
            os.close(w)
            os.close(failed_r)
            os.dup2(r, 0)
            default_signals()
            execvp(command)
        except OSError as e:
            text = "preline: fatal: unable to run %s: %s\n" % (os.fsdecode(command[0]), error_str(e.errno))
            os.write(2, text.encode("utf-8", "surrogateescape"))
            os.write(failed_w, b"x")
            os._exit(111 if is_temp(e.errno) else 100)
        finally:
            os._exit(111)
    os.close(r)
    os.close(failed_w)
    ran = not os.read(failed_r, 1)  # so an exec failure is reported as such, never as a broken pipe
    os.close(failed_r)
    if not ran:
        os.close(w)
        return pid, None
    return pid, w


def copy(w, head):
    """Write head, then fd 0 to its end, to w."""
    data = head
    while True:
        write_all(w, data)
        data = os.read(0, 65536)
        if not data:
            return


def body(argv):
    """Pipe the chosen lines and the message into the command; exit with its exit code."""
    env = os.environb
    if not all(k in env for k in (b"UFLINE", b"RPLINE", b"DTLINE")):
        raise say_exit(100, USAGE)
    wanted, command = parse_args(argv)
    # one line each even when another qmail-local left a CR or LF of the address in them
    head = b"".join(one_line(env[k.upper().encode()]) for k in ("ufline", "rpline", "dtline") if wanted[k])
    pid, w = start(command)
    if w is None:
        return wait_code("preline", pid)
    try:
        copy(w, head)
    except OSError as e:
        raise fatal("preline", 111, "unable to copy input: " + error_str(e.errno))
    os.close(w)
    return wait_code("preline", pid)


def run():
    """Console-script entry point."""
    from pyqmail.lib.util.envsnapshot import undo_locale_coercion
    undo_locale_coercion()  # the command inherits our environment: not the interpreter's LC_CTYPE
    main("preline", body, crash_code=TEMP_FAILURE)
