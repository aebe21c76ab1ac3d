"""qmail-send's priority queues: message ids ordered by the time they are due (qmail's prioq).

One TimeQueue per channel is the channel's scheduler (the seam described in docs/qmail-send-design.md);
pqdone and pqfail are TimeQueues too.
"""

from __future__ import annotations

import heapq

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterator


class TimeQueue:
    """A min-heap of (due, id); ties are taken in id order."""

    def __init__(self) -> None:
        self.heap: list[tuple[int, int]] = []

    def add(self, id: int, due: int) -> None:
        """Schedule message id at time due."""
        heapq.heappush(self.heap, (due, id))

    def next_due(self) -> int | None:
        """Return the earliest due time, or None when empty."""
        return self.heap[0][0] if self.heap else None

    def pop_due(self, recent: int) -> int | None:
        """Remove and return the id whose time has come (due <= recent), or None."""
        if self.heap and self.heap[0][0] <= recent:
            return heapq.heappop(self.heap)[1]
        return None

    def run_all_now(self, recent: int) -> None:
        """Make every entry due at recent (SIGALRM)."""
        self.heap = sorted((recent, id) for _, id in self.heap)

    def drain(self) -> Iterator[tuple[int, int]]:
        """Remove and yield every (id, due) in time order (for persisting at exit)."""
        while self.heap:
            due, id = heapq.heappop(self.heap)
            yield id, due
