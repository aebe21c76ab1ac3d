"""qmail-send's messages kept in memory: a local-only message (under control/scheduler qmgr or oqmgr, a
remote-only one too) is delivered from memory, todo/N its only record.

qmail writes info/N and local/N (two new files and their fsyncs) before a message's first delivery and
unlinks them after its last. On ext4 every new file costs a scan of the inode table for recently freed
inodes, and on a disk mounted with `discard` every unlink of a file with data waits for the device, so for a
message whose recipients are all local, or all remote (at most todo.KEEP_RCPTS), qmail-send keeps
those bytes in memory and leaves todo/N where it is. If qmail-send stops or crashes meanwhile, todo/N is
preprocessed again and the deliveries made so far are repeated: a second delivery, never a loss, as
with qmail's unfsynced marks. When every delivery has succeeded, todo/N and then mess/N go to
qmail-clean. Anything else (a deferral, a failure, a TERM after some deliveries) writes the files qmail
would have written ("spilling"), and the message goes on exactly as in qmail (qmail-send(8)).
"""

from __future__ import annotations

import os
import time

from pyqmail.lib.send import sendlog, todo
from pyqmail.lib.send.channel import LOCAL
from pyqmail.lib.queue.queue import split_name

MYPY = False
if MYPY:  # typing only: never imported at run time
    from pyqmail.lib.send.sendstate import SendState

KEEP_MAX = 1000  # messages kept at once; beyond that todo entries are preprocessed as qmail does
KEEP_STALL = 2  # seconds for which a full store that lets no message out still keeps new todo entries waiting
SLEEP_ALERT = 10  # pause while the queue refuses a spill, as qmail pauses on a bounce it cannot append


class KeptMessage:
    """One message kept in memory: info/N's bytes, its channel file's records (marked in place), the channel
    and its birth."""
    __slots__ = ("info", "records", "birth", "channel")

    def __init__(self, info: bytes, records: bytes, birth: int, channel: str = LOCAL) -> None:
        self.info, self.records, self.birth, self.channel = info, bytearray(records), birth, channel


def write_files(id: int, m: KeptMessage) -> bytes | None:
    """Write info/N (mtime = birth) and the channel's file for a kept message, as preprocessing would, and
    fsync them; return the warning lines, or None."""
    def split(directory: str) -> str:
        return split_name(directory, id)
    plan = todo.Plan(m.info, {m.channel: bytes(m.records)}, [], None)
    written = todo.remove_stale(id, split) or todo.create_files(id, plan, [], split)
    if isinstance(written, todo.Result):
        return b"".join(written.log)
    try:
        os.utime(written.files[0][0], (m.birth, m.birth))  # qmail-send takes the birth from info/N's mtime
    except OSError:
        pass  # the retry schedule then counts from now
    result = todo.complete(written, todo.fsync_each([fd for fd, _ in written.files]))
    return None if result.ok else b"".join(result.log)


class InMemory:
    """The messages kept in memory, by id, and their way out: finished through qmail-clean, or spilled to files."""

    def __init__(self, send: SendState) -> None:
        self.send = send
        self.messages: dict[int, KeptMessage] = {}
        self.names: set[str] = set()  # their todo/ names: a listing of todo/ leaves them out as they come
        self.moved = time.monotonic()  # when a message last left the store (or the store was made)

    def room(self) -> int:
        """How many more messages may be kept now."""
        return max(0, KEEP_MAX - len(self.messages))

    def intake_pause(self) -> float:
        """Seconds for which new todo entries had better wait in todo/ (0: take them now). While the store is
        full and its messages are being delivered, a local message waiting there costs nothing and is kept
        soon; preprocessed instead, it would cost two files, their fsyncs and their removal. A store that let
        nothing out for KEEP_STALL seconds no longer makes anything wait, as qmail would not."""
        if len(self.messages) < KEEP_MAX:
            return 0.0
        return self.moving()

    def moving(self) -> float:
        """Seconds until the store counts as stalled, if no message leaves it meanwhile (0: stalled)."""
        return max(0.0, self.moved + KEEP_STALL - time.monotonic())

    def owns(self, id: int) -> bool:
        """True if message id is kept here (its todo/N is not to be preprocessed again)."""
        return id in self.messages

    def add(self, kept: todo.Kept, now: int) -> None:
        """Keep a todo.Kept and schedule its channel's deliveries now."""
        self.messages[kept.n] = KeptMessage(kept.info, kept.records, now, kept.channel)
        self.names.add(str(kept.n))
        self.send.channels[kept.channel].schedule.add_new(kept.n, now)

    def read(self, id: int) -> tuple[bytes, int, bytes] | None:
        """Return (records, birth, sender) for a pass over a kept message, or None if id is not kept."""
        m = self.messages.get(id)
        if m is None:
            return None
        return bytes(m.records), m.birth, m.info[1:m.info.find(b"\0")]

    def mark_done(self, id: int, pos: int) -> bool:
        """Turn the record at pos into D in memory; False if id is not kept."""
        m = self.messages.get(id)
        if m is None:
            return False
        m.records[pos] = 0x44  # D
        return True

    def finish(self, id: int) -> bool:
        """Every delivery succeeded: log `end msg`, have todo/N and then mess/N removed; False if not kept."""
        if self.messages.pop(id, None) is None:
            return False
        self.names.discard(str(id))
        self.moved = time.monotonic()
        self.send.log(sendlog.end_msg(id))
        self.send.todo.remove(id, then=lambda: self.send.clean.ask("foop/%d" % id))
        return True

    def spill(self, id: int) -> None:
        """If id is kept, write the files qmail would have written and hand todo/N to qmail-clean: from
        then on the message is an ordinary one. While the queue refuses, log why and wait, as qmail does."""
        m = self.messages.pop(id, None)
        if m is None:
            return
        self.names.discard(str(id))
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

    def spill_at_exit(self) -> None:
        """At exit, finish each kept message with every delivery done, spill each with some done (else they
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
