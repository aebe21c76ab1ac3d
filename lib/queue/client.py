"""The client side of qmail-queue for every injector (qmail-queue(8)): start it, feed it, read its verdict."""

from __future__ import annotations

import fcntl
import os

from pyqmail.lib.config import control
from pyqmail.lib.queue import envelope
from pyqmail.lib.util.exits import (CUSTOM, CUSTOM_MAX, EXEC_FAILED, QQ_CRASHED, QQ_WAITPID_SURPRISE, QUEUED,
                                    READ_ERROR, qq_text)
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.program import default_signals

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable
    from typing import NoReturn


def _child(msg_r: int, env_r: int, err_w: int, home: str, program: str) -> NoReturn:
    """In the forked child: wire fds 0, 1 and 6, chdir to QMAILHOME, exec qmail-queue; never returns."""
    try:
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (msg_r, env_r, err_w)]
        for fd, target in zip(high, (0, 1, 6)):
            os.dup2(fd, target)
            os.set_inheritable(target, True)
        os.chdir(home)
        default_signals(pipe=False)  # SIGPIPE stays ignored, as qmail-smtpd leaves it for qmail-queue
        os.execv(program, [program])
    except BaseException:
        pass
    os._exit(EXEC_FAILED)


class QmailQueue:
    """One running qmail-queue ($QMAILQUEUE or QMAILHOME/bin/qmail-queue) being fed a message."""

    def __init__(self, home: str | None = None) -> None:
        home = home or control.qmailhome()
        program = os.environ.get("QMAILQUEUE") or "bin/qmail-queue"
        msg_r, self.msg_w = os.pipe()
        env_r, self.env_w = os.pipe()
        self.err_r, err_w = os.pipe()
        self.failed = False
        self.pid = os.fork()
        if self.pid == 0:
            _child(msg_r, env_r, err_w, home, program)
        for fd in (msg_r, env_r, err_w):
            os.close(fd)

    def put(self, data: bytes) -> None:
        """Append message bytes; a write error is remembered and reported at close."""
        if self.failed or not data:
            return
        try:
            write_all(self.msg_w, data)
        except OSError:
            self.failed = True

    def fail(self) -> None:
        """Make sure nothing is queued: qmail-queue will see its input end before the envelope does."""
        self.failed = True

    def close(self, sender: bytes, recipients: Iterable[bytes]) -> str:
        """Send the envelope (unless failed), wait for qmail-queue, and return its result string."""
        os.close(self.msg_w)
        if not self.failed:
            try:
                write_all(self.env_w, envelope.encode(sender, recipients))
            except OSError:
                self.failed = True
        os.close(self.env_w)
        try:
            pid, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            pid, status = -1, 0
        if pid != self.pid:
            os.close(self.err_r)
            return QQ_WAITPID_SURPRISE
        if os.WIFSIGNALED(status):
            os.close(self.err_r)
            return QQ_CRASHED
        code = os.WEXITSTATUS(status)
        custom = b""
        if code == CUSTOM:
            os.set_blocking(self.err_r, False)  # a grandchild may still hold fd 6 open
            try:
                custom = os.read(self.err_r, CUSTOM_MAX + 1)
            except OSError:
                pass
        os.close(self.err_r)
        if code == QUEUED and self.failed:
            code = READ_ERROR
        return qq_text(code, custom)

    def abort(self) -> str:
        """Give up on this message: close the pipes without an envelope and reap qmail-queue."""
        self.failed = True
        return self.close(b"", [])
