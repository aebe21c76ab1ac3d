"""qmail-send's held messages: a local-only message is delivered from memory, todo/N its only record.

qmail writes info/N and local/N (two new files and their fsyncs) before a message's first delivery and
unlinks them after its last. On ext4 every new file costs a scan of the inode table for recently freed
inodes, so for a message whose recipients are all local (at most todo.HOLD_RCPTS), qmail-send keeps
those bytes in memory and leaves todo/N where it is. If qmail-send stops or crashes meanwhile, todo/N is
preprocessed again and the deliveries made so far are repeated: a second delivery, never a loss, as
with qmail's unfsynced marks. When every delivery has succeeded, todo/N and then mess/N go to
qmail-clean. Anything else (a deferral, a failure, a TERM after some deliveries) writes the files qmail
would have written ("spilling"), and the message goes on exactly as in qmail.
"""

import os
import time

from pyqmail.lib.send import sendlog, todo
from pyqmail.lib.send.channel import LOCAL
from pyqmail.lib.queue.queue import split_name

HOLD_MAX = 1000  # messages held at once; beyond that todo entries are preprocessed as qmail does
HOLD_STALL = 2  # seconds a full hold that lets no message out still keeps new todo entries waiting
SLEEP_ALERT = 10  # pause while the queue refuses a spill, as qmail pauses on a bounce it cannot append


class HeldMessage:
    """One held message: info/N's bytes, local/N's records (marked in place) and its birth."""
    __slots__ = ("info", "records", "birth")

    def __init__(self, info, records, birth):
        self.info, self.records, self.birth = info, bytearray(records), birth


def write_files(id, m):
    """Write info/N (mtime = birth) and local/N for a held message, as preprocessing would, and fsync
    them; return the warning lines, or None."""
    def split(directory):
        return split_name(directory, id)
    plan = todo.Plan(m.info, {LOCAL: bytes(m.records)}, [], None)
    written = todo.remove_stale(id, split) or todo.create_files(id, plan, [], split)
    if isinstance(written, todo.Result):
        return b"".join(written.log)
    try:
        os.utime(written.files[0][0], (m.birth, m.birth))  # qmail-send takes the birth from info/N's mtime
    except OSError:
        pass  # the retry schedule then counts from now
    result = todo.complete(written, todo.fsync_each([fd for fd, _ in written.files]))
    return None if result.ok else b"".join(result.log)


class Held:
    """The held messages, by id, and their way out: finished through qmail-clean, or spilled to files."""

    def __init__(self, send):
        self.send = send
        self.messages = {}
        self.moved = time.monotonic()  # when a message last left the hold (or the hold was made)

    def room(self):
        """How many more messages may be held now."""
        return max(0, HOLD_MAX - len(self.messages))

    def holding_back(self):
        """Seconds for which new todo entries had better wait in todo/ (0: take them now). While the hold is
        full and its messages are being delivered, a local message waiting there costs nothing and is held
        soon; preprocessed instead, it would cost two files, their fsyncs and their removal. A hold that let
        nothing out for HOLD_STALL seconds no longer holds anything back, as qmail would not."""
        if len(self.messages) < HOLD_MAX:
            return 0.0
        return self.moving()

    def moving(self):
        """Seconds until the hold counts as stalled, if no message leaves it meanwhile (0: stalled)."""
        return max(0.0, self.moved + HOLD_STALL - time.monotonic())

    def owns(self, id):
        """True if message id is held (its todo/N is not to be preprocessed again)."""
        return id in self.messages

    def add(self, held, now):
        """Keep a todo.Held and schedule its local deliveries now."""
        self.messages[held.n] = HeldMessage(held.info, held.records, now)
        self.send.channels[LOCAL].schedule.add(held.n, now)

    def read(self, id):
        """Return (records, birth, sender) for a pass over a held message, or None if id is not held."""
        m = self.messages.get(id)
        if m is None:
            return None
        return bytes(m.records), m.birth, m.info[1:m.info.find(b"\0")]

    def mark_done(self, id, pos):
        """Turn the record at pos into D in memory; False if id is not held."""
        m = self.messages.get(id)
        if m is None:
            return False
        m.records[pos] = 0x44  # D
        return True

    def finish(self, id):
        """Every delivery succeeded: log `end msg`, have todo/N and then mess/N removed; False if not held."""
        if self.messages.pop(id, None) is None:
            return False
        self.moved = time.monotonic()
        self.send.log(sendlog.end_msg(id))
        self.send.todo.remove(id, then=lambda: self.send.clean.ask("foop/%d" % id))
        return True

    def spill(self, id):
        """If id is held, write the files qmail would have written and hand todo/N to qmail-clean: from
        then on the message is an ordinary one. While the queue refuses, log why and wait, as qmail does."""
        m = self.messages.pop(id, None)
        if m is None:
            return
        self.moved = time.monotonic()
        while True:
            trouble = write_files(id, m)
            if trouble is None:
                break
            self.send.log(trouble)
            sendlog.flush_log()
            time.sleep(SLEEP_ALERT)
        # its end is looked at again once todo/N is gone: a look meanwhile sees todo/N and leaves it
        self.send.todo.remove(id, then=lambda: self.send.pqdone.add(id, int(time.time())))

    def spill_at_exit(self):
        """At exit, finish each held message with every delivery done, spill each with some done (else they
        would be repeated), and wait for qmail-clean; the others stay in todo/ for the next start."""
        for id, m in list(self.messages.items()):
            records = b"\0" + m.records
            if b"\0D" not in records:
                continue  # nothing delivered yet
            if b"\0T" in records:
                self.spill(id)
            else:
                self.finish(id)
        self.send.clean.wait()
