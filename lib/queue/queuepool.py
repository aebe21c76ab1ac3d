"""Reusing finished queue files: qmail-clean parks them in pid/, qmail-queue takes them instead of creating.

On ext4 without a journal every new inode costs a scan past the inodes its block group freed in the last
minute (six while the inode table block is dirty); after many deletions (users emptying Maildirs, a
removed tree) creating a file costs more CPU than the rest of queueing it. So when
qmail-clean removes a finished message, it renames its mess/N file (and its todo/N file) to a free slot
pid/pool.mess.K (pid/pool.intd.K) instead of unlinking it, and qmail-queue renames a slot's file to its
pid/ name (to intd/N) instead of creating one, then overwrites and truncates it before its fsync.

Where to look: slot 0 first, then slots drawn at random. No order among the slots is kept, so no race
between takers (or a taker and the giver) can leave the pool looking empty or full when it is not: an
ordered pool (fill the lowest free slot, take the highest full one) was left with a hole at slot 0 by
racing takers and then looked empty to every taker while full to the giver. One message at a time
reuses slot 0; under load the pool settles about half full, where a look finds what it wants half the
time, so TRIES looks fail together about once in 2**TRIES.

Safety rests on renames only: a slot's inode has no other name, so nothing in the queue can see what a
taker writes into it; two takers racing for a slot cannot both get it; qmail-clean is the one giver, so
a slot it finds free stays free until it fills it; a slot left idle is removed by qmail-clean's 36-hour
rule for pid/, like any dead injection's file.
See qmail-clean(8), THE FILE POOL, and qmail-queue(8).
"""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)

from pyqmail.lib.util.regularfile import is_regular

SLOTS = 64
TRIES = 8  # slots looked at (slot 0, then random ones) before a taker creates or the giver unlinks
LARGEST = 65536  # bigger files are unlinked: the pool holds few disk blocks
PREFIX = "pool."
FULL_REST = 16  # after a give found its looks all full: files of that kind unlinked unlooked-at before the next look
EMPTY_REST = 32  # after a take found its looks all empty: files of that kind created unlooked-at before the next look
_empty_rest: dict[str, int] = {}  # kind -> takes left to skip (this process's; a taker's looks cost 9 system calls)


def slot(kind: str, k: int) -> str:
    """Return the pid/ name of slot k for kind (`mess` or `intd`)."""
    return "pid/%s%s.%d" % (PREFIX, kind, k)


def looks() -> list[int]:
    """Return the slots to look at, in order: 0, then TRIES - 1 drawn at random."""
    return [0] + [b % SLOTS for b in posix.urandom(TRIES - 1)]


def take(kind: str, target: str, dir_fd: int | None = None) -> bool:
    """Rename a pooled file of kind to target (names relative to dir_fd, else the working directory); True if
    target now names it (to be overwritten). After a take found every slot it looked at empty (no qmail-clean
    giving: nothing is delivered, or the pool is drained), the next EMPTY_REST takes of kind do not look."""
    if _empty_rest.get(kind):
        _empty_rest[kind] -= 1
        return False
    for k in looks():
        name = slot(kind, k)
        try:
            posix.utime(name, dir_fd=dir_fd)  # first: once renamed, it is a live injection's pid file (36-hour rule)
            posix.rename(name, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return True
        except FileNotFoundError:
            continue  # an empty slot, or another taker was first
        except OSError:
            return False
    _empty_rest[kind] = EMPTY_REST
    return False


def give(kind: str, path: str) -> bool | None:
    """Move path (a finished queue file with no other name) into a free slot: True if moved, False if every
    slot looked at was full, None if path may not be pooled; the caller unlinks it unless True."""
    try:
        st = posix.lstat(path)
    except OSError:
        return None
    if not reusable(st) or st.st_size > LARGEST:
        return None
    for k in looks():
        name = slot(kind, k)
        try:
            posix.lstat(name)
            continue  # taken
        except OSError:
            pass  # free (os.path.lexists's answer on any error)
        try:
            posix.rename(path, name)
        except OSError:
            return None
        return True
    return False


class Giver:
    """qmail-clean's side: once a give finds the pool full, the next FULL_REST files of that kind are not
    offered (a full pool means no qmail-queue is taking: a queue draining with nothing injected would
    otherwise pay nine failed lookups per file)."""

    def __init__(self) -> None:
        self.rest: dict[str, int] = {}

    def give(self, kind: str, path: str) -> bool | None:
        """Like give(), but False at once while kind rests after finding the pool full."""
        if self.rest.get(kind):
            self.rest[kind] -= 1
            return False
        moved = give(kind, path)
        if moved is False:
            self.rest[kind] = FULL_REST
        return moved


def reusable(st: posix.stat_result) -> bool:
    """True for a plain file with no other name: one the pool may hand out and a taker may overwrite."""
    return st.st_nlink == 1 and is_regular(st.st_mode)


def discard(name: str, dir_fd: int | None = None) -> None:
    """Remove what a taker got but may not use (not a plain file, another name, not openable)."""
    try:
        posix.unlink(name, dir_fd=dir_fd)
    except IsADirectoryError:
        try:
            posix.rmdir(name, dir_fd=dir_fd)
        except OSError:
            pass
    except OSError:
        pass


def is_pooled(name: str) -> bool:
    """True for a pid/ entry that is a pool slot."""
    return name.startswith(PREFIX)
