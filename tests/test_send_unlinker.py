"""qmail-send's unlinks of finished queue files in threads (lib/send/unlinker): what follows each unlink runs in the
loop once it is done, and a failed unlink is the same `will try again later` as before, with nothing removed that
the message still needs."""

import os
import subprocess

import pytest

import smtpsim
from conftest import queue_message, wait_until
from mailsystem import MailSystem, make_system_tree
from smtpsim import Simulator

from pyqmail.lib.send.unlinker import Unlinker

ROOT = os.geteuid() == 0
MSG = b"Subject: unlinker\n\nA message.\n"


def test_each_unlink_reports_its_outcome_in_the_loop(tmp_path):
    present = tmp_path / "present"
    present.write_bytes(b"x" * 100)
    u = Unlinker(threads=2)
    outcomes = []
    u.unlink(str(present), lambda ok: outcomes.append(("present", ok)))
    u.unlink(str(tmp_path / "absent"), lambda ok: outcomes.append(("absent", ok)))
    assert u.busy(str(present)) and not u.idle()
    wait_until(lambda: len(u.finished) == 2)
    assert outcomes == []  # nothing runs in the threads but the unlink
    assert not present.exists()
    u.run_finished()
    assert sorted(outcomes) == [("absent", False), ("present", True)]
    assert u.idle() and not u.busy(str(present))


def chattr(flag, path):
    """Set or clear the immutable attribute (root only)."""
    subprocess.run(["chattr", flag, str(path)], check=True)


@pytest.mark.skipif(not ROOT, reason="chattr +i needs root")
def test_a_failed_unlink_of_info_or_remote_is_retried_later_and_loses_nothing(procs, world_tmp):
    sim = Simulator([("slow.example", smtpsim.slow_data(2.0))], prefix="127.0.3.").start()
    tree = make_system_tree(world_tmp / "sys")
    sim.write_routes(tree)
    held = []
    try:
        for r in (b"a@slow.example", b"b@slow.example"):
            assert queue_message(tree, MSG, b"Fs@x.example\0T" + r + b"\0\0") == 0
        system = MailSystem(procs, tree)
        system.wait_log(b"starting delivery", count=2)
        queue = tree / "queue"
        ids = sorted(int(p.name) for p in (queue / "remote").glob("*/*"))
        assert len(ids) == 2
        a, b = ids
        held = [queue / "info" / str(a % 23) / str(a), queue / "remote" / str(b % 23) / str(b)]
        for path in held:
            chattr("+i", path)  # unlink fails with EPERM, even for root
        log = system.wait_log(b"; will try again later\n", count=2, timeout=30)
        assert b"warning: unable to unlink info/%d/%d; will try again later\n" % (a % 23, a) in log
        assert b"warning: unable to unlink remote/%d/%d; will try again later\n" % (b % 23, b) in log
        assert b"end msg %d\n" % a in log  # logged before info/N's unlink, as qmail does
        assert b"end msg %d\n" % b not in log
        for n in (a, b):
            assert (queue / "mess" / str(n % 23) / str(n)).exists()  # nothing the retry needs is gone
        assert len(sim.records()["slow.example"]["transactions"]) == 2
        assert system.stop() == 0
    finally:
        for path in held:
            chattr("-i", path)
        sim.stop()
