"""The scheduler choice and the qmgr scheduler's parameters, read from control files (issue 19; reference §7.5).

control/scheduler: `qmail` (qmail-send's own schedule, today's behaviour), `oqmgr` or `qmgr`; an absent,
empty or unknown value means `qmail`. The other files, in qmail's style, each with Postfix's default when the
file is absent or its first line has no leading digits (qmail's scan_ulong, as control.readint):

    qmgrinitialconcurrency     initial_destination_concurrency                      5
    qmgrconcurrencylimit       default_destination_concurrency_limit                20 (0: unlimited)
    qmgrpositivefeedback       default_destination_concurrency_positive_feedback    1
    qmgrnegativefeedback       default_destination_concurrency_negative_feedback    1
    qmgrfailedcohortlimit      default_destination_concurrency_failed_cohort_limit  1 (0: never dead)
    qmgrrecipientlimit         default_destination_recipient_limit                  50
    qmgrslotcost               default_delivery_slot_cost                           5
    qmgrslotloan               default_delivery_slot_loan                           3
    qmgrslotdiscount           default_delivery_slot_discount                       50 (percent, at most 100)
    qmgrminimumslots           default_minimum_delivery_slots                       3
    minimalbackofftime         minimal_backoff_time                                 300 (seconds)
    maximalbackofftime         maximal_backoff_time                                 4000 (seconds)
    qmgrratedelay              default_destination_rate_delay                       0 (seconds; > 0 forces limit 1)
    qmgrdeadcachesize          the dead-destination cache's size                    20000
    qmgrdebug                  (this project's) 1: log each window change            0

The feedback files take `1`, `1/concurrency` or `1/sqrt(concurrency)` (any number in (0, 1] for the 1); a
value that does not parse is taken as the default. Values Postfix would refuse are brought into range:
initial concurrency, recipient limit and dead cache size at least 1; maximalbackofftime at least
minimalbackofftime. A slot cost below 2 turns preemption off (as in Postfix).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyqmail.lib.config import control
from pyqmail.lib.remote.remoteroute import parse_routes
from pyqmail.lib.send import qmgr

QMAIL = "qmail"
OQMGR = "oqmgr"
QMGR = "qmgr"
SCHEDULERS = (QMAIL, OQMGR, QMGR)


def read_scheduler() -> str:
    """Return control/scheduler's choice: qmail, oqmgr or qmgr; absent or unknown → qmail."""
    line = control.readline("scheduler")
    if line is None:
        return QMAIL
    choice = line.strip().decode("ascii", "replace").lower()
    return choice if choice in SCHEDULERS else QMAIL


def read_feedback(name: str) -> qmgr.Feedback:
    """Return a feedback control file's value; absent or malformed → Postfix's default 1."""
    line = control.readline(name)
    if line is None:
        return qmgr.Feedback()
    try:
        return qmgr.parse_feedback(line.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return qmgr.Feedback()


@dataclass(frozen=True)
class QmgrConfig:
    """Every qmgr scheduler parameter, with Postfix's defaults."""

    scheduler: str = QMAIL
    window: qmgr.WindowPolicy = field(default_factory=qmgr.WindowPolicy)
    slots: qmgr.SlotPolicy = field(default_factory=qmgr.SlotPolicy)
    recipient_limit: int = qmgr.RECIPIENT_LIMIT
    minimal_backoff: int = qmgr.MINIMAL_BACKOFF
    maximal_backoff: int = qmgr.MAXIMAL_BACKOFF
    dead_cache_size: int = qmgr.DEAD_CACHE_SIZE
    debug: bool = False  # control/qmgrdebug 1: log every window change


def read() -> QmgrConfig:
    """Read control/scheduler and the qmgr parameters from the control files."""
    minimal_backoff = control.readint("minimalbackofftime", qmgr.MINIMAL_BACKOFF)
    maximal_backoff = max(minimal_backoff, control.readint("maximalbackofftime", qmgr.MAXIMAL_BACKOFF))
    window = qmgr.WindowPolicy(
        initial=max(1, control.readint("qmgrinitialconcurrency", qmgr.INITIAL_CONCURRENCY)),
        limit=control.readint("qmgrconcurrencylimit", qmgr.CONCURRENCY_LIMIT),
        positive=read_feedback("qmgrpositivefeedback"),
        negative=read_feedback("qmgrnegativefeedback"),
        failed_cohort_limit=control.readint("qmgrfailedcohortlimit", qmgr.FAILED_COHORT_LIMIT),
        rate_delay=control.readint("qmgrratedelay", 0),
        minimal_backoff=minimal_backoff,
    )
    slots = qmgr.SlotPolicy(
        slot_cost=control.readint("qmgrslotcost", qmgr.SLOT_COST),
        slot_loan=control.readint("qmgrslotloan", qmgr.SLOT_LOAN),
        slot_discount=min(100, control.readint("qmgrslotdiscount", qmgr.SLOT_DISCOUNT)),
        minimum_slots=control.readint("qmgrminimumslots", qmgr.MINIMUM_SLOTS),
    )
    return QmgrConfig(
        scheduler=read_scheduler(),
        window=window,
        slots=slots,
        recipient_limit=max(1, control.readint("qmgrrecipientlimit", qmgr.RECIPIENT_LIMIT)),
        minimal_backoff=minimal_backoff,
        maximal_backoff=maximal_backoff,
        dead_cache_size=max(1, control.readint("qmgrdeadcachesize", qmgr.DEAD_CACHE_SIZE)),
        debug=control.readint("qmgrdebug", 0) > 0,
    )


def read_routes() -> dict[bytes, bytes]:
    """Return control/smtproutes as qmail-remote reads it (destinations under qmgr/oqmgr are its next hops)."""
    return parse_routes(control.readlist("smtproutes") or [])
