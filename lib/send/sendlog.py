"""qmail-send's log lines as bytes (qmail-send(8), LOG; qmail-send.c, qsutil.c, qmail's qmail-log(5))."""

from __future__ import annotations

from pyqmail.lib.queue.queue import SPLIT
from pyqmail.lib.util.fdio import write_all

_unwritten: list[bytes] = []  # log lines not yet written to fd 0


def log(line: bytes) -> None:
    """Queue log lines for fd 0; flush_log() writes them, before qmail-send next waits or tells another
    program to act, so no action is seen before the lines that led to it."""
    _unwritten.append(line)


def flush_log() -> None:
    """Write the queued log lines to fd 0 in one write; a dead logger must not stop deliveries."""
    if not _unwritten:
        return
    data = b"".join(_unwritten)
    _unwritten.clear()
    try:
        write_all(0, data)
    except OSError:
        pass


_SAFE = frozenset(range(33, 127)) - {ord("%")}
# byte -> what logsafe writes for it, as one translate table (a Python loop per byte was 2 per delivery's log lines)
_LOGSAFE = bytes(c if c in _SAFE else 0x2F if c == 0x0A else 0x5F for c in range(256))


def logsafe(text: bytes) -> bytes:
    """Return text as qsutil's logsafe writes it: up to its first NUL, `\\n`→`/`, unsafe bytes→`_`."""
    return text.split(b"\0", 1)[0].translate(_LOGSAFE)  # qmail logs C strings


def split_fn(directory: str, n: int) -> bytes:
    """Return the name qmail-send logs for message n in a split directory (`info/5/28`)."""
    return b"%s/%d/%d" % (directory.encode(), n % SPLIT, n)


def flat_fn(directory: str, n: int) -> bytes:
    """Return the name qmail-send logs for message n in todo/, bounce/ or foop/ (`todo/28`)."""
    return b"%s/%d" % (directory.encode(), n)


def status(local: int, maxlocal: int, remote: int, maxremote: int, exitasap: bool = False) -> bytes:
    """Return `status: local l/L remote r/R[ exitasap]`."""
    line = b"status: local %d/%d remote %d/%d" % (local, maxlocal, remote, maxremote)
    return line + (b" exitasap\n" if exitasap else b"\n")


def exiting() -> bytes:
    """Return the clean-exit line."""
    return b"status: exiting\n"


def new_msg(n: int) -> bytes:
    """Return `new msg n`."""
    return b"new msg %d\n" % n


def info_msg(n: int, size: int, sender: bytes, qp: int, uid: int) -> bytes:
    """Return `info msg n: bytes size from <sender> qp qp uid uid` (sender logsafe)."""
    return b"info msg %d: bytes %d from <%s> qp %d uid %d\n" % (n, size, logsafe(sender), qp, uid)


def starting_delivery(d: int, n: int, channel: str, recip: bytes) -> bytes:
    """Return `starting delivery d: msg n to local|remote recip` (recip logsafe)."""
    return b"starting delivery %d: msg %d to %s %s\n" % (d, n, channel.encode(), logsafe(recip))


RESULT_WORDS = {b"K": b"success", b"Z": b"deferral", b"D": b"failure"}


def delivery_result(d: int, report: bytes) -> bytes:
    """Return the line for a spawner report (letter then text); other letters: `report mangled`."""
    word = RESULT_WORDS.get(report[:1])
    if word is None:
        return b"delivery %d: report mangled, will defer\n" % d
    return b"delivery %d: %s: %s\n" % (d, word, logsafe(report[1:]))


def bounce_msg(n: int, qp: int) -> bytes:
    """Return `bounce msg n qp qp`."""
    return b"bounce msg %d qp %d\n" % (n, qp)


def triple_bounce(n: int) -> bytes:
    """Return `triple bounce: discarding bounce/n`."""
    return b"triple bounce: discarding bounce/%d\n" % n


def end_msg(n: int) -> bytes:
    """Return `end msg n`."""
    return b"end msg %d\n" % n


CANNOT_START = {
    "home": b"unable to switch to home directory",
    "controls": b"unable to read controls",
    "queue": b"unable to switch to queue directory",
    "mutex": b"unable to open mutex",
    "running": b"qmail-send is already running",
    "spawn": b"hath the daemon spawn no fire?",
}


def cannot_start(reason: str) -> bytes:
    """Return `alert: cannot start: ...` for a key of CANNOT_START."""
    return b"alert: cannot start: " + CANNOT_START[reason] + b"\n"


ALERTS = {
    "lost_clean": b"alert: oh no! lost qmail-clean connection! dying...\n",
    "lost_spawn": b"alert: oh no! lost spawn connection! dying...\n",
    "nomem": b"alert: out of memory, sleeping...\n",
    "bounce_append": b"alert: unable to append to bounce message; HELP! sleeping...\n",
    "reread_home": b"alert: unable to reread controls: unable to switch to home directory\n",
    "reread_locals": b"alert: unable to reread control/locals\n",
    "reread_virtualdomains": b"alert: unable to reread control/virtualdomains\n",
    "back_to_queue": b"alert: unable to switch back to queue directory; HELP! sleeping...\n",
}


def alert(kind: str) -> bytes:
    """Return a fixed alert line, a key of ALERTS."""
    return ALERTS[kind]


def unable_to_opendir(directory: str) -> bytes:
    """Return `alert: unable to opendir dir, sleeping...`."""
    return b"alert: unable to opendir %s, sleeping...\n" % directory.encode()


WARNINGS = {  # what: (before the file name, after it)
    "fsync": (b"trouble fsyncing ", b""),
    "mark": (b"trouble marking ", b"; message will be delivered twice!"),
    "open_later": (b"trouble opening ", b"; will try again later"),
    "read": (b"trouble reading ", b""),
    "read_later": (b"trouble reading ", b"; will try again later"),
    "write": (b"trouble writing to ", b""),
    "create": (b"unable to create ", b""),
    "open": (b"unable to open ", b""),
    "stat": (b"unable to stat ", b""),
    "stat_later": (b"unable to stat ", b"; will try again later"),
    "unlink": (b"unable to unlink ", b""),
    "unlink_later": (b"unable to unlink ", b"; will try again later"),
    "utime": (b"unable to utime ", b"; message will be retried too soon"),
    "unknown_todo": (b"unknown record type in ", b""),
    "no_sender": (b"no sender record in ", b"; message set aside"),  # not qmail's: qmail loops on it
    "truncated": (b"truncated record in ", b"; message set aside"),  # not qmail's: it drops the record
    "info_no_sender": (b"no sender record in ", b"; message set aside until qmail-send restarts"),
    "unknown_chan": (b"unknown record type in ", b"!"),
    "clean": (b"qmail-clean unable to clean up ", b""),
    # not qmail's (it spins on a trigger that is not a FIFO, and says nothing of a missing one)
    "trigger_open": (b"unable to open ", b"; todo/ is scanned every 10 seconds"),
    "trigger_kind": (b"not a named pipe: ", b"; todo/ is scanned every 10 seconds"),
}


def warning(what: str, fn: bytes) -> bytes:
    """Return `warning: <what> <fn><suffix>` for a key of WARNINGS and a logged file name."""
    before, after = WARNINGS[what]
    return b"warning: " + before + fn + after + b"\n"


FIXED_WARNINGS = {
    "select": b"warning: trouble in select\n",
    "report_range": b"warning: internal error: delivery report out of range\n",
    "inject": b"warning: trouble injecting bounce message, will try later\n",
    "start_qq": b"warning: unable to start qmail-queue, will try later\n",
}


def fixed_warning(kind: str) -> bytes:
    """Return a warning line that names no file, a key of FIXED_WARNINGS."""
    return FIXED_WARNINGS[kind]


def preempted(current: int, winner: int, channel: str, entries: int) -> bytes:
    """Return `preemption: msg W passes msg C in channel (E deliveries)` (control/scheduler qmgr)."""
    return b"preemption: msg %d passes msg %d in %s (%d deliveries)\n" % (winner, current, channel.encode(), entries)
