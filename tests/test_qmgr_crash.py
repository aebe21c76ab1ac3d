"""kill -9 of qmail-send while remote mail flows under control/scheduler qmgr (issue 19): recipients waiting at
destinations, batches in flight and preempted jobs live only in memory, so after each crash the restarted
qmail-send must find every recipient not marked done in remote/N again. Every recipient qmail-queue accepted
reaches the destination simulator at least once (a batch in flight at the kill may arrive twice: counted, not
forbidden); nothing bounces."""

import os
import signal
import time
from collections import Counter

import smtpsim
from conftest import queue_message
from mailsystem import MailSystem, make_system_tree
from smtpsim import Simulator
from test_crash import busy, helpers_gone

MSG = b"Subject: crash\nMessage-ID: <crash@x>\n\nA line.\n"
DOMAINS = ("a.example", "b.example", "c.example")


def delivered(sim):
    """Return a Counter of every recipient that arrived at any sink."""
    got = Counter()
    for domain in DOMAINS:
        for t in sim.sink(domain).transactions():
            got.update(t["recipients"])
    return got


def test_kill_9_of_qmail_send_under_qmgr_loses_no_recipient(procs, world_tmp):
    tree = make_system_tree(world_tmp / "crash")
    for name, value in (("scheduler", "qmgr"), ("qmgrrecipientlimit", 4), ("qmgrinitialconcurrency", 2)):
        (tree / "control" / name).write_bytes(b"%s\n" % str(value).encode())
    expected = []
    for i in range(60):
        rcpts = [b"m%d-r%d@%s" % (i, j, DOMAINS[(i + j) % 3].encode()) for j in range(5)]
        if i % 10 == 0:  # now and then a list, so that preemption has something to pass
            rcpts += [b"m%d-l%d@a.example" % (i, j) for j in range(20)]
        expected += rcpts
        envelope = b"Fs@" + DOMAINS[0].encode() + b"\0" + b"".join(b"T" + r + b"\0" for r in rcpts) + b"\0"
        assert queue_message(tree, MSG, envelope) == 0
    kills = 0
    with Simulator([(d, smtpsim.slow_data(0.03)) for d in DOMAINS], prefix="127.0.25.", first=10) as sim:
        sim.write_routes(tree)
        system = MailSystem(procs, tree)
        for round_ in range(4):
            target = sum(delivered(sim).values()) + len(expected) // 8
            deadline = time.time() + 30
            while sum(delivered(sim).values()) < target and time.time() < deadline and busy(tree):
                time.sleep(0.01)
            if not busy(tree):
                break
            if round_ % 2:
                system.kill()  # qmail-send, its helpers and the deliveries at once
            else:
                system.signal(signal.SIGKILL)  # qmail-send alone: its helpers see EOF
                system.proc.wait(10)
            kills += 1
            assert helpers_gone(system) == []
            system = MailSystem(procs, tree)
        deadline = time.time() + 90
        while busy(tree) and time.time() < deadline:
            system.signal(signal.SIGALRM)  # retries now, should a deferral have happened
            time.sleep(0.5)
        assert not busy(tree), "queue not empty after the last run"
        assert system.stop() == 0
        got = delivered(sim)
    assert kills >= 2
    missing = [r.decode() for r in expected if got[r.decode()] == 0]
    assert missing == []
    assert set(got) == {r.decode() for r in expected}  # no stranger (a bounce would go to s@a.example)
    print("%d kills; %d recipients, %d arrived twice or more" % (kills, len(expected),
                                                                 sum(1 for n in got.values() if n > 1)))
