"""qmail-send's unlinks of finished queue files (info/N, local/N, remote/N), off its loop, several at once.

On a file system mounted with `discard` an unlink that frees a file's blocks waits for the device to discard
them (about 1 ms on a virtio disk, measured in qmail-send(8)); qmail-send's one loop, unlinking a channel file
and info/N per finished message, spent most of its time there. So the unlinks run in a few threads (they
overlap: the device takes them in parallel) and what follows each one (the stat of the other channels, the
foop/N request to qmail-clean) runs in the loop once it is done, as qmail-send would have done it.
"""

from __future__ import annotations

import os
from collections import deque

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable
    from concurrent.futures import ThreadPoolExecutor

THREADS = 8  # unlinks in flight at once: beyond 8 a virtio disk's discards gain nothing more (qmail-send(8))


class Unlinker:
    """Unlink files in threads; each one's `then(ok)` runs in qmail-send's loop once run_finished() is called."""

    def __init__(self, threads: int = THREADS) -> None:
        self.done_r, self.done_w = os.pipe()
        os.set_blocking(self.done_r, False)
        os.set_blocking(self.done_w, False)
        self.threads = threads
        self.pool: ThreadPoolExecutor | None = None
        self.finished: deque[tuple[Callable[[bool], None], bool]] = deque()  # appends and pops are atomic
        self.pending: set[str] = set()  # paths being unlinked now

    def unlink(self, path: str, then: Callable[[bool], None]) -> None:
        """Start unlinking path; then(True) (gone) or then(False) (any error) runs later in the loop."""
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self.pool = ThreadPoolExecutor(self.threads)
        self.pending.add(path)

        def done(ok: bool) -> None:
            self.pending.discard(path)
            then(ok)
        self.pool.submit(self.run, path, done)

    def run(self, path: str, then: Callable[[bool], None]) -> None:
        """In a thread: unlink path, queue then with the outcome, wake the loop."""
        try:
            os.unlink(path)
            ok = True
        except OSError:
            ok = False
        self.finished.append((then, ok))
        try:
            os.write(self.done_w, b"+")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def busy(self, path: str) -> bool:
        """True while path is being unlinked."""
        return path in self.pending

    def run_finished(self) -> None:
        """In the loop: drain the wake-ups, then run the `then` of every unlink done so far, in order."""
        try:
            while os.read(self.done_r, 512):
                pass
        except BlockingIOError:
            pass
        while self.finished:
            then, ok = self.finished.popleft()
            then(ok)

    def idle(self) -> bool:
        """True when no unlink is in flight or waiting for its `then` (a path leaves pending when its then runs)."""
        return not self.pending
