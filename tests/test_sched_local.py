"""The local channel's round robin per recipient user under control/scheduler qmgr (issue 19): one user's flood of
slow deliveries holds at most LOCAL_USER_WINDOW (2) slots, and another user's message starts at the next free
slot instead of after the whole flood. The real qmail-send, qmail-lspawn and qmail-local deliver to Maildirs."""

import re

from mailsystem import MailSystem, make_system_tree
from test_e2e_delivery import dotqmail, send, users

from pyqmail.lib.send import destinations

STARTING = re.compile(rb"starting delivery (\d+): msg (\d+) to local (\S+)\n")
RESULT = re.compile(rb"delivery (\d+): (?:success|failure|deferral): ")


def at_once(log, user):
    """Return the most deliveries to user (local part up to `-`) that ran at the same time, from the log."""
    events = sorted([(m.start(), 1, m.group(1)) for m in STARTING.finditer(log)
                     if m.group(3).split(b"@")[0].split(b"-")[0] == user]
                    + [(m.start(), -1, m.group(1)) for m in RESULT.finditer(log)])
    mine, running, most = set(), 0, 0
    for _, step, d in events:
        if step == 1:
            mine.add(d)
            running += 1
        elif d in mine:
            mine.discard(d)
            running -= 1
        most = max(most, running)
    return most


def test_one_users_flood_does_not_starve_another(procs, world_tmp):
    tree = make_system_tree(world_tmp / "local")
    (tree / "control" / "scheduler").write_bytes(b"qmgr\n")
    homes = users(tree, world_tmp, "flood", "other")
    dotqmail(homes["flood"], "slow", "|sleep 0.4\n./Maildir/\n")
    flood = 16
    for i in range(flood):
        send(tree, [b"flood-slow@test.example"])
    system = MailSystem(procs, tree)
    system.wait_log(b"starting delivery ", count=1, timeout=30)
    send(tree, [b"other@test.example"])
    log = system.wait_log(b"end msg ", count=flood + 1, timeout=60)
    assert system.stop() == 0
    starts = STARTING.findall(log)
    other = next(i for i, (_, _, r) in enumerate(starts) if r == b"other@test.example")
    queued_at = log.index(b"new msg ", log.index(b"starting delivery "))  # the other message, read after the start
    flood_before = sum(1 for m in STARTING.finditer(log, 0, log.index(b"to local other@")) if m.start() > queued_at)
    assert flood_before <= destinations.LOCAL_USER_WINDOW  # at most the window's worth started meanwhile
    assert other < flood  # not after the flood
    assert at_once(log, b"flood") == destinations.LOCAL_USER_WINDOW
    assert len(list((homes["other"] / "Maildir" / "new").iterdir())) == 1
    assert len(list((homes["flood"] / "Maildir" / "new").iterdir())) == flood
