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

from pyqmail.lib.send import qmgr
from pyqmail.lib.send.sendlog import logsafe

T = TypeVar("T")

NONE = 0
NEGATIVE = 1
TOO_MANY = 2
POSITIVE = 3  # the order is the priority when one run reports several recipients

DIED = 1
REVIVED = 2

WAITING_MAX = 20000  # recipients waiting in all destinations (Postfix's qmgr_message_recipient_limit)
ACTIVE_JOBS = 1000  # messages a qmgr remote channel may hold beyond qmail's job count

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


def destination_of(recip: bytes) -> str:
    """Return a recipient's destination: the part after the last `@`, lowercased (the whole address without)."""
    at = recip.rfind(b"@")
    return recip[at + 1:].lower().decode("latin-1")


class Destinations(Generic[T]):
    """The destinations' windows, waiting recipients (job, record position, address), rotation and dead cache."""

    def __init__(self, policy: qmgr.WindowPolicy, dead_cache_size: int = qmgr.DEAD_CACHE_SIZE) -> None:
        """Start with no destination."""
        self.policy = policy
        self.queues: dict[str, qmgr.DestinationQueue] = {}
        self.waiting: dict[str, deque[tuple[T, int, bytes]]] = {}
        self.rotation: qmgr.RoundRobin[str] = qmgr.RoundRobin()
        self.dead = qmgr.DeadCache(dead_cache_size)
        self.count = 0  # recipients waiting, over all destinations

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

    def add(self, name: str, item: tuple[T, int, bytes]) -> None:
        """Let a recipient wait for its destination (which must be alive)."""
        self.queue(name)
        self.waiting[name].append(item)
        self.count += 1

    def has_room(self) -> bool:
        """True if another message's recipients may be read in."""
        return self.count < WAITING_MAX

    def eligible(self, name: str) -> bool:
        """True if the destination has a waiting recipient and room in its window."""
        return bool(self.waiting.get(name)) and self.queues[name].can_start()

    def ready(self) -> bool:
        """True if some destination could start a delivery now."""
        return self.count > 0 and any(self.eligible(name) for name in self.rotation.items)

    def pick(self) -> str | None:
        """Return the next destination in the rotation that may start a delivery, or None."""
        if self.count == 0:
            return None
        return self.rotation.pick(self.eligible)

    def take(self, name: str, limit: int, same: bool) -> list[tuple[T, int, bytes]]:
        """Remove and return the front recipient and, if same, up to limit - 1 more of the same job behind it."""
        items = self.waiting[name]
        first = items.popleft()
        taken = [first]
        while same and items and len(taken) < limit and items[0][0] is first[0]:
            taken.append(items.popleft())
        self.count -= len(taken)
        return taken

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
            queue.positive_feedback()
        elif kind == NEGATIVE:
            queue.negative_feedback(reason, now)
        elif kind == TOO_MANY:
            queue.too_many_connections()
        queue.finished()
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

    def drain(self, name: str) -> list[tuple[T, int, bytes]]:
        """Remove and return every recipient waiting for the destination."""
        items = self.waiting.get(name)
        if not items:
            return []
        out = list(items)
        items.clear()
        self.count -= len(out)
        return out

    def drain_all(self) -> list[tuple[T, int, bytes]]:
        """Remove and return every waiting recipient (qmail-send is exiting)."""
        out: list[tuple[T, int, bytes]] = []
        for name in list(self.waiting):
            out.extend(self.drain(name))
        return out

    def revive_due(self, now: float) -> list[str]:
        """Revive the destinations dead for minimal backoff; return their names, oldest death first."""
        due = self.next_revival()
        if due is None or now < due:
            return []  # (the cache is in order of death: the first entry is the earliest due)
        revived = []
        for name in self.dead.expire(now, self.policy.minimal_backoff):
            queue = self.queues.get(name)
            if queue is not None and queue.is_dead():
                queue.positive_feedback()
                revived.append(name)
                self.drop_if_idle(name)
        return revived

    def next_revival(self) -> float | None:
        """Return when the destination that died first is due to be revived, or None if none is dead."""
        for _, since in self.dead.entries.values():
            return since + self.policy.minimal_backoff
        return None

    def drop_if_idle(self, name: str) -> None:
        """Forget a live destination with nothing waiting and nothing in flight (Postfix frees such a queue)."""
        queue = self.queues.get(name)
        if queue is None or queue.busy or queue.is_dead() or self.waiting[name]:
            return
        self.forget(name)

    def forget(self, name: str) -> None:
        """Remove a destination entirely."""
        del self.queues[name]
        del self.waiting[name]
        self.rotation.remove(name)

    def forget_evicted(self) -> None:
        """Forget dead destinations the cache evicted (they start afresh next time), unless in flight."""
        for name in [n for n, q in self.queues.items() if q.is_dead() and n not in self.dead and not q.busy]:
            self.forget(name)

    def idle(self) -> bool:
        """True if nothing waits and nothing is in flight."""
        return self.count == 0 and not any(q.busy for q in self.queues.values())
