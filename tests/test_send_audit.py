"""An adversarial audit of qmail-send, its bounces and its control files: control files as a tired
administrator writes them, hostile senders and recipients, crashes and damage; each case runs against
the installed programs."""

import os
import re
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


@pytest.mark.parametrize("name", ["me", "locals", "virtualdomains", "percenthack", "queuelifetime", "concurrencyremote",
                                  "envnoathost", "bouncefrom", "bouncehost", "doublebounceto", "doublebouncehost"])
def test_a_directory_as_a_control_file_stops_the_start_with_one_alert(procs, tree, name):
    path = tree / "control" / name
    path.unlink(missing_ok=True)
    path.mkdir()
    proc, log = start_send(procs, tree, lspawn=scripted(), rspawn=scripted())
    assert proc.wait(20) == 111
    assert log.read_bytes() == b"alert: cannot start: unable to read controls\n"


@pytest.mark.parametrize("name", ["locals", "concurrencylocal"])
def test_a_link_to_dev_zero_as_a_control_file_stops_the_start_with_one_alert(procs, tree, name):
    """A control file is read up to 64 MiB (control.FILE_MAX): /dev/zero is unreadable, not all of memory."""
    path = tree / "control" / name
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")
    proc, log = start_send(procs, tree, lspawn=scripted(), rspawn=scripted())
    assert proc.wait(60) == 111
    assert log.read_bytes() == b"alert: cannot start: unable to read controls\n"


def test_hup_with_an_unreadable_virtualdomains_keeps_the_old_tables(procs, tree):
    control = tree / "control"
    (control / "virtualdomains").write_text("virt.example:joe\n")
    proc, log = start_send(procs, tree, lspawn=scripted(), rspawn=scripted())
    wait_for(log, b"status: local 0/")
    (control / "virtualdomains").unlink()
    (control / "virtualdomains").mkdir()
    (control / "locals").write_text("other.example\n")  # not taken either: the reread fails as a whole
    proc.send_signal(signal.SIGHUP)
    wait_for(log, b"alert: unable to reread control/virtualdomains\n")
    assert queue_message(tree, b"Subject: x\n\nx\n",
                         b"Fa@b.example\0Tjoe@test.example\0Tx@virt.example\0\0") == 0
    data = wait_for(log, b"end msg ")
    assert b"to local joe@test.example\n" in data and b"to local joe-x@virt.example\n" in data
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


@pytest.mark.parametrize("me_at_start", [True, False])
def test_hup_without_locals_keeps_local_mail_local_as_qmail_does(procs, tree, me_at_start):
    # qmail's HUP: an absent locals means control/me as read at start, and with no me then the reread fails
    # (an alert) and the old tables stay; it never leaves no local domain (all local mail sent away)
    control = tree / "control"
    if not me_at_start:
        (control / "locals").write_text("test.example\n")
        (control / "me").unlink()
        (control / "envnoathost").write_text("test.example\n")
    sent = tree / "sent"
    proc, log = start_send(procs, tree, lspawn=scripted(), rspawn=scripted("--notes", str(tree / "queue"), str(sent)))
    wait_for(log, b"status: local 0/")
    (control / "locals").unlink(missing_ok=True)
    (control / "me").unlink(missing_ok=True)
    (control / "virtualdomains").write_text("virt.example:joe\n")  # shows that a reread took place
    proc.send_signal(signal.SIGHUP)
    if not me_at_start:
        wait_for(log, b"alert: unable to reread control/locals\n")
    envelope = b"Fsender@example.org\0Tjoe@test.example\0" + (b"Tx@virt.example\0" if me_at_start else b"") + b"\0"
    assert queue_message(tree, b"Subject: after HUP\n\nx\n", envelope) == 0
    data = wait_for(log, b"end msg ")
    assert b"to local joe@test.example\n" in data and not sent.exists()
    if me_at_start:
        assert b"to local joe-x@virt.example\n" in data
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


# numbers beyond what a timeout or a float can hold: the servers serve, no internal error -------------------

HUGE = ["2147484", "9223372036854775808", "9" * 400]


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize("name", ["timeoutsmtpd", "smtpdeadline", "smtpminrate"])
def test_qmail_smtpd_serves_with_a_huge_number_in_a_control(tree, name, value):
    import subprocess
    from conftest import program, qenv
    (tree / "control" / name).write_text(value + "\n")
    env = qenv(tree, TCPREMOTEIP="127.0.0.1", TCPLOCALIP="127.0.0.1", TCPLOCALPORT="25")
    r = subprocess.run([program("qmail-smtpd")], env=env, capture_output=True, timeout=30,
                       input=b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<joe@test.example>\r\nDATA\r\n"
                             b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert r.stdout.startswith(b"220 ") and b"\r\n250 ok " in r.stdout and r.stdout.endswith(b"221 test.example\r\n")


@pytest.mark.parametrize("value", HUGE)
def test_qmail_qmtpd_serves_with_a_huge_timeoutqmtpd(procs, tree, value):
    from test_qmail_qmtpd import package, session
    (tree / "control" / "timeoutqmtpd").write_text(value + "\n")
    (tree / "control" / "qmtpddeadline").write_text(value + "\n")
    out, code, log = session(procs, tree, package([b"hi", b""], b"a@b.example", [b"joe@test.example"]))
    assert code == 0 and len(out) == 1 and out[0].startswith(b"K"), (out, log)


@pytest.mark.parametrize("value", HUGE)
def test_qmail_qmqpd_serves_with_a_huge_timeout(procs, tree, value):
    from test_qmqpd import HI, session
    for name in ("qmqpdtimeout", "qmqpddeadline"):
        (tree / "control" / name).write_text(value + "\n")
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    reply, code, log = session(procs, tree, HI)
    assert code == 0 and b":K" in reply, (reply, log)


# hostile senders and recipients ----------------------------------------------------------------------------

def peak_kb(pid):
    """Return the process's peak resident set (VmHWM) in kB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def queued_messages(tree):
    """Return the paths of the messages in the queue (mess/)."""
    return [p for p in (tree / "queue" / "mess").rglob("*") if p.is_file()]


def test_a_24_mb_bounce_is_streamed_not_held_in_qmail_sends_memory(procs, tree):
    # 2,400 recipients whose servers each said 10 kB: bounce/N is read in pieces (it was read whole, and copied
    # twice more: 200 MB of memory for a 64 MB bounce)
    from test_qmail_send import make_backlog
    qdir = tree / "queue"
    (n,) = make_backlog(qdir, 1, preprocessed=True)
    os.unlink(qdir / "local" / str(n % 23) / str(n))  # every recipient done: the bounce is all that is left
    entry = b"<joe@far.example>:\n" + b"y" * 9990 + b"\n\n"
    with open(qdir / "bounce" / str(n), "wb") as f:
        for _ in range(2400):
            f.write(entry)
    proc, log = start_send(procs, tree, lspawn=scripted(), rspawn=scripted("#Zlater\\0"))  # the bounce stays queued
    wait_for(log, b"bounce msg %d qp " % n, timeout=60)
    peak = peak_kb(proc.pid)
    data = wait_for(log, b"end msg %d\n" % n)
    assert data.count(b"bounce msg ") == 1
    [bounce] = [p for p in queued_messages(tree) if p.name != str(n)]
    text = bounce.read_bytes()
    assert text.count(entry) == 2400 and text.endswith(b"Subject: 0\n\n0\n")
    assert b"\n--- Below this line is a copy of the message.\n\nReturn-Path: <sender@example.org>\nReceived: " in text
    assert peak < 45000, peak  # kB: the 24 MB held once would already be most of it
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_10000_recipients_all_failing_make_one_bounce_with_every_failure(procs, tree):
    many = 10000
    reports = ["#Dno mailbox here\\0"] * many
    sent = tree / "sent"
    proc, log = start_send(procs, tree, lspawn=scripted(*reports),
                           rspawn=scripted("--notes", str(tree / "queue"), str(sent)))
    env = b"Fsender@example.org\0" + b"".join(b"Tjoe-%d@test.example\0" % i for i in range(many)) + b"\0"
    assert queue_message(tree, b"Subject: many\n\nx\n", env) == 0
    data = wait_for(log, b"end msg ", count=2, timeout=300)  # the message, then its bounce
    assert data.count(b": failure: no_mailbox_here\n") == many
    assert data.count(b"bounce msg ") == 1
    assert sent.read_text().split()[0] == "sender@example.org"  # the bounce: one delivery, to the sender
    assert len(sent.read_text().splitlines()) == 1
    wait_until(lambda: queued_messages(tree) == [])  # qmail-clean removes mess/N after `end msg`
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


@pytest.mark.parametrize("doublebounceto, to", [(None, b"postmaster@test.example"), (b"\n", b"@test.example"),
                                                  (b"dbl \t\r\n", b"dbl@test.example")])
@pytest.mark.parametrize("sender", [b"x" * 989 + b"@test.example", b"a\rb\nc\x01@test.example",
                                    b"pre-@test.example-@[]"])
def test_a_bounce_that_bounces_makes_a_double_bounce_then_stops(procs, tree, sender, doublebounceto, to):
    # every local delivery fails: the message, its bounce (to the sender), the double bounce (to doublebounceto,
    # as qmail: an empty one gives `@host`), then the triple bounce is discarded: no loop, nothing left
    if doublebounceto is not None:
        (tree / "control" / "doublebounceto").write_bytes(doublebounceto)
    notes = tree / "notes"
    proc, log = start_send(procs, tree, lspawn=scripted("--notes", str(tree / "queue"), str(notes),
                                                        "#Dno\\0", "#Dagain\\0", "#Dthird\\0", "#Kextra\\0"))
    assert queue_message(tree, b"Subject: x\n\nbody\n", b"F" + sender + b"\0Tjoe@test.example\0\0") == 0
    data = wait_for(log, b"end msg ", count=3, timeout=60)
    assert data.count(b"bounce msg ") == 2 and data.count(b"triple bounce: discarding bounce/") == 1
    assert data.count(b"starting delivery ") == 3 and b"Kextra" not in data
    bounced_to = sender[:-4] if sender.endswith(b"-@[]") else sender
    files = rb" (?:todo|info|local|remote)(?:,(?:todo|info|local|remote))*\n"  # what the spawner saw queued
    assert re.split(files, notes.read_bytes()) == [b"joe@test.example", bounced_to, to, b""]
    wait_until(lambda: queued_messages(tree) == [])  # qmail-clean removes mess/N after `end msg`
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


# crashes and damage ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["regular file", "directory", "removed"])
def test_a_damaged_trigger_is_logged_once_and_todo_is_scanned_often_without_spinning(procs, tree, how):
    # a file or a directory as lock/trigger reads at once: qmail-send listed todo/ every turn of its loop (a
    # third of a CPU here); a missing one left new mail waiting 1500 s, and neither said a word
    from test_qmail_send import cpu_seconds
    trigger = tree / "queue" / "lock" / "trigger"
    trigger.unlink()
    if how == "regular file":
        trigger.write_bytes(b"")
    elif how == "directory":
        trigger.mkdir()
    proc, log = start_send(procs, tree, lspawn=scripted(), rspawn=scripted())
    wait_for(log, b"status: local 0/")
    cpu = cpu_seconds(proc.pid)
    assert queue_message(tree, b"Subject: x\n\nx\n", ENVELOPE) == 0
    data = wait_for(log, b"end msg ", timeout=30)
    assert cpu_seconds(proc.pid) - cpu < 1.0
    warning = (b"warning: unable to open lock/trigger" if how == "removed" else
               b"warning: not a named pipe: lock/trigger") + b"; todo/ is scanned every 10 seconds\n"
    assert data.startswith(warning) and data.count(warning) == 1, data
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


@pytest.mark.parametrize("stray", ["leading zeros", "another split directory"])
def test_a_stray_copy_in_info_and_local_does_not_deliver_the_message_twice(procs, tree, stray):
    # qmail-send took `info/5/0028` or `info/3/28` for message 28 too: scheduled twice, delivered twice, and
    # `end msg` logged while the second delivery ran
    from test_qmail_send import make_backlog
    qdir = tree / "queue"
    (n,) = make_backlog(qdir, 1, preprocessed=True)
    strays = []
    for d in ("info", "local"):
        if stray == "leading zeros":
            copy = qdir / d / str(n % 23) / ("00%d" % n)
        else:
            copy = qdir / d / str((n + 1) % 23) / str(n)
        os.link(qdir / d / str(n % 23) / str(n), copy)
        strays.append(copy)
    os.link(qdir / "mess" / str(n % 23) / str(n), tree / "kept")  # so that the later message gets another number
    proc, log = start_send(procs, tree, lspawn=scripted("sleep:1", "#Kok\\0", "sleep:1", "#Kok\\0"), rspawn=scripted())
    wait_for(log, b"end msg %d\n" % n)
    assert queue_message(tree, b"Subject: later\n\nx\n", ENVELOPE) == 0  # a later message: the first is over
    data = wait_for(log, b"end msg ", count=2)
    assert data.count(b": msg %d to local " % n) == 1 and b"warning:" not in data, data
    assert all(p.exists() for p in strays)  # left alone, for the administrator (qmail-qctl check names them)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_a_stray_todo_name_with_leading_zeros_is_left_alone(procs, tree):
    qdir = tree / "queue"
    (qdir / "todo" / "0042").write_bytes(b"u1\0p1\0Fa@b.example\0Tjoe@test.example\0")
    proc, log = start_send(procs, tree, lspawn=scripted(), rspawn=scripted())
    assert queue_message(tree, b"Subject: x\n\nx\n", ENVELOPE) == 0
    data = wait_for(log, b"end msg ")
    assert b"todo/42" not in data and b"msg 42\n" not in data and b"warning" not in data, data
    assert (qdir / "todo" / "0042").exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_a_fifo_planted_as_mess_n_never_hangs_the_bounce(procs, tree):
    # mess/N belongs to the queue's owner (the network servers' account when they queue in-process), not to
    # qmail-send: a FIFO put there held qmail-send's open for ever when it made the bounce; now the bounce is
    # put off (qmail-send's usual warning) and qmail-send goes on
    proc, log = start_send(procs, tree, lspawn=scripted("sleep:3", "#Dno\\0"))
    assert queue_message(tree, b"Subject: x\n\nbody\n", b"Fs@test.example\0Tjoe@test.example\0\0") == 0
    n = int(re.search(rb"new msg (\d+)", wait_for(log, b"starting delivery ")).group(1))
    mess = tree / "queue" / "mess" / str(n % 23) / str(n)
    st = mess.stat()
    mess.unlink()
    os.mkfifo(mess)
    os.chown(mess, st.st_uid, st.st_gid)
    wait_for(log, b"warning: trouble injecting bounce message, will try later\n", timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert (tree / "queue" / "bounce" / str(n)).exists()  # kept for the next try: nothing lost
