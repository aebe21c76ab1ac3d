"""What the parts of qmail-send (sendchannel, sendmessages, sendclean, inmemory) see of the whole: the Send
object of commands/qmail_send, described for the type checker only (nothing here runs)."""

from __future__ import annotations

MYPY = False
if MYPY:  # typing only: never imported at run time
    from typing import Protocol

    from pyqmail.lib.send.bounce import BounceControls
    from pyqmail.lib.send.inmemory import InMemory
    from pyqmail.lib.send.rewrite import Rewriter
    from pyqmail.lib.send.sendchannel import Channel
    from pyqmail.lib.send.sendclean import Clean
    from pyqmail.lib.send.sendcontrol import Control
    from pyqmail.lib.send.sendmessages import Todo
    from pyqmail.lib.send.timequeue import TimeQueue
    from pyqmail.lib.send.unlinker import Unlinker

    class SendState(Protocol):
        """qmail-send's state in memory, as its parts use it."""
        home: str
        rewriter: Rewriter
        bounce_controls: BounceControls
        lifetime: int
        exitasap: bool
        recent: int
        pqdone: TimeQueue
        pqfail: TimeQueue
        channels: dict[str, Channel]
        jobs_used: int
        clean: Clean
        todo: Todo
        inmemory: InMemory
        unlinker: Unlinker
        info_damaged: set[int]
        control: Control

        def log(self, line: bytes) -> None: ...

        def next_delid(self) -> int: ...

        def job_available(self) -> bool: ...

        def log_status(self) -> None: ...
