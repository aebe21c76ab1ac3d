"""qmail-send wired by hand to real and scripted spawners: start-up alerts, reports, backlog, clean-up, lifetime."""

import fcntl
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from conftest import program, qenv, queue_message
from mailsystem import assign_users, make_home
from pyqmail.lib.send.sendchannel import REPORTMAX, split_reports
from pyqmail.lib.send.timequeue import TimeQueue

ENVELOPE = b"Fsender@example.org\0Tjoe@test.example\0\0"

# a spawner peer speaking qmail's protocol: limit byte, then one scripted report per command. With
# `--notes QUEUE FILE` first, it appends to FILE, before each answer, the recipient and which of the
# message's todo/info/local/remote files exist; a report "sleep:S" makes it wait S seconds first.
SCRIPTED_SPAWNER = r'''
import os, sys, time
args = sys.argv[1:]
queue = notes = None
if args[:1] == ["--notes"]:
    queue, notes, args = args[1], args[2], args[3:]
reports = [r.encode().replace(b"\\0", b"\0") for r in args]
os.write(1, bytes([120]))
buf = b""
while True:
    data = os.read(0, 4096)
    if not data:
        break
    buf += data
    while buf.count(b"\0") >= 3:
        delnum = buf[0]
        parts = buf[1:].split(b"\0", 3)
        buf = parts[3]
        if notes:
            n = int(parts[0].split(b"/")[1])
            seen = [d for d, p in (("todo", "todo/%d" % n), ("info", "info/%d/%d" % (n % 23, n)),
                                   ("local", "local/%d/%d" % (n % 23, n)), ("remote", "remote/%d/%d" % (n % 23, n)))
                    if os.path.exists(os.path.join(queue, p))]
            with open(notes, "a") as f:
                f.write("%s %s\n" % (parts[2].decode(), ",".join(seen)))
        report = reports.pop(0) if reports else b"#Kok\0"
        if report.startswith(b"sleep:"):
            time.sleep(float(report[6:]))
            report = reports.pop(0) if reports else b"#Kok\0"
        if report.startswith(b"EXIT"):
            sys.exit(0)
        os.write(1, report.replace(b"#", bytes([delnum])))
'''


def start_send(procs, tree, lspawn=None, rspawn=None, env=None):
    """Start qmail-send with fds 0–6 wired to a log file, two spawners and qmail-clean; return (proc, log)."""
    e = qenv(tree, **(env or {}))
    lspawn = lspawn or [program("qmail-lspawn"), "./Maildir/"]
    rspawn = rspawn or [program("qmail-rspawn")]
    ends = []
    for argv in (lspawn, rspawn, [program("qmail-clean")]):
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        procs.start(argv, stdin=to_r, stdout=from_w, env=e)
        os.close(to_r)
        os.close(from_w)
        ends += [to_w, from_r]
    log = Path(tree) / "send.log"
    logfd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 20) for fd in [logfd] + ends]

    def wire():
        for target, fd in enumerate(high):
            os.dup2(fd, target)
    proc = procs.start([program("qmail-send")], env=e, preexec_fn=wire, pass_fds=(3, 4, 5, 6))
    for fd in [logfd] + ends + high:
        os.close(fd)
    return proc, log


def wait_for(log, text, timeout=30, count=1):
    """Wait until text is in the log count times; return the log."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        data = log.read_bytes() if log.exists() else b""
        if data.count(text) >= count:
            return data
        time.sleep(0.02)
    raise AssertionError("no %r in log:\n%s" % (text, data.decode(errors="replace")))


def scripted(*reports):
    """Return the argv of a spawner that answers each command with the next report (`#` = delnum)."""
    return [sys.executable, "-c", SCRIPTED_SPAWNER, *reports]


@pytest.fixture
def mailbox(tree, world_tmp):
    """joe@test.example is delivered to a Maildir of the delivery account; return the home."""
    home = make_home(world_tmp)
    assign_users(tree, [("=", "joe", home, "", ""), ("+", "joe-", home, "-", "")])
    return home


def test_without_locals_or_me_it_cannot_start(procs, tree):
    (tree / "control" / "me").unlink()
    (tree / "control" / "locals").unlink()
    proc, log = start_send(procs, tree)
    assert proc.wait(10) == 111
    assert log.read_bytes() == b"alert: cannot start: unable to read controls\n"


def test_a_second_qmail_send_finds_the_mutex_taken(procs, tree):
    with open(tree / "queue" / "lock" / "sendmutex", "w") as mutex:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        proc, log = start_send(procs, tree)
        assert proc.wait(10) == 111
    assert log.read_bytes() == b"alert: cannot start: qmail-send is already running\n"


def test_a_spawner_without_its_limit_byte_stops_the_start(procs, tree):
    proc, log = start_send(procs, tree, rspawn=["true"])
    assert proc.wait(10) == 111
    assert log.read_bytes() == b"alert: cannot start: hath the daemon spawn no fire?\n"


def test_mangled_and_out_of_range_reports_are_logged_as_qmail_does(procs, tree):
    proc, log = start_send(procs, tree, rspawn=scripted("#Xodd\\0", "\x63Kstray\\0#Zlater\\0"))
    env = ENVELOPE.replace(b"joe@test.example", b"a@remote.example")
    assert queue_message(tree, b"Subject: x\n\nx\n", env) == 0
    wait_for(log, b"delivery 1: report mangled, will defer\n")
    proc.send_signal(signal.SIGALRM)
    data = wait_for(log, b"delivery 2: deferral: later\n")
    assert b"warning: internal error: delivery report out of range\n" in data
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_a_lost_spawner_makes_qmail_send_exit(procs, tree):
    proc, log = start_send(procs, tree, rspawn=scripted("EXIT"))
    assert queue_message(tree, b"\n", ENVELOPE.replace(b"joe@test.example", b"a@remote.example")) == 0
    data = wait_for(log, b"status: exiting\n")
    assert b"alert: oh no! lost spawn connection! dying...\n" in data
    assert proc.wait(10) == 0


def test_an_unknown_record_in_a_channel_file_is_reported(procs, tree):
    (n,) = make_backlog(tree / "queue", 1, preprocessed=True, record=b"Xwhat\0")
    proc, log = start_send(procs, tree, lspawn=scripted())
    data = wait_for(log, b"warning: unknown record type in local/%d/%d!\n" % (n % 23, n))
    assert b"starting delivery" not in data


def make_backlog(qdir, count, preprocessed=False, record=None):
    """Create count messages as qmail-queue leaves them (or preprocessed, with info/ and local/); return ids."""
    ids = []
    for i in range(count):
        tmp = qdir / "pid" / ("backlog.%d" % i)
        tmp.write_bytes(b"Received: (qmail 1 invoked by uid 1); 1 Jan 2026 00:00:00 -0000\nSubject: %d\n\n%d\n" % (i, i))
        n = tmp.stat().st_ino
        os.link(tmp, qdir / "mess" / str(n % 23) / str(n))
        tmp.unlink()
        if preprocessed:
            (qdir / "info" / str(n % 23) / str(n)).write_bytes(b"Fsender@example.org\0")
            (qdir / "local" / str(n % 23) / str(n)).write_bytes(record or b"Tjoe@test.example\0")
        else:
            (qdir / "intd" / str(n)).write_bytes(b"u1\0p1\0" + ENVELOPE[:-1])
            os.link(qdir / "intd" / str(n), qdir / "todo" / str(n))
        ids.append(n)
    return ids


def test_a_10000_message_todo_backlog_does_not_delay_the_first_deliveries(procs, tree, mailbox):
    make_backlog(tree / "queue", 10000)
    started = time.time()
    proc, log = start_send(procs, tree)
    wait_for(log, b"delivery 1: success:", timeout=60)
    first = time.time() - started
    wait_for(log, b"delivery 20: success:", timeout=60)
    twenty = time.time() - started
    print("10,000 in todo: first delivery after %.2f s, twentieth after %.2f s" % (first, twenty))
    assert first < 5 and twenty < 10
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert len(list((mailbox / "Maildir" / "new").iterdir())) >= 20


def test_clean_up_removes_only_old_debris_of_dead_injections(procs, tree):
    qdir = tree / "queue"
    old, young, queued_old = make_backlog(qdir, 3)
    for n in (old, young):
        os.unlink(qdir / "todo" / str(n))
        os.unlink(qdir / "intd" / str(n))
    long_ago = time.time() - 129600 - 100
    for n in (old, queued_old):
        os.utime(qdir / "mess" / str(n % 23) / str(n), (long_ago, long_ago))
    proc, log = start_send(procs, tree, lspawn=scripted("#Kok\\0"))
    wait_for(log, b"end msg %d\n" % queued_old)
    deadline = time.time() + 30
    while (qdir / "mess" / str(old % 23) / str(old)).exists() and time.time() < deadline:
        time.sleep(0.05)
    assert not (qdir / "mess" / str(old % 23) / str(old)).exists()
    assert (qdir / "mess" / str(young % 23) / str(young)).exists()


def test_past_queuelifetime_a_deferral_becomes_a_bounce(procs, tree, mailbox):
    (tree / "control" / "queuelifetime").write_text("0\n")
    proc, log = start_send(procs, tree, lspawn=scripted("#Zbusy\\0", "#Zbusy\\0"))
    assert queue_message(tree, b"Subject: late\n\n", b"F\0Tjoe@test.example\0\0") == 0
    wait_for(log, b"delivery 1: deferral: busy\n")
    time.sleep(1.1)  # the next pass must start after the message's birth second
    proc.send_signal(signal.SIGALRM)
    wait_for(log, b"delivery 2: failure: busyI'm_not_going_to_try_again;"
                  b"_this_message_has_been_in_the_queue_too_long./\n")
    wait_for(log, b"bounce msg ")


def test_terminating_persists_each_retry_time_as_the_channel_file_mtime(procs, tree):
    proc, log = start_send(procs, tree, lspawn=scripted("#Zlater\\0"))
    assert queue_message(tree, b"\n", ENVELOPE) == 0
    wait_for(log, b"delivery 1: deferral: later\n")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert log.read_bytes().endswith(b"status: exiting\n")
    (local,) = [p for p in (tree / "queue" / "local").rglob("*") if p.is_file()]
    birth = int((tree / "queue" / "info" / local.parent.name / local.name).stat().st_mtime)
    # the first local retry, birth + (isqrt(pass start - birth) + 10)^2: 100 s when the pass starts within a
    # second of the birth, more on a loaded machine
    from math import isqrt
    assert int(local.stat().st_mtime) in {birth + (isqrt(d) + 10) ** 2 for d in range(30)}


@given(st.lists(st.tuples(st.integers(0, 119), st.binary(max_size=60).map(lambda b: b.replace(b"\0", b""))),
                max_size=8), st.lists(st.integers(1, 50), max_size=10))
def test_reports_split_the_same_whatever_the_chunking(reports, cuts):
    stream = b"".join(bytes([d]) + text + b"\0" for d, text in reports)
    buf, got, pos = bytearray(), [], 0
    for cut in cuts + [len(stream)]:
        got += split_reports(buf, stream[pos:pos + cut])
        pos += cut
    got += split_reports(buf, stream[pos:])
    assert got == [bytes([d]) + text for d, text in reports]


def test_a_report_is_cut_at_reportmax():
    buf = bytearray()
    (line,) = split_reports(buf, b"\x01K" + b"x" * 20000 + b"\0")
    assert len(line) == REPORTMAX - 1 and line.startswith(b"\x01Kxxx")


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 100)), max_size=30), st.integers(0, 100))
def test_timequeue_pops_due_ids_in_time_order(entries, recent):
    q = TimeQueue()
    for id, due in entries:
        q.add(id, due)
    popped = []
    while (id := q.pop_due(recent)) is not None:
        popped.append(id)
    assert popped == [id for due, id in sorted((d, i) for i, d in entries) if due <= recent]
    assert q.next_due() is None or q.next_due() > recent



def test_an_unreadable_todo_directory_is_an_alert_and_a_pause(procs, tree):
    proc, log = start_send(procs, tree, lspawn=scripted("#Kok\\0"))
    wait_for(log, b"status: local 0/10 remote 0/20\n")
    os.rename(tree / "queue" / "todo", tree / "queue" / "todo.away")
    try:
        pull = os.open(tree / "queue" / "lock" / "trigger", os.O_WRONLY | os.O_NONBLOCK)
        os.write(pull, b"\0")
        os.close(pull)
        wait_for(log, b"alert: unable to opendir todo, sleeping...\n")
    finally:
        os.rename(tree / "queue" / "todo.away", tree / "queue" / "todo")
    assert queue_message(tree, b"\n", ENVELOPE) == 0
    wait_for(log, b"end msg ", timeout=40)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_names_in_todo_that_are_not_ascii_numbers_are_left_alone(procs, tree, mailbox):
    """`²` passes str.isdigit but not int(): such debris must not stop the scan (or qmail-send)."""
    for name in ("\u00b2", "12\u0663", "1_0", "+5", " 7"):
        (tree / "queue" / "todo" / name).write_bytes(b"")
    proc, log = start_send(procs, tree)
    assert queue_message(tree, b"Subject: x\n\nbody\n", b"F\0Tjoe@test.example\0\0") == 0
    wait_for(log, b"delivery 1: success:")
    deadline = time.time() + 30  # qmail-clean removes the message's todo/N in its own time
    while len(list((tree / "queue" / "todo").iterdir())) > 5 and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None and b"alert" not in log.read_bytes()
    assert sorted(p.name for p in (tree / "queue" / "todo").iterdir()) == sorted(
        ("\u00b2", "12\u0663", "1_0", "+5", " 7"))


SILENT_SPAWNER = "import os; os.write(1, bytes([10]))\nwhile os.read(0, 4096):\n    pass\n"


def cpu_seconds(pid):
    """Return a process's user + system CPU time in seconds, from /proc."""
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_pull_with_1000_messages_kept_in_memory_is_served_soon_and_without_spinning(procs, tree, mailbox):
    """Messages kept in memory keep todo/N, so each listing is long: the next one waits a while, never long."""
    make_backlog(tree / "queue", 1000)
    proc, log = start_send(procs, tree, lspawn=[sys.executable, "-c", SILENT_SPAWNER])
    wait_for(log, b"new msg ", count=1000, timeout=60)
    backlog = set((tree / "queue" / "todo").iterdir())
    started = time.time()
    assert queue_message(tree, b"Subject: late\n\nbody\n", b"F\0Tjoe@test.example\0\0") == 0
    [late] = [int(p.name) for p in set((tree / "queue" / "todo").iterdir()) - backlog]
    wait_for(log, b"new msg %d\n" % late, timeout=5)
    print("with 1000 kept in memory: the next message preprocessed after %.3f s" % (time.time() - started))
    before = cpu_seconds(proc.pid)
    time.sleep(2)
    assert cpu_seconds(proc.pid) - before < 0.5  # idle: no loop around a trigger left readable
