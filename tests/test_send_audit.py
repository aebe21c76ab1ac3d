"""An adversarial audit of qmail-send, its bounces and its control files (issue: the b3 audit): control files as a
tired administrator writes them, hostile senders and recipients, crashes and damage; each case runs against
the installed programs."""

import os
import signal
import time

import pytest

from conftest import queue_message
from test_qmail_send import ENVELOPE, mailbox, scripted, start_send, wait_for  # noqa: F401 (mailbox: a fixture)

NUMERIC = ("queuelifetime", "concurrencylocal", "concurrencyremote", "minimalbackofftime", "maximalbackofftime",
           "qmgrinitialconcurrency", "qmgrconcurrencylimit", "qmgrfailedcohortlimit", "qmgrratedelay",
           "qmgrslotcost", "qmgrslotloan", "qmgrslotdiscount", "qmgrminimumslots", "qmgrrecipientlimit",
           "qmgrdeadcachesize", "qmgrdebug")


def delivered(home):
    """Return the number of messages in the Maildir."""
    return len(list((home / "Maildir" / "new").iterdir()))


def wait_until(check, timeout=30):
    """Wait until check() is true."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met")


@pytest.mark.parametrize("scheduler", ["qmail", "qmgr"])
@pytest.mark.parametrize("value", [b"18446744073709551616\n", b"9" * 400 + b"\n"])
def test_huge_numbers_in_every_numeric_control_neither_stop_nor_hang_qmail_send(procs, tree, mailbox, scheduler,
                                                                                 value):
    for name in NUMERIC:
        (tree / "control" / name).write_bytes(value)
    (tree / "control" / "scheduler").write_text(scheduler + "\n")
    proc, log = start_send(procs, tree)
    wait_for(log, b"status: local 0/")
    assert queue_message(tree, b"Subject: huge\n\nx\n", ENVELOPE) == 0
    wait_for(log, b"end msg ")
    assert delivered(mailbox) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert b"internal error" not in log.read_bytes()


@pytest.mark.parametrize("name", ["concurrencylocal", "locals", "me", "virtualdomains", "percenthack", "envnoathost",
                                  "bouncehost", "doublebounceto"])
def test_a_fifo_as_a_control_file_does_not_hang_the_start(procs, tree, mailbox, name):
    path = tree / "control" / name
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    proc, log = start_send(procs, tree)
    wait_for(log, b"status: local 0/", timeout=10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_a_fifo_as_a_control_file_reads_as_its_writers_wrote(tree, monkeypatch):
    from pyqmail.lib.config import control
    monkeypatch.setenv("QMAILHOME", str(tree))
    path = tree / "control" / "concurrencyremote"
    os.mkfifo(path)
    assert control.read_file("concurrencyremote") == b""  # no writer: qmail's open_read then reads nothing
    assert control.readint("concurrencyremote", 20) == 20
    writer = os.open(path, os.O_RDWR)  # a writer that has written nothing yet: trouble reading, not a wait
    try:
        with pytest.raises(OSError):
            control.read_file("concurrencyremote")
    finally:
        os.close(writer)
    keep = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # keeps what a writer wrote once it has gone
    try:
        writer = os.open(path, os.O_WRONLY)
        os.write(writer, b"7\n")
        os.close(writer)
        assert control.readint("concurrencyremote", 20) == 7
    finally:
        os.close(keep)


def test_hup_with_a_fifo_as_virtualdomains_does_not_hang_qmail_send(procs, tree, mailbox):
    proc, log = start_send(procs, tree)
    wait_for(log, b"status: local 0/")
    os.mkfifo(tree / "control" / "virtualdomains")
    proc.send_signal(signal.SIGHUP)
    assert queue_message(tree, b"Subject: after HUP\n\nx\n", ENVELOPE) == 0
    wait_for(log, b"end msg ", timeout=10)
    assert delivered(mailbox) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
