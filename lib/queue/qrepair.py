"""qmail-qctl -S: repairing a stopped queue from qcheck's defects without losing a message (qmail-qctl(8)).

In three passes, each over a fresh scan (the second repeated, at most three times, while it changes something:
a file renamed with its message may have more to fix at its new name): the layout (directories and lock files made, owners and modes
set as qmail-setup gives them; a wrong kind of entry moved aside), the entries (stray names and non-files
moved aside, files in the wrong split directory or a split directory beyond 22 moved to theirs, message
files' owners and modes, a mess/ file not named after its inode renamed with its message, old injection
debris removed), then the messages (a damaged or incomplete message set aside in corrupt/N.T/ as qmail-send
does, uncommitted injections and orphans older than 36 hours removed). Entries moved aside go to
corrupt/stray.T/, their paths' slashes turned into `_`. Nothing is ever unlinked that held a committed
message's only copy."""

from __future__ import annotations

import os
import time

from pyqmail.lib.config import tree
from pyqmail.lib.queue import qadmin, qcheck
from pyqmail.lib.queue.queue import SPLIT

ROLE = {"mess": "queue", "intd": "queue", "todo": "queue", "pid": "queue", "info": "send", "local": "send",
        "remote": "send", "bounce": "send", "hold": "send"}
RECORDS = ("last record has no NUL", "envelope has no F", "envelope has a record", "does not start with an F",
           "has a record that is not T")
ENTRY_PASSES = 3  # the entries pass again while it changed something: a move, then what is found at the new name
INCOMPLETE = ("todo without mess", "info without mess", "local without info", "remote without info",
              "bounce without info", "hold without mess")


class Repair:
    """One repair run over queue/ (paths relative to it): what was done, as report lines."""

    def __init__(self, queue: str, owners: tree.Owners, now: float | None = None) -> None:
        self.queue, self.owners = queue, owners
        self.now = time.time() if now is None else now
        self.lines: list[str] = []
        self.stray: str | None = None  # corrupt/stray.T, made at the first entry moved aside

    def p(self, rel: str) -> str:
        """Return a queue path."""
        return os.path.join(self.queue, rel)

    def did(self, rel: str, what: str) -> None:
        """Note one change."""
        self.lines.append("queue/%s: %s\n" % (rel or ".", what))

    def ids(self, role: str) -> tuple[int, int]:
        """Return the (uid, gid) of an Owners role."""
        ids: tuple[int, int] = getattr(self.owners, role)
        return ids

    def defects(self) -> list[qcheck.Defect]:
        """Scan and check the queue afresh."""
        return qcheck.check(qcheck.scan(self.queue), self.owners, self.now)

    def run(self) -> list[str]:
        """Repair in three passes; return the report lines."""
        self.layout()
        for _ in range(ENTRY_PASSES):  # a file moved with its message has its other defects at its new name
            done = len(self.lines)
            self.entries()
            if len(self.lines) == done:
                break
        self.messages()
        return self.lines

    def aside(self, rel: str) -> None:
        """Move an entry into corrupt/stray.T/."""
        if self.stray is None:
            self.stray = qadmin.corrupt_dir("stray", self.queue, self.now)
        target = os.path.join(self.stray, rel.replace("/", "_"))
        os.rename(self.p(rel), self.p(target))
        self.did(rel, "moved to queue/%s" % target)

    def layout(self) -> None:
        """Make what is missing, move aside what is of the wrong kind, set owners and modes."""
        nodes = qcheck.scan(self.queue).nodes
        # queue/ and corrupt/ first: what is of the wrong kind elsewhere is moved into corrupt/
        for rel, kind, role, mode in sorted(qcheck.layout(), key=lambda e: e[0] not in ("", "corrupt")):
            n = nodes.get(rel)
            if n is not None and n.kind != kind:
                self.aside(rel)
                n = None
            ids = self.ids(role)
            if n is None:
                self.make(rel, kind, ids, mode)
                self.did(rel, "made")
                continue
            if (n.uid, n.gid) != ids:
                os.lchown(self.p(rel), *ids)
                self.did(rel, "owner set to %d:%d" % ids)
            if n.mode != mode:
                os.chmod(self.p(rel), mode)
                self.did(rel, "mode set to %04o" % mode)

    def make(self, rel: str, kind: str, ids: tuple[int, int], mode: int) -> None:
        """Make one directory or lock file as qmail-setup does."""
        path = self.p(rel)
        if kind == "dir":
            os.mkdir(path, 0o700)
        elif kind == "fifo":
            os.mkfifo(path, 0o600)
        else:
            with open(path, "xb") as f:
                f.write(bytes(1024) if rel == "lock/tcpto" else b"")
        os.lchown(path, *ids)
        os.chmod(path, mode)

    def entries(self) -> None:
        """Strays, non-files, wrong split directories, owners, modes, inode names, injection debris."""
        for d in self.defects():
            rel, what = d.path, d.what
            if not os.path.lexists(self.p(rel)):
                continue  # moved with its message already
            if what.startswith("stray name in") and "only split directories" in what:
                self.resplit(rel)
            elif what.startswith(("stray name", "not a regular file")):
                self.aside(rel)
            elif what.startswith("in the wrong split directory"):
                self.move_file(rel, qcheck.split_path(rel.split("/")[0], int(rel.rsplit("/", 1)[1])))
            elif what.startswith("owned by uid"):
                ids = self.ids(ROLE[rel.split("/")[0]])
                os.lchown(self.p(rel), *ids)
                self.did(rel, "owner set to %d:%d" % ids)
            elif what.startswith("writable by group or others"):
                mode = os.lstat(self.p(rel)).st_mode & 0o7755
                os.chmod(self.p(rel), mode)
                self.did(rel, "mode set to %04o" % mode)
            elif what.startswith("named "):
                self.rename_message(rel)
            elif what.startswith("injection debris"):
                os.unlink(self.p(rel))
                self.did(rel, "removed (injection debris older than 36 hours)")

    def move_file(self, rel: str, target: str) -> None:
        """Move a message file to its right place, or aside if that place is taken."""
        if os.path.lexists(self.p(target)):
            return self.aside(rel)
        os.rename(self.p(rel), self.p(target))
        self.did(rel, "moved to queue/%s" % target)

    def resplit(self, rel: str) -> None:
        """A split directory beyond 22 (a queue made with a bigger split): move its files, then remove it."""
        top, _, name = rel.partition("/")
        path = self.p(rel)
        if not (os.path.isdir(path) and not os.path.islink(path) and name.isascii() and name.isdigit()):
            return self.aside(rel)
        for entry in sorted(os.listdir(path)):
            k = qcheck.number(entry)
            if k is None or not os.path.isfile(os.path.join(path, entry)) or os.path.islink(os.path.join(path, entry)):
                self.aside(rel + "/" + entry)
            else:
                self.move_file(rel + "/" + entry, qcheck.split_path(top, k))
        os.rmdir(path)
        self.did(rel, "removed (beyond the split of %d)" % SPLIT)

    def rename_message(self, rel: str) -> None:
        """mess/K/k not named after its inode i: rename the message's files from k to i (aside if i is taken)."""
        k = int(rel.rsplit("/", 1)[1])
        i = os.lstat(self.p(rel)).st_ino
        files = [(d, qcheck.split_path(d, k), qcheck.split_path(d, i)) for d in qcheck.SPLIT_DIRS + (
            "todo", "intd", "bounce", "hold")]
        if any(os.path.lexists(self.p(new)) for _, _, new in files):
            return self.aside(rel)
        for _, old, new in files:
            if os.path.lexists(self.p(old)):
                os.rename(self.p(old), self.p(new))
                self.did(old, "renamed to queue/%s (its mess/ file's inode)" % new)

    def messages(self) -> None:
        """Set aside damaged or incomplete messages; remove uncommitted injections and old orphans."""
        for d in self.defects():
            rel, what = d.path, d.what
            if not os.path.lexists(self.p(rel)):
                continue
            top = rel.split("/")[0]
            n = qcheck.number(rel.rsplit("/", 1)[-1])
            if n is None:
                continue
            if what.startswith(RECORDS + INCOMPLETE):
                self.set_aside(n, "%s: %s" % (rel, what))
            elif what.startswith("held and in info"):
                self.aside(rel)
            elif top == "intd":  # never committed (no todo/N): not a message yet
                self.unlink(rel, "removed (an injection that never committed)")
                if what.startswith("intd without todo"):
                    self.unlink(qcheck.split_path("mess", n), "removed (an injection that never committed)")
            elif what.startswith("mess without todo or info"):
                self.unlink(rel, "removed (an orphan older than 36 hours, as qmail-send's clean-up does)")

    def unlink(self, rel: str, why: str) -> None:
        """Remove one file, if it is there."""
        try:
            os.unlink(self.p(rel))
        except FileNotFoundError:
            return
        self.did(rel, why)

    def set_aside(self, n: int, why: str) -> None:
        """Move message n to corrupt/ as qmail-send does, then remove its todo, intd and mess files."""
        where = qadmin.set_aside(n, why, self.queue, self.now)
        self.did(where, "message %d set aside (%s)" % (n, why))
        for rel in ("todo/%d" % n, "intd/%d" % n, qcheck.split_path("mess", n)):
            try:
                os.unlink(self.p(rel))
            except FileNotFoundError:
                pass


def remaining(defects: list[qcheck.Defect]) -> list[qcheck.Defect]:
    """Return the defects a repair leaves for the administrator (all but the damaged messages set aside)."""
    return [d for d in defects if not d.what.startswith("damaged message set aside")]


def repair(queue: str, owners: tree.Owners, now: float | None = None) -> list[str]:
    """Repair queue/ (qmail-send stopped, lock/sendmutex held by the caller); return the report lines."""
    return Repair(queue, owners, now).run()

