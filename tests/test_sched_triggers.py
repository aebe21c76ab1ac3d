"""qmgr(8)'s trigger requests in qmail-send (issue 19): the bytes written to lock/trigger are read, A runs every
schedule now (as ALRM), F forgets the dead destinations, D and W wake the loop, I (and qmail's own NUL byte, and
any unknown byte) scans todo/; repeated requests collapse. The real qmail-send delivers to the destination
simulator; a request that is not I leaves no readable end of file behind (no spinning)."""

import os
import time

import smtpsim
from conftest import queue_message
from mailsystem import MailSystem, make_system_tree
from smtpsim import Simulator
from test_qmail_send import cpu_seconds

MSG = b"Subject: trigger\nMessage-ID: <trigger@x>\n\nA line.\n"


def pull(tree, data):
    """Write data to the tree's trigger FIFO, as a writer that then closes it."""
    fd = os.open(tree / "queue" / "lock" / "trigger", os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_trigger_requests_f_a_and_the_plain_pull(procs, world_tmp):
    tree = make_system_tree(world_tmp / "trig")
    for name, value in (("scheduler", "qmgr"), ("timeoutremote", 1), ("minimalbackofftime", 3000),
                        ("qmgrinitialconcurrency", 1)):
        (tree / "control" / name).write_bytes(b"%s\n" % str(value).encode())
    assert queue_message(tree, MSG, b"Fs@b.example\0Tone@m.example\0\0") == 0
    assert queue_message(tree, MSG, b"Fs@b.example\0Tlater@t.example\0\0") == 0
    with Simulator([("m.example", smtpsim.mute()), ("t.example", smtpsim.rcpt_codes({"later@*": 451}))],
                   prefix="127.0.24.", first=10) as sim:
        sim.write_routes(tree)
        mute = sim.sink("m.example")
        hop = b"[%s]:%d" % (mute.host.encode(), mute.port)
        system = MailSystem(procs, tree)
        log = system.wait_log(b"warning: destination %s is dead: " % hop, timeout=30)
        system.wait_log(b"deferral: ", count=2, timeout=30)
        assert b"is alive again" not in log
        # F: the dead destination is forgotten now, not after minimalbackofftime (3000 s)
        pull(tree, b"FFF")
        log = system.wait_log(b"destination %s is alive again\n" % hop, timeout=30)
        assert log.count(b"starting delivery") == 2  # F alone starts nothing (nor does it scan todo/)
        # A: everything deferred is due now, as ALRM: both messages are tried again at once
        pull(tree, b"A")
        system.wait_log(b"starting delivery", count=4, timeout=30)  # (A: now, not at the deferral schedule)
        # W, D and unknown bytes only wake the loop; qmail's plain pull (a NUL) still scans todo/
        pull(tree, b"WD?")
        assert queue_message(tree, MSG, b"Fs@b.example\0Tnew@t.example\0\0") == 0
        started = time.time()
        system.wait_log(b"new msg ", count=3, timeout=30)
        print("the plain pull's message read after %.3f s" % (time.time() - started))
        before = cpu_seconds(system.pid)
        time.sleep(1.5)
        assert cpu_seconds(system.pid) - before < 0.5  # no loop around a trigger left readable
        sim.sink("t.example").wait_for(lambda r: any("new@t.example" in t["recipients"] for t in r["transactions"]))
        assert system.stop() == 0
