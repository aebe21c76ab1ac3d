"""qmail-send's priority queues: message ids ordered by the time they are due (qmail's prioq).

One FairQueue per channel is the channel's scheduler (the seam described in docs/qmail-send-design.md);
pqdone and pqfail are TimeQueues.
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

    def remove(self, id: int) -> list[int]:
        """Take message id out; return the times it was due at (none if it was not scheduled)."""
        dues = [due for due, i in self.heap if i == id]
        if dues:
            self.heap = [(due, i) for due, i in self.heap if i != id]
            heapq.heapify(self.heap)
        return dues

    def drain(self) -> Iterator[tuple[int, int]]:
        """Remove and yield every (id, due) in time order (for persisting at exit)."""
        while self.heap:
            due, id = heapq.heappop(self.heap)
            yield id, due


class FairQueue(TimeQueue):
    """A channel's schedule: deferred (and restarted) messages in the heap, new ones (from todo/) in a second
    heap. Not fair (control/scheduler qmail): the two are taken as one queue, in (due, id) order, exactly as a
    TimeQueue. Fair (qmgr, oqmgr; Postfix's alternation between the incoming and deferred queues): when both
    have a message due, they take turns, so a deferred backlog made due at once (ALRM, the A trigger) does
    not hold new mail back, nor new mail a backlog."""

    def __init__(self) -> None:
        super().__init__()
        self.new: list[tuple[int, int]] = []
        self.fair = False
        self.new_turn = True  # whose turn it is when both are due

    def add_new(self, id: int, due: int) -> None:
        """Schedule a new message (its first pass)."""
        heapq.heappush(self.new, (due, id))

    def next_due(self) -> int | None:
        """Return the earliest due time of either heap, or None when both are empty."""
        heads = [h[0][0] for h in (self.heap, self.new) if h]
        return min(heads) if heads else None

    def pop_due(self, recent: int) -> int | None:
        """Remove and return a due id: the earlier of the two heaps' heads, or when fair and both are due, the
        heap whose turn it is."""
        old_due = bool(self.heap) and self.heap[0][0] <= recent
        new_due = bool(self.new) and self.new[0][0] <= recent
        if not old_due and not new_due:
            return None
        if old_due and new_due:
            take_new = self.new_turn if self.fair else self.new[0] < self.heap[0]
            self.new_turn = not take_new
        else:
            take_new = new_due
        return heapq.heappop(self.new if take_new else self.heap)[1]

    def remove(self, id: int) -> list[int]:
        """Take message id out of both heaps; return the times it was due at."""
        dues = super().remove(id)
        new = [due for due, i in self.new if i == id]
        if new:
            self.new = [(due, i) for due, i in self.new if i != id]
            heapq.heapify(self.new)
        return dues + new

    def run_all_now(self, recent: int) -> None:
        """Make every entry of both heaps due at recent (SIGALRM)."""
        super().run_all_now(recent)
        self.new = sorted((recent, id) for _, id in self.new)

    def drain(self) -> Iterator[tuple[int, int]]:
        """Remove and yield every (id, due) of both heaps, in time order."""
        self.heap, self.new = sorted(self.heap + self.new), []  # (a sorted list is a heap)
        return super().drain()
