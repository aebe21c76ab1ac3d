"""Preemption inside qmail-send (issue 19): with control/scheduler `qmgr` a single message queued while a big list
is being delivered to the same destination passes the list (reference §7.4: slot cost, loan, discount, minimum
slots); with `oqmgr` the same mail waits behind the list (FIFO per destination, no preemption). The real
qmail-start/qmail-send/qmail-rspawn/qmail-remote deliver to the destination simulator (tests/smtpsim.py)."""

import re

import smtpsim
from conftest import queue_message
from mailsystem import MailSystem, make_system_tree
from smtpsim import Simulator

MSG = b"Subject: preempt\nMessage-ID: <preempt@x>\n\nA line.\n"
LIST = [b"l%02d@a.example" % i for i in range(30)]
SINGLE = b"single@a.example"
PREEMPTION = re.compile(rb"preemption: msg (\d+) passes msg (\d+) in remote \((\d+) deliveries\)\n")


def run_list_then_single(procs, world_tmp, scheduler, first):
    """Deliver a 30-recipient list (15 runs of 2, window 1), queue a single once the list's first transaction is
    in; return (the sink's transactions' recipient lists in arrival order, qmail-send's log)."""
    tree = make_system_tree(world_tmp / scheduler)
    for name, value in (("scheduler", scheduler), ("qmgrinitialconcurrency", 1), ("qmgrconcurrencylimit", 1),
                        ("qmgrrecipientlimit", 2)):
        (tree / "control" / name).write_bytes(b"%s\n" % str(value).encode())
    assert queue_message(tree, MSG, b"Fs@b.example\0" + b"".join(b"T" + r + b"\0" for r in LIST) + b"\0") == 0
    with Simulator([("a.example", smtpsim.slow_data(0.15))], prefix="127.0.23.", first=first) as sim:
        sim.write_routes(tree)
        system = MailSystem(procs, tree)
        sink = sim.sink("a.example")
        sink.wait_for(lambda r: r["transaction_count"] >= 1, timeout=30)
        assert queue_message(tree, MSG, b"Fs@b.example\0T" + SINGLE + b"\0\0") == 0
        records = sink.wait_for(lambda r: sum(map(len, (t["recipients"] for t in r["transactions"])))
                                == len(LIST) + 1, timeout=60)
        log = system.wait_log(b"end msg ", count=2)
        assert system.stop() == 0
    assert records["errors"] == [] and records["max_concurrent"] <= 2  # (a QUIT may overlap the next connect)
    return [t["recipients"] for t in records["transactions"]], log


def test_qmgr_a_single_passes_the_list(procs, world_tmp):
    order, log = run_list_then_single(procs, world_tmp, "qmgr", 10)
    assert sorted(r for t in order for r in t) == sorted(x.decode() for x in LIST + [SINGLE])
    where = order.index([SINGLE.decode()])
    assert len(order) - 1 - where >= 8  # most of the list's 15 runs still came after it
    found = PREEMPTION.findall(log)
    assert len(found) == 1 and found[0][2] == b"1"
    winner, current = int(found[0][0]), int(found[0][1])
    assert b"new msg %d\n" % current in log and b"new msg %d\n" % winner in log
    assert log.index(b"new msg %d\n" % current) < log.index(b"new msg %d\n" % winner)


def test_oqmgr_a_single_waits_behind_the_list(procs, world_tmp):
    order, log = run_list_then_single(procs, world_tmp, "oqmgr", 20)
    assert order[-1] == [SINGLE.decode()]
    assert all(len(t) == 2 for t in order[:-1])  # the list in runs of two (qmgrrecipientlimit)
    assert PREEMPTION.search(log) is None
