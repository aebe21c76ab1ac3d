"""The pure scheduling core of a Postfix-qmgr-style scheduler for qmail-send (issue 19; reference §7).

Nothing here does I/O or reads a clock: every time is a parameter (`now`, seconds). The parts are:

* `Feedback`, `parse_feedback`: the feedback amount syntax `1`, `1/concurrency`, `1/sqrt(concurrency)`.
* `WindowPolicy`, `DestinationQueue`: the per-destination concurrency window (slow start with positive and
  negative feedback, failed pseudo-cohorts, dead destinations and their revival), reference §7.3.
* `DeadCache`: the bounded dead-destination cache (the oldest entry is evicted first).
* `backoff_delay`, `next_attempt`, `is_expired`: exponential backoff and lifetime, reference §7.2.
* `Job`, `SlotPolicy`, `max_slots`, `expected_slots`, `is_candidate`, `candidate_score`, `choose_candidate`,
  `may_try_preemption`, `should_preempt`, `preempt`, `select_entry`, `inflation_bound`: preemption
  arithmetic over small job records, reference §7.4 (ints divided as C divides them, `c_division`). The
  caller keeps the job list as qmgr's stack: when a preempting job completes, the job it preempted is
  current again and its caller clears its `stacked` flag.
* `collapse_triggers`: the bytes read from lock/trigger as an ordered set of requests.
* `RoundRobin`: a rotating pick among destinations.

The 421 greeting ("too many connections"), this project's addition: `DestinationQueue.too_many_connections`
sets window = max(1, min(window, busy - 1)), where `busy` counts the refused delivery itself (its entry is
still in flight when its report is read, as Postfix's busy_refcount is). The server accepted busy - 1
connections, so that many is what it takes. It is not a connection or handshake failure in the sense of the
pseudo-code: no failed cohort is counted, so a server that only limits its connections never makes the
destination dead. The hysteresis counters restart (success = failure = 0), and the new window is also a
ceiling that positive feedback does not pass for minimal_backoff seconds: the server said how many
connections it takes, and growing past that again after a few deliveries would only buy another 421 and a
deferral per probe. Once the ceiling lapses, positive feedback climbs one step per delivery as before. A dead
destination ignores it (it stays dead until revived).

Where the code of qmgr differs from SCHEDULER_README this follows the code (`>=` and ±feedback/2 rounding).
A destination revived with more deliveries in flight than the limit (possible only after the limit was
lowered) gets the limit, not the busy count, so the window never exceeds the limit.
The candidate search has no early stop: qmgr's stop is an optimisation for a job list ordered by queued time.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Sequence

T = TypeVar("T")

# Postfix's defaults (reference §7.5)
INITIAL_CONCURRENCY = 5
CONCURRENCY_LIMIT = 20
FAILED_COHORT_LIMIT = 1
RECIPIENT_LIMIT = 50
SLOT_COST = 5
SLOT_LOAN = 3
SLOT_DISCOUNT = 50
MINIMUM_SLOTS = 3
MINIMAL_BACKOFF = 300
MAXIMAL_BACKOFF = 4000
QUEUE_LIFETIME = 5 * 86400
DEAD_CACHE_SIZE = 20000

FEEDBACK_BASE = "base"  # g = base
FEEDBACK_WINDOW = "window"  # g = base / window
FEEDBACK_SQRT = "sqrt"  # g = base / sqrt(window)


@dataclass(frozen=True)
class Feedback:
    """A feedback amount: base, base/window or base/sqrt(window), stepping the window by hysteresis."""

    base: float = 1.0
    index: str = FEEDBACK_BASE
    hysteresis: float = 1.0

    def amount(self, window: int) -> float:
        """Return the feedback for a window (window >= 1)."""
        if self.index == FEEDBACK_WINDOW:
            return self.base / window
        if self.index == FEEDBACK_SQRT:
            return self.base / math.sqrt(window)
        return self.base


def parse_feedback(text: str) -> Feedback:
    """Parse `N`, `N/concurrency` or `N/sqrt(concurrency)` (N a number in (0, 1]); else raise ValueError."""
    compact = "".join(text.split())
    number, slash, rest = compact.partition("/")
    index = FEEDBACK_BASE
    if slash:
        if rest == "concurrency":
            index = FEEDBACK_WINDOW
        elif rest == "sqrt(concurrency)":
            index = FEEDBACK_SQRT
        else:
            raise ValueError("bad feedback divisor: %r" % text)
    try:
        base = float(number)
    except ValueError:
        raise ValueError("bad feedback number: %r" % text) from None
    if not 0 < base <= 1:  # Postfix's range: more than one step per delivery would overshoot
        raise ValueError("feedback out of range (0, 1]: %r" % text)
    return Feedback(base, index)


@dataclass(frozen=True)
class WindowPolicy:
    """A transport's concurrency parameters (reference §7.3, §7.5)."""

    initial: int = INITIAL_CONCURRENCY
    limit: int = CONCURRENCY_LIMIT  # 0: unlimited
    positive: Feedback = Feedback()
    negative: Feedback = Feedback()
    failed_cohort_limit: int = FAILED_COHORT_LIMIT  # 0: never dead
    rate_delay: int = 0
    minimal_backoff: int = MINIMAL_BACKOFF

    def effective_limit(self) -> int:
        """Return the destination limit: 1 under a rate delay, else the configured one (0 = unlimited)."""
        return 1 if self.rate_delay > 0 else self.limit

    def effective_initial(self) -> int:
        """Return the initial window: at least 1, capped by the effective limit."""
        limit = self.effective_limit()
        initial = max(1, self.initial)
        return min(initial, limit) if limit > 0 else initial


class DestinationQueue:
    """One destination's concurrency window, its feedback counters and its dead state."""

    def __init__(self, name: str, policy: WindowPolicy) -> None:
        """Start a live destination at the policy's initial window."""
        self.name = name
        self.policy = policy
        self.window = policy.effective_initial()
        self.success = 0.0
        self.failure = 0.0
        self.fail_cohorts = 0.0
        self.busy = 0  # deliveries in flight (Postfix's busy_refcount)
        self.reason: bytes | None = None  # why it is dead
        self.dead_since: float | None = None
        self.ceiling = 0  # after a 421 greeting: the window positive feedback may not pass (0: none)
        self.ceiling_until = 0.0  # when the ceiling lapses

    def is_dead(self) -> bool:
        """True while the destination is throttled to window 0."""
        return self.window == 0

    def can_start(self) -> bool:
        """True if another delivery may start now (busy below the window)."""
        return self.busy < self.window

    def started(self) -> None:
        """Count a delivery that starts."""
        self.busy += 1

    def finished(self) -> None:
        """Count a delivery that ended (after its feedback was applied)."""
        self.busy = max(0, self.busy - 1)

    def positive_feedback(self, now: float = 0.0) -> None:
        """Apply a delivery without connection or handshake failure ("unthrottle") at time now."""
        self.fail_cohorts = 0.0
        if self.is_dead():
            self.window = self.busy if self.busy > 0 else self.policy.effective_initial()
            limit = self.policy.effective_limit()
            if limit > 0 and self.window > limit:
                self.window = limit  # deliveries started under an older, larger limit (a HUP)
            self.success = self.failure = 0.0
            self.reason = None
            self.dead_since = None
            return
        limit = self.policy.effective_limit()
        if self.ceiling and now >= self.ceiling_until:
            self.ceiling = 0
        if self.ceiling:
            limit = min(limit, self.ceiling) if limit else self.ceiling
        if limit != 0 and limit <= self.window:
            return
        if self.window >= self.busy + self.policy.effective_initial():
            return  # no further growth than the initial window's margin over what is in use
        step = self.policy.positive
        g = step.amount(self.window)
        self.success += g
        while self.success + g / 2 >= step.hysteresis:
            self.window += int(step.hysteresis)
            self.success -= step.hysteresis
            self.failure = 0.0
        if limit > 0 and self.window > limit:
            self.window = limit

    def negative_feedback(self, reason: bytes, now: float) -> None:
        """Apply a connection or handshake failure ("throttle"); may make the destination dead."""
        if self.is_dead():
            return
        cohort_limit = self.policy.failed_cohort_limit
        self.fail_cohorts += 1.0 / self.window
        if cohort_limit > 0 and self.fail_cohorts >= cohort_limit:
            self.window = 0
            self.reason = reason
            self.dead_since = now
            return
        step = self.policy.negative
        f = step.amount(self.window)
        self.failure -= f
        while self.failure - f / 2 < 0:
            self.window -= int(step.hysteresis)
            self.success = 0.0
            self.failure += step.hysteresis
        if self.window < 1:
            self.window = 1

    def too_many_connections(self, now: float = 0.0) -> None:
        """Apply a 421 greeting at time now: take the connections the server accepted, counting no failed
        cohort, and keep to that many for minimal_backoff seconds."""
        if self.is_dead():
            return
        self.window = max(1, min(self.window, self.busy - 1))
        self.success = self.failure = 0.0
        self.ceiling = self.window
        self.ceiling_until = now + self.policy.minimal_backoff

    def revive_at(self) -> float | None:
        """Return when a dead destination is retried, or None if it is alive."""
        if self.dead_since is None:
            return None
        return self.dead_since + self.policy.minimal_backoff

    def revive_if_due(self, now: float) -> bool:
        """Revive a dead destination once minimal backoff has passed since it died; True if revived."""
        due = self.revive_at()
        if due is None or now < due:
            return False
        self.positive_feedback()
        return True


class DeadCache:
    """Dead destinations and their reasons, at most `size` of them; the oldest is evicted first."""

    def __init__(self, size: int = DEAD_CACHE_SIZE) -> None:
        """Start empty with a size limit (at least 1)."""
        self.size = max(1, size)
        self.entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def add(self, destination: str, reason: bytes, now: float) -> None:
        """Record a destination as dead since now, evicting the oldest entries beyond the size."""
        self.entries.pop(destination, None)
        self.entries[destination] = (reason, now)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def reason(self, destination: str) -> bytes | None:
        """Return the saved reason of a dead destination, or None."""
        entry = self.entries.get(destination)
        return None if entry is None else entry[0]

    def remove(self, destination: str) -> None:
        """Forget a destination (revived)."""
        self.entries.pop(destination, None)

    def expire(self, now: float, minimal_backoff: float) -> list[str]:
        """Remove and return the destinations dead for at least minimal_backoff, oldest first."""
        due = [d for d, (_, since) in self.entries.items() if now >= since + minimal_backoff]
        for destination in due:
            del self.entries[destination]
        return due

    def flush(self) -> list[str]:
        """Remove and return every destination (the F trigger)."""
        names = list(self.entries)
        self.entries.clear()
        return names

    def __len__(self) -> int:
        """Return how many destinations are recorded."""
        return len(self.entries)

    def __contains__(self, destination: object) -> bool:
        """True if the destination is recorded as dead."""
        return destination in self.entries


def backoff_delay(now: int, create_time: int | None, minimal: int = MINIMAL_BACKOFF,
                  maximal: int = MAXIMAL_BACKOFF) -> int:
    """Return the deferral delay: the message's age clamped to [minimal, maximal]; unknown age → minimal."""
    if create_time is None:
        return minimal
    return max(minimal, min(maximal, now - create_time))


def next_attempt(now: int, create_time: int | None, minimal: int = MINIMAL_BACKOFF,
                 maximal: int = MAXIMAL_BACKOFF) -> int:
    """Return when a deferred message is tried again (the time its mtime is set to)."""
    return now + backoff_delay(now, create_time, minimal, maximal)


def is_expired(now: int, create_time: int, lifetime: int = QUEUE_LIFETIME) -> bool:
    """True if a message tried at now has outlived its lifetime (its deferrals become a bounce)."""
    return now >= create_time + lifetime


@dataclass
class Job:
    """A message's job on a transport, as the preemption arithmetic sees it."""

    name: str
    max_entries: int  # MAX_ENTRIES: recipients read plus those still unread
    min_entries: int  # MIN_ENTRIES: recipients read
    queued_time: int
    selected: int = 0  # entries selected for delivery so far
    slots_available: int = 0
    slots_used: int = 0
    blocker: bool = False  # no selectable peer now
    stacked: bool = False  # a stack parent (already preempted by another)


@dataclass(frozen=True)
class SlotPolicy:
    """A transport's preemption parameters (reference §7.4)."""

    slot_cost: int = SLOT_COST
    slot_loan: int = SLOT_LOAN
    slot_discount: int = SLOT_DISCOUNT
    minimum_slots: int = MINIMUM_SLOTS


def c_division(numerator: int, denominator: int) -> int:
    """Return numerator / denominator as C divides ints: truncated toward zero (denominator > 0)."""
    quotient = abs(numerator) // denominator
    return quotient if numerator >= 0 else -quotient


def max_slots(current: Job, policy: SlotPolicy) -> int:
    """Return how many entries a candidate may need: (MIN - selected + slots_available) / slot_cost (C int)."""
    if policy.slot_cost < 1:
        return 0
    return c_division(current.min_entries - current.selected + current.slots_available, policy.slot_cost)


def expected_slots(job: Job) -> int:
    """Return the entries a job still needs: MAX_ENTRIES - selected."""
    return job.max_entries - job.selected


def is_candidate(job: Job, slots: int) -> bool:
    """True if a job may preempt: not a blocker, not stacked, 0 < needed <= slots."""
    if job.blocker or job.stacked:
        return False
    needed = expected_slots(job)
    return 0 < needed <= slots


def candidate_score(job: Job, now: int) -> float:
    """Return a candidate's score: (now - queued_time + 1) / MAX_ENTRIES (higher wins)."""
    return (now - job.queued_time + 1) / job.max_entries


def choose_candidate(jobs: Sequence[Job], current: Job, policy: SlotPolicy, now: int) -> Job | None:
    """Return the best-scoring candidate among the jobs after current (first on a tie), or None."""
    if policy.slot_cost < 2:
        return None
    slots = max_slots(current, policy)
    if slots <= 0:
        return None
    after = False
    best: Job | None = None
    for job in jobs:
        if job is current:
            after = True
            continue
        if not after or not is_candidate(job, slots) or now - job.queued_time + 1 <= 0:
            continue  # qmgr's best score starts at 0: a job queued in the future never wins
        # scores compared exactly: delay / entries > best_delay / best_entries
        if best is None or ((now - job.queued_time + 1) * best.max_entries
                            > (now - best.queued_time + 1) * job.max_entries):
            best = job
    return best


def may_try_preemption(current: Job, policy: SlotPolicy) -> bool:
    """False if slot_cost < 2 (preemption off), slots_available <= 0 or MAX(current) < min_slots * cost."""
    if policy.slot_cost < 2 or current.slots_available <= 0:
        return False
    return current.max_entries >= policy.minimum_slots * policy.slot_cost


def should_preempt(current: Job, candidate: Job, policy: SlotPolicy) -> bool:
    """True if slots_available / cost (C int division) + loan >= expected_slots * (100 - discount) / 100."""
    if policy.slot_cost < 2:
        return False
    needed = expected_slots(candidate)
    earned = c_division(current.slots_available, policy.slot_cost) + policy.slot_loan
    return 100 * earned >= needed * (100 - policy.slot_discount)


def preempt(jobs: list[Job], current: Job, policy: SlotPolicy, now: int) -> Job:
    """Return the job to serve: a preempting candidate (moved in front of current, marked, charged) or current."""
    if not may_try_preemption(current, policy):
        return current
    candidate = choose_candidate(jobs, current, policy, now)
    if candidate is None or not should_preempt(current, candidate, policy):
        return current
    current.slots_available -= expected_slots(candidate) * policy.slot_cost
    current.stacked = True
    jobs.remove(candidate)
    jobs.insert(jobs.index(current), candidate)
    return candidate


def select_entry(job: Job, current: Job) -> None:
    """Count one selected entry of job; an entry of the current job earns it a slot."""
    job.selected += 1
    if job is current:
        job.slots_available += 1
        job.slots_used += 1


def inflation_bound(slot_cost: int) -> float:
    """Return the most a job's delivery is delayed by preemption, as a factor: k / (k - 1) (k >= 2)."""
    return slot_cost / (slot_cost - 1)


TRIGGER_ORDER = "AFDI"  # A (ignore deferred time stamps) and F (flush dead) before D and I


def collapse_triggers(data: bytes) -> tuple[str, ...]:
    """Return the requests in the trigger bytes, each once, in the order A, F, D, I (W and unknown → I)."""
    wanted = set()
    for byte in data:
        letter = chr(byte)
        wanted.add(letter if letter in "AFD" else "I")  # I, W and qmail's plain trigger byte
    return tuple(letter for letter in TRIGGER_ORDER if letter in wanted)


@dataclass
class RoundRobin(Generic[T]):
    """Rotating choice among items: each pick starts after the last one picked."""

    items: list[T] = field(default_factory=list)
    start: int = 0

    def pick(self, eligible: Callable[[T], bool]) -> T | None:
        """Return the first eligible item from the rotation point and move past it, or None."""
        count = len(self.items)
        for offset in range(count):
            index = (self.start + offset) % count
            item = self.items[index]
            if eligible(item):
                self.start = (index + 1) % count
                return item
        return None

    def add(self, item: T) -> None:
        """Add an item at the end of the rotation."""
        self.items.append(item)

    def remove(self, item: T) -> None:
        """Remove an item, keeping the rotation point on the item that followed it."""
        index = self.items.index(item)
        del self.items[index]
        if index < self.start:
            self.start -= 1
        if self.start >= len(self.items):
            self.start = 0
