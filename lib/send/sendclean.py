"""qmail-send's side of the qmail-clean pipe: commands out, one answer byte each back (qmail-clean(8))."""

from __future__ import annotations

import os
from collections import deque

from pyqmail.lib.send import sendlog
from pyqmail.lib.util.fdio import write_all

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable
    from pyqmail.lib.send.sendstate import SendState


class Clean:
    """The qmail-clean pipe: commands go out together before the loop waits, answers (one byte each, in
    order) are read in the loop."""

    def __init__(self, send: SendState, fd_out: int, fd_in: int) -> None:
        self.send, self.fd_out, self.fd_in = send, fd_out, fd_in
        # (name, what to do on `+`) for each command not answered yet
        self.waiting: deque[tuple[str, Callable[[bool], None] | None]] = deque()
        self.unsent: list[bytes] = []  # commands asked, written at the next flush (before qmail-send waits)
        self.alive = True

    def died(self) -> None:
        """qmail-clean is gone: wind down (what it did not answer stays in todo/ or mess/ for next time)."""
        if self.alive:
            self.alive = False
            self.waiting.clear()
            self.unsent.clear()
            self.send.log(sendlog.alert("lost_clean"))
            self.send.exitasap = True

    def ask(self, name: str, then: Callable[[bool], None] | None = None) -> None:
        """Ask qmail-clean to remove name (todo/N or foop/N); call then(answered `+`) when it answers."""
        if not self.alive:
            return
        self.unsent.append(name.encode() + b"\0")
        self.waiting.append((name, then))

    def flush(self) -> None:
        """Write the commands asked since the last flush, in one write (qmail-clean reads them in turn),
        after the log lines before them."""
        sendlog.flush_log()
        if not self.unsent or not self.alive:
            return
        data = b"".join(self.unsent)
        self.unsent.clear()
        try:
            write_all(self.fd_out, data)
        except OSError:
            return self.died()

    def wait(self) -> None:
        """Block until qmail-clean has answered every command asked (at exit)."""
        while self.waiting and self.alive:
            self.flush()  # an answer's follow-up (foop/N after todo/N) is asked while waiting
            self.read_answers()

    def read_answers(self) -> None:
        """Read qmail-clean's answers and act on each, in the order the commands were sent."""
        try:
            data = os.read(self.fd_in, 4096)
        except OSError:
            return
        if not data:
            return self.died()
        for answer in data:
            if not self.waiting:
                break
            name, then = self.waiting.popleft()
            if answer != 0x2B:  # `+`
                self.send.log(sendlog.warning("clean", name.encode()))
            if then is not None:
                then(answer == 0x2B)
