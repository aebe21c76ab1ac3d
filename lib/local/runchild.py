"""What the dot-qmail helpers share: fatal messages, running a program and reading its exit code (preline(1),
condredirect(1), bouncesaying(1), except(1), forward(1), qreceipt(1))."""

from __future__ import annotations

import os

from pyqmail.lib.util.errstr import error_str, is_temp
from pyqmail.lib.util.exits import Exit
from pyqmail.lib.util.program import default_signals

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable
    from typing import NoReturn


def fatal(program: str, code: int, text: str) -> Exit:
    """Return Exit(code) after writing `<program>: fatal: <text>` to fd 2."""
    return say_exit(code, "%s: fatal: %s" % (program, text))


def say_exit(code: int, text: str) -> Exit:
    """Return Exit(code) after writing text and a newline to fd 2 (no prefix added)."""
    try:
        os.write(2, text.encode("utf-8", "surrogateescape") + b"\n")
    except OSError:
        pass
    return Exit(code)


def execvp(argv: list[bytes]) -> NoReturn:
    """os.execvp(argv[0], argv), failing on an empty name as execvp(3) does (ENOENT), not with ValueError."""
    if not argv[0]:
        import errno
        raise OSError(errno.ENOENT, "empty file name")
    os.execvp(argv[0], argv)


def exec_or_exit(argv: list[bytes], stdin_fd: int | None = None) -> NoReturn:
    """In a child: exec argv via PATH; if that fails exit 111 for a temporary error, else 100."""
    try:
        default_signals()
        if stdin_fd is not None:
            os.dup2(stdin_fd, 0)
        execvp(argv)
    except OSError as e:
        os._exit(111 if is_temp(e.errno) else 100)
    finally:
        os._exit(111)


def run_and_wait(program: str, argv: list[bytes]) -> int:
    """Run argv (program name first) on our fd 0 and return its exit code; a crash is fatal (111)."""
    from pyqmail.lib.util.envsnapshot import undo_locale_coercion
    undo_locale_coercion()  # the program gets the delivery's environment, not the interpreter's LC_CTYPE
    try:
        pid = os.fork()
    except OSError as e:
        raise fatal(program, 111, "unable to fork: " + error_str(e.errno))
    if pid == 0:
        exec_or_exit(argv)
    return wait_code(program, pid)


def wait_code(program: str, pid: int) -> int:
    """Wait for pid and return its exit code; a crashed child is fatal (111)."""
    try:
        _, status = os.waitpid(pid, 0)
    except OSError:
        raise fatal(program, 111, "wait failed")
    if os.WIFSIGNALED(status):
        raise fatal(program, 111, "child crashed")
    return os.WEXITSTATUS(status)


def bytes_argv(argv: Iterable[str]) -> list[bytes]:
    """Return argv as bytes, exactly as the kernel passed it."""
    return [os.fsencode(a) for a in argv]


def queue_message(program: str, head: bytes, sender: bytes, recipients: Iterable[bytes],
                  fd: int | None = 0) -> tuple[int, str]:
    """Queue head + the rest of fd through qmail-queue; return (its pid, its D/Z text or "")."""
    from pyqmail.lib.queue.queuehere import open_queue
    try:
        qq = open_queue()
    except OSError as e:
        raise fatal(program, 111, "unable to fork: " + error_str(e.errno))
    qq.put(head)
    while fd is not None:
        try:
            data = os.read(fd, 65536)
        except OSError as e:
            qq.abort()
            raise fatal(program, 111, "unable to read message: " + error_str(e.errno))
        if not data:
            break
        qq.put(data)
    return qq.pid, qq.close(sender, recipients)


def queued_or_exit(program: str, pid_result: tuple[int, str]) -> int:
    """Return the qmail-queue pid, or raise its failure as `<program>: fatal: <text>` (D: 100, Z: 111)."""
    pid, result = pid_result
    if result:
        raise fatal(program, 100 if result[0] == "D" else 111, result[1:])
    return pid
