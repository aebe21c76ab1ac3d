"""qmail-send's remote destinations under the qmgr scheduler (issue 19; reference §7.3): one
`qmgr.DestinationQueue` per destination (the recipient's domain, lowercased), the recipients waiting for a
free place in its window, a round robin among destinations, and the dead-destination cache.

Nothing here does I/O: the channel (sendchannel.Channel) starts deliveries, logs and defers. A recipient waits
here from the moment its message's pass reads it until a delivery may start: its destination's busy count is
below the window (and the channel, not this module, has a free slot). A dead destination (window 0) has no
waiting recipients: the channel defers them at once with the saved reason, and new ones as they come, until
minimal backoff has passed and `revive_due` gives it back.

`classify` turns a delivery's report (qmail-remote's text as qmail-rspawn passes it on) into feedback:

* negative: no SMTP connection (`Sorry, I wasn't able to establish an SMTP connection`), a greeting that is not
  220 and not 421 (`Connected to IP but greeting failed.`), or a connection that died before the message was
  sent (`Connected to IP but connection died.` without `Possible duplicate!`);
* too many: `Connected to IP but greeting failed.` quoting a 421 greeting;
* positive: any other answer from the server (a report starting `Connected to `, quoting the remote host, or
  naming the host that accepted or refused);
* none: reports no server gave (a DNS failure, a spawner's own trouble): the window does not move.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from pyqmail.lib.remote.remoteroute import find_route
from pyqmail.lib.send import qmgr
from pyqmail.lib.send.sendlog import logsafe

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable, Mapping

T = TypeVar("T")

NONE = 0
NEGATIVE = 1
TOO_MANY = 2
POSITIVE = 3  # the order is the priority when one run reports several recipients

DIED = 1
REVIVED = 2

WAITING_MAX = 20000  # recipients waiting in all destinations (Postfix's qmgr_message_recipient_limit)
ACTIVE_JOBS = 1000  # messages a qmgr remote channel may hold beyond qmail's job count

LOCAL_USER_WINDOW = 2  # the local channel's deliveries at once per user (Postfix's local_destination_concurrency_limit)
LOCAL_POLICY = qmgr.WindowPolicy(initial=LOCAL_USER_WINDOW, limit=LOCAL_USER_WINDOW, failed_cohort_limit=0)

NOCONN = b"Sorry, I wasn't able to establish an SMTP connection"


def classify(report: bytes) -> int:
    """Return the feedback of one report (letter + text): NONE, NEGATIVE, TOO_MANY or POSITIVE."""
    text = report[1:]
    if text.startswith(NOCONN):
        return NEGATIVE
    if text.startswith(b"Connected to "):
        first, _, rest = text.partition(b"\n")
        if first.endswith(b" but greeting failed."):
            return TOO_MANY if rest.startswith(b"Remote host said: 421") else NEGATIVE
        if b" but connection died." in first and b"Possible duplicate!" not in first:
            return NEGATIVE
        return POSITIVE
    if (b"Remote host said: " in text or b" accepted message." in text or b" does not like recipient." in text
            or b" failed after I sent the message." in text):
        return POSITIVE
    return NONE


def dead_line(name: str, report: bytes) -> bytes:
    """Return `warning: destination <domain> is dead: <reason>` (the reason's text, logsafe, as a deferral's)."""
    return b"warning: destination %s is dead: %s\n" % (logsafe(name.encode("latin-1")), logsafe(report[1:]))


def alive_line(name: str) -> bytes:
    """Return `destination <domain> is alive again`."""
    return b"destination %s is alive again\n" % logsafe(name.encode("latin-1"))


def window_line(name: str, window: int, busy: int) -> bytes:
    """Return `destination <D> window <W> busy <B>` (logged with control/qmgrdebug on)."""
    return b"destination %s window %d busy %d\n" % (logsafe(name.encode("latin-1")), window, busy)


def destination_of(recip: bytes, routes: Mapping[bytes, bytes] | None = None) -> str:
    """Return a recipient's destination: the smtproutes next hop (`relay:port`) when a route with a relay
    applies to its domain, else the domain (the part after the last `@`, lowercased; the whole address without)."""
    at = recip.rfind(b"@")
    domain = recip[at + 1:].lower()
    if routes:
        route = find_route(routes, domain)
        if route.relay is not None:
            return "%s:%d" % (route.relay.lower().decode("latin-1"), route.port)
    return domain.decode("latin-1")


def local_user_of(recip: bytes) -> str:
    """Return a local recipient's user for the local channel's round robin: its local part up to the first `-`,
    lowercased (qmail-lspawn's user, without reading users/assign or the password file)."""
    at = recip.rfind(b"@")
    local = recip[:at] if at >= 0 else recip
    return local.split(b"-", 1)[0].lower().decode("latin-1")


class Entry(Generic[T]):
    """A delivery request waiting at a destination: recipients (record position, address) of one job (its owner),
    as many as one run takes; `taken` once selected or deferred (the job's and the destination's queues drop
    taken entries lazily)."""
    __slots__ = ("owner", "dest", "items", "taken")

    def __init__(self, owner: T, dest: str, items: list[tuple[int, bytes]]) -> None:
        """Make an entry not taken yet."""
        self.owner, self.dest, self.items, self.taken = owner, dest, items, False


class Destinations(Generic[T]):
    """The destinations' windows, waiting entries (in arrival order), rotation and dead cache."""

    def __init__(self, policy: qmgr.WindowPolicy, dead_cache_size: int = qmgr.DEAD_CACHE_SIZE) -> None:
        """Start with no destination."""
        self.policy = policy
        self.queues: dict[str, qmgr.DestinationQueue] = {}
        self.waiting: dict[str, deque[Entry[T]]] = {}
        self.live: dict[str, int] = {}  # entries waiting (not taken) per destination
        self.rotation: qmgr.RoundRobin[str] = qmgr.RoundRobin()
        self.dead = qmgr.DeadCache(dead_cache_size)
        self.count = 0  # recipients waiting, over all destinations
        self.paused: dict[str, float] = {}  # qmgrratedelay: a destination's next delivery not before this time

    def configure(self, policy: qmgr.WindowPolicy, dead_cache_size: int) -> None:
        """Take new parameters (a HUP): every destination keeps its window, bounded by the new limit."""
        self.policy = policy
        self.dead.size = max(1, dead_cache_size)
        for queue in self.queues.values():
            queue.policy = policy
            limit = policy.effective_limit()
            if limit > 0 and queue.window > limit:
                queue.window = limit

    def queue(self, name: str) -> qmgr.DestinationQueue:
        """Return a destination's queue, making a live one at the initial window if there is none."""
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = qmgr.DestinationQueue(name, self.policy)
            self.waiting[name] = deque()
            self.live[name] = 0
            self.rotation.add(name)
        return queue

    def is_dead(self, name: str) -> bool:
        """True if the destination is dead."""
        queue = self.queues.get(name)
        return queue is not None and queue.is_dead()

    def reason(self, name: str) -> bytes:
        """Return a dead destination's saved reason (a report: letter and text)."""
        queue = self.queues.get(name)
        return queue.reason if queue is not None and queue.reason is not None else b"Z"

    def add(self, entry: Entry[T]) -> None:
        """Let an entry wait for its destination (which must be alive)."""
        self.queue(entry.dest)
        self.waiting[entry.dest].append(entry)
        self.live[entry.dest] += 1
        self.count += len(entry.items)

    def has_room(self) -> bool:
        """True if another message's recipients may be read in."""
        return self.count < WAITING_MAX

    def can_start(self, name: str) -> bool:
        """True if the destination has room in its window (alive, busy below the window)."""
        queue = self.queues.get(name)
        return queue is not None and queue.can_start() and name not in self.paused

    def eligible(self, name: str) -> bool:
        """True if the destination has a waiting entry and room in its window."""
        return self.live.get(name, 0) > 0 and self.queues[name].can_start() and name not in self.paused

    def ready(self) -> bool:
        """True if some destination could start a delivery now."""
        return self.count > 0 and any(self.eligible(name) for name in self.rotation.items)

    def pick(self) -> str | None:
        """Return the next destination in the rotation that may start a delivery, or None."""
        if self.count == 0:
            return None
        return self.rotation.pick(self.eligible)

    def take(self, entry: Entry[T]) -> None:
        """Mark an entry selected (or deferred): it no longer waits."""
        entry.taken = True
        self.live[entry.dest] -= 1
        self.count -= len(entry.items)

    def pop(self, name: str) -> Entry[T]:
        """Remove, mark taken and return the destination's oldest waiting entry (oqmgr's FIFO; one must wait)."""
        items = self.waiting[name]
        while items[0].taken:
            items.popleft()
        entry = items.popleft()
        self.take(entry)
        return entry

    def started(self, name: str) -> None:
        """Count a delivery (one run, however many recipients) started to the destination."""
        self.queues[name].started()

    def feedback(self, name: str, kind: int, reason: bytes, now: float) -> int:
        """Apply a finished run's feedback and count it finished; return DIED, REVIVED or 0."""
        queue = self.queues.get(name)
        if queue is None:
            return 0
        was_dead = queue.is_dead()
        if kind == POSITIVE:
            queue.positive_feedback(now)
        elif kind == NEGATIVE:
            queue.negative_feedback(reason, now)
        elif kind == TOO_MANY:
            queue.too_many_connections(now)
        queue.finished()
        if self.policy.rate_delay > 0 and not queue.is_dead():  # Postfix suspends the queue after each delivery
            self.paused[name] = now + self.policy.rate_delay
        if queue.is_dead() and not was_dead:
            self.dead.add(name, reason, now)
            if len(self.dead) >= self.dead.size:
                self.forget_evicted()
            return DIED
        self.drop_if_idle(name)
        if was_dead and not queue.is_dead():
            self.dead.remove(name)  # a delivery started before the death succeeded: it is alive
            return REVIVED
        return 0

    def drain(self, name: str) -> list[Entry[T]]:
        """Remove, mark taken and return every entry waiting for the destination."""
        items = self.waiting.get(name)
        if not items:
            return []
        out = [e for e in items if not e.taken]
        items.clear()
        for entry in out:
            self.take(entry)
        return out

    def drain_all(self) -> list[Entry[T]]:
        """Remove and return every waiting entry (qmail-send is exiting)."""
        out: list[Entry[T]] = []
        for name in list(self.waiting):
            out.extend(self.drain(name))
        return out

    def flush_dead(self) -> list[str]:
        """Revive every dead destination now (the F trigger); return their names."""
        return self.revive(self.dead.flush())

    def revive_due(self, now: float) -> list[str]:
        """Revive the destinations dead for minimal backoff; return their names, oldest death first."""
        due = self.next_revival()
        if due is None or now < due:
            return []  # (the cache is in order of death: the first entry is the earliest due)
        return self.revive(self.dead.expire(now, self.policy.minimal_backoff))

    def revive(self, names: Iterable[str]) -> list[str]:
        """Give each destination taken out of the dead cache a window again; return those that were dead."""
        revived = []
        for name in names:
            queue = self.queues.get(name)
            if queue is not None and queue.is_dead():
                queue.positive_feedback()
                revived.append(name)
                self.drop_if_idle(name)
        return revived

    def resume_due(self, now: float) -> None:
        """End the rate delay of each destination whose pause is over."""
        for name in [n for n, until in self.paused.items() if until <= now]:
            del self.paused[name]
            self.drop_if_idle(name)

    def next_event(self) -> float | None:
        """Return when a dead destination is due to be revived or a paused one to resume, or None."""
        times = [t for t in (self.next_revival(), min(self.paused.values(), default=None)) if t is not None]
        return min(times) if times else None

    def next_revival(self) -> float | None:
        """Return when the destination that died first is due to be revived, or None if none is dead."""
        for _, since in self.dead.entries.values():
            return since + self.policy.minimal_backoff
        return None

    def drop_if_idle(self, name: str) -> None:
        """Forget a live destination with nothing waiting and nothing in flight (Postfix frees such a queue)."""
        queue = self.queues.get(name)
        if queue is None or queue.busy or queue.is_dead() or self.live[name] or name in self.paused:
            return
        self.forget(name)

    def forget(self, name: str) -> None:
        """Remove a destination entirely."""
        del self.queues[name]
        del self.waiting[name]
        del self.live[name]
        self.paused.pop(name, None)
        self.rotation.remove(name)

    def forget_evicted(self) -> None:
        """Forget dead destinations the cache evicted (they start afresh next time), unless in flight."""
        for name in [n for n, q in self.queues.items() if q.is_dead() and n not in self.dead and not q.busy]:
            self.forget(name)

    def compact(self, name: str) -> None:
        """Drop taken entries from the front of a destination's queue (they were selected through their job)."""
        items = self.waiting.get(name)
        while items and items[0].taken:
            items.popleft()

    def idle(self) -> bool:
        """True if nothing waits and nothing is in flight."""
        return self.count == 0 and not any(q.busy for q in self.queues.values())
