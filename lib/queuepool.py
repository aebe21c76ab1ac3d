"""Reusing finished queue files: qmail-clean parks them in pid/, qmail-queue takes them instead of creating.

On ext4 without a journal every new inode costs a scan past the inodes its block group freed in the last
minute (six while the inode table block is dirty); after many deletions (users emptying Maildirs, a
removed tree) creating a file costs more CPU than the rest of queueing it. So when
qmail-clean removes a finished message, it renames its mess/N file (and its todo/N file) to a free slot
pid/pool.mess.K (pid/pool.intd.K) instead of unlinking it, and qmail-queue renames a slot's file to its
pid/ name (to intd/N) instead of creating one, then overwrites and truncates it before its fsync.

Safety rests on renames only: a slot's inode has no other name, so nothing in the queue can see what a
taker writes into it; two takers racing for a slot cannot both get it; a slot that two givers race for
loses one file (a plain deletion); a slot left idle is removed by qmail-clean's 36-hour rule for pid/,
like any dead injection's file.
"""

import os
import stat

SLOTS = 256
TRIES = 4  # slots tried next to the estimated top before giving up (others raced for them)
LARGEST = 65536  # bigger files are unlinked: the pool holds few disk blocks
PREFIX = "pool."


def slot(kind, k):
    """Return the pid/ name of slot k for kind (`mess` or `intd`)."""
    return "pid/%s%s.%d" % (PREFIX, kind, k)


def top(kind):
    """Return the highest full slot, or -1: the giver fills the lowest free slot and takers empty the
    highest full one, so the full slots run from 0 up (races leave rare holes: a worse guess, no harm)."""
    if not os.path.lexists(slot(kind, 0)):
        return -1
    full, empty = 0, SLOTS
    while empty - full > 1:
        mid = (full + empty) // 2
        if os.path.lexists(slot(kind, mid)):
            full = mid
        else:
            empty = mid
    return full


def take(kind, target):
    """Rename a pooled file of kind to target; True if target now names it (to be overwritten)."""
    k = top(kind)
    for k in range(k, max(k - TRIES, -1), -1):
        name = slot(kind, k)
        try:
            os.utime(name)  # first: once renamed, it is a live injection's pid file for the 36-hour rule
            os.rename(name, target)
            return True
        except FileNotFoundError:
            continue  # another taker was first
        except OSError:
            return False
    return False


_next_free = {}  # kind -> the slot the giver filled last + 1: where the next free slot most likely is


def give(kind, path):
    """Move path (a finished queue file with no other name) into the lowest free slot above the full ones;
    False if it was not moved (the caller unlinks it). qmail-clean is the one giver, so a slot it finds
    free stays free, and only takers (from the top) have emptied slots since its last fill."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not reusable(st) or st.st_size > LARGEST:
        return False
    k = free_slot(kind)
    if k is None:
        return False
    try:
        os.rename(path, slot(kind, k))
    except OSError:
        return False
    _next_free[kind] = k + 1
    return True


def free_slot(kind):
    """Return the free slot just above the full ones, walking down from the last fill; None when full."""
    k = _next_free.get(kind)
    if k is None or (k < SLOTS and os.path.lexists(slot(kind, k))):
        k = top(kind) + 1  # first give, or another giver was here: search
    for _ in range(TRIES):
        if k == 0 or os.path.lexists(slot(kind, k - 1)):
            break
        k -= 1  # takers emptied the slots above: usually one or two steps
    else:
        k = top(kind) + 1  # they emptied many
    return k if k < SLOTS else None


def reusable(st):
    """True for a plain file with no other name: one the pool may hand out and a taker may overwrite."""
    return st.st_nlink == 1 and stat.S_ISREG(st.st_mode)


def discard(name):
    """Remove what a taker got but may not use (not a plain file, another name, not openable)."""
    try:
        os.unlink(name)
    except IsADirectoryError:
        try:
            os.rmdir(name)
        except OSError:
            pass
    except OSError:
        pass


def is_pooled(name):
    """True for a pid/ entry that is a pool slot."""
    return name.startswith(PREFIX)
