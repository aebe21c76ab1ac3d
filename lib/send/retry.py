"""qmail-send's retry schedule and queue lifetime (qmail-send(8), passes and reports; qmail-send.c nextretry)."""

from __future__ import annotations

import math

from pyqmail.lib.send.channel import LOCAL, REMOTE

CHANSKIP = {LOCAL: 10, REMOTE: 20}
QUEUELIFETIME = 604800  # control/queuelifetime default: 7 days
SQUAREROOT_MAX = 65535  # qmail's squareroot() builds 16 result bits, so it saturates here
TOO_LONG = b"I'm not going to try again; this message has been in the queue too long.\n"


def isqrt(x: int) -> int:
    """Return floor(sqrt(x)) as qmail's squareroot(): 0 for x <= 0, at most 65535."""
    if x <= 0:
        return 0
    return min(math.isqrt(x), SQUAREROOT_MAX)


def next_retry(birth: int, recent: int, channel: str) -> int:
    """Return the retry time of a pass started at `recent` for a message born at `birth`."""
    n = 0 if birth > recent else isqrt(recent - birth)
    n += CHANSKIP[channel]
    return birth + n * n


def is_dying(birth: int, recent: int, lifetime: int = QUEUELIFETIME) -> bool:
    """Return True if a pass started at `recent` turns temporary failures into permanent ones."""
    return recent > birth + lifetime


def dying_report(report: bytes) -> bytes:
    """Return the report as qmail-send treats it for a dying job: Z becomes D with TOO_LONG appended."""
    if report[:1] != b"Z":
        return report
    return b"D" + report[1:] + TOO_LONG
