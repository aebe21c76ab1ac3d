"""A message qmail-send can never deliver says so once (issue 17.9): a damaged todo/N is logged once, gets no
info/N, local/N or remote/N, stays in todo/ and is not read again while unchanged; an info/N without its
sender is logged once and left out of the schedule; good messages beside them are delivered."""

import os
import signal
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from conftest import make_tree, queue_message
from pyqmail.lib.send import todo
from test_qmail_send import make_backlog, mailbox, start_send, wait_for  # noqa: F401 (mailbox: a fixture)
from test_todo import REWRITER, preprocess, queue_one, split

GOOD = b"Fsender@example.org\0Tjoe@test.example\0\0"


# plan(): the records of a todo/N --------------------------------------------------------------------------

RECORD = st.one_of(st.sampled_from([b"u12", b"p34", b"Fs@a.example", b"F", b"Tjoe@test.example", b"Tfar@b.example"]),
                   st.binary(max_size=6).filter(lambda b: b"\0" not in b))


def expected_failure(records):
    """Model: the first record of an unknown type fails the plan, else a plan without any F record fails."""
    for r in records:
        if r[:1] not in (b"u", b"p", b"F", b"T"):
            return b"warning: unknown record type in todo/7\n"
    if not any(r[:1] == b"F" for r in records):
        return b"warning: no sender record in todo/7; message set aside\n"
    return None


@given(st.lists(RECORD, max_size=8))
def test_plan_fails_on_an_unknown_record_or_without_a_sender(records):
    p = todo.plan(7, b"".join(r + b"\0" for r in records), 1, REWRITER)
    assert p.failure == expected_failure(records)
    if p.failure is None:
        assert p.info.startswith(b"F")


def test_plan_of_records_without_f():
    assert todo.plan(7, b"u1\0p2\0Tjoe@test.example\0", 1, REWRITER).failure == \
        b"warning: no sender record in todo/7; message set aside\n"
    assert todo.plan(7, b"", 1, REWRITER).failure == b"warning: no sender record in todo/7; message set aside\n"


# prepare(): a damaged todo/N on a real queue --------------------------------------------------------------

DAMAGED = [
    (b"u1\0p2\0Tme@test.example\0", b"warning: no sender record in todo/%d; message set aside\n"),
    (b"", b"warning: no sender record in todo/%d; message set aside\n"),
    (b"u1\0p2\0Fs@a\0Tme@test.exa", b"warning: truncated record in todo/%d; message set aside\n"),
    (b"u1\0p2\0Fs@a\0Tme@test.example\0Xodd\0", b"warning: unknown record type in todo/%d\n"),
]


@pytest.mark.parametrize("data, warning", DAMAGED)
def test_prepare_refuses_a_damaged_todo_and_writes_no_file(tree, data, warning):
    q = str(Path(tree) / "queue")
    n, _ = queue_one(tree, b"x\n", b"s@a", [b"me@test.example"])
    split(tree, "info", n).write_bytes(b"Fstale\0")  # debris of an earlier try: never trusted
    (Path(q) / "todo" / str(n)).unlink()
    (Path(q) / "todo" / str(n)).write_bytes(data)
    result = preprocess(n, REWRITER, q)
    assert not result.ok and result.channels == ()
    assert result.log[0] == b"new msg %d\n" % n and result.log[-1] == warning % n
    assert result.aside == todo.stat_key(os.stat(Path(q) / "todo" / str(n)))
    for d in ("info", "local", "remote"):
        assert not split(tree, d, n).exists()
    assert (Path(q) / "todo" / str(n)).read_bytes() == data


def test_a_fifo_in_todo_does_not_hang_preprocessing(tree):
    q = str(Path(tree) / "queue")
    n, _ = queue_one(tree, b"x\n", b"s@a", [b"me@test.example"])
    (Path(q) / "todo" / str(n)).unlink()
    os.mkfifo(Path(q) / "todo" / str(n))

    def hung(*_):
        raise TimeoutError("preprocessing a FIFO hangs")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        result = preprocess(n, REWRITER, q)  # no writer: reads as empty at once
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert result.log[-1] == b"warning: no sender record in todo/%d; message set aside\n" % n


@pytest.fixture(scope="module")
def one_message(tmp_path_factory):
    """A queue holding one message (made once: hypothesis calls the test many times); return (queue, n)."""
    tree = make_tree(tmp_path_factory.mktemp("hardening") / "qmail", "--single-user", "--me", "test.example")
    n, _ = queue_one(tree, b"x\n", b"s@a", [b"me@test.example"])
    return str(tree / "queue"), n


TODO_BYTES = st.lists(st.one_of(RECORD.map(lambda r: r + b"\0"), st.binary(max_size=4)), max_size=6).map(b"".join)


@given(data=TODO_BYTES)
def test_prepare_of_any_bytes_is_a_plan_or_a_logged_refusal(one_message, data):
    queue, n = one_message
    (Path(queue) / "todo" / str(n)).write_bytes(data)
    result = todo.prepare(n, REWRITER, queue)
    failure = expected_failure(data.split(b"\0")[:-1])
    if data[-1:] not in (b"", b"\0"):
        assert result.log[-1] == b"warning: truncated record in todo/%d; message set aside\n" % n
    elif failure is not None:
        assert result.log[-1] == failure.replace(b"todo/7", b"todo/%d" % n)
    else:
        assert isinstance(result, todo.Unwritten)
    if not isinstance(result, todo.Unwritten):
        assert not result.ok and result.aside is not None


# qmail-send: one line, no endless retry, the rest delivered ---------------------------------------------

def pull_and_deliver(tree, log, mailbox, proc, count):
    """Queue count good messages one by one, each delivered (each a todo scan), with an ALRM in between."""
    for i in range(count):
        assert queue_message(tree, b"Subject: good %d\n\nbody\n" % i, GOOD) == 0
        wait_for(log, b"end msg ", count=i + 1)
        proc.send_signal(signal.SIGALRM)
    deadline = time.time() + 10
    while len(list((mailbox / "Maildir" / "new").iterdir())) < count and time.time() < deadline:
        time.sleep(0.02)
    assert len(list((mailbox / "Maildir" / "new").iterdir())) == count


def plant(qdir, how):
    """Make one message in todo/ damaged as `how` says; return its id."""
    (n,) = make_backlog(qdir, 1)
    name = qdir / "todo" / str(n)
    if how == "dir":
        name.unlink()
        name.mkdir()
    elif how == "fifo":
        name.unlink()
        os.mkfifo(name)
    elif how == "no mess":
        # moved out of the queue, not unlinked: while its inode is in use no new message can be given
        # number n, whose files would collide with todo/n (qmail-queue's exit 65, as qmail's)
        os.rename(qdir / "mess" / str(n % 23) / str(n), qdir.parent / ("mess-%d-kept-aside" % n))
    else:
        name.unlink()
        name.write_bytes(how)
    return n


NO_SENDER = "warning: no sender record in todo/{n}; message set aside\n"


@pytest.mark.parametrize("how, warning", [
    (b"u1\0p1\0Tjoe@test.example\0", NO_SENDER),
    (b"", NO_SENDER),
    (b"u1\0p1\0Fsender@example.org\0Tjoe@test.exam", "warning: truncated record in todo/{n}; message set aside\n"),
    (b"u1\0p1\0Fsender@example.org\0Yodd\0Tjoe@test.example\0", "warning: unknown record type in todo/{n}\n"),
    ("dir", "warning: trouble reading todo/{n}\n"),
    ("fifo", NO_SENDER),
    ("no mess", "warning: unable to stat mess/{s}/{n}\n"),
])
def test_a_damaged_todo_is_logged_once_and_the_rest_is_delivered(procs, tree, mailbox, how, warning):
    qdir = tree / "queue"
    n = plant(qdir, how)
    warning = warning.format(n=n, s=n % 23).encode()
    proc, log = start_send(procs, tree)
    wait_for(log, warning)
    pull_and_deliver(tree, log, mailbox, proc, 3)  # three more scans of todo/, three ALRMs
    data = log.read_bytes()
    assert data.count(warning) == 1, data.decode(errors="replace")
    assert b"trouble opening" not in data
    if how in ("dir", "no mess"):  # trouble that may pass: left where it is, nothing lost
        assert data.count(b"new msg %d\n" % n) <= 1 and b"end msg %d\n" % n not in data
        for d in ("info", "local", "remote"):
            assert not (qdir / d / str(n % 23) / str(n)).exists()
        assert os.path.lexists(qdir / "todo" / str(n))
    else:  # damaged: moved to corrupt/ with its message, once (the number may then be reused)
        assert data.count(b"warning: damaged message %d moved to queue/corrupt/%d." % (n, n)) == 1
        [aside] = list((qdir / "corrupt").iterdir())
        assert (aside / "todo").read_bytes() == (how if isinstance(how, bytes) else b"")
        assert (aside / "mess").exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_a_damaged_todo_goes_to_corrupt_and_its_copy_can_be_queued_again(procs, tree, mailbox):
    qdir = tree / "queue"
    n = plant(qdir, b"u1\0p1\0Tjoe@test.example\0")
    proc, log = start_send(procs, tree)
    wait_for(log, b"warning: no sender record in todo/%d; message set aside\n" % n)
    wait_for(log, b"warning: damaged message %d moved to queue/corrupt/" % n)
    [aside] = list((qdir / "corrupt").iterdir())
    assert (aside / "why").read_text() == "no sender record in todo/%d; message set aside\n" % n
    wait_for(log, b"status:")  # qmail-clean removes todo/N, then mess/N
    deadline = time.time() + 10
    while (os.path.lexists(qdir / "todo" / str(n)) or os.path.lexists(qdir / "mess" / str(n % 23) / str(n))) \
            and time.time() < deadline:
        time.sleep(0.02)
    assert not os.path.lexists(qdir / "todo" / str(n))
    assert queue_message(tree, (aside / "mess").read_bytes(), GOOD) == 0  # the administrator's repair
    wait_for(log, b"end msg ", count=1)
    assert len(list((mailbox / "Maildir" / "new").iterdir())) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_an_info_without_sender_is_logged_once_and_not_retried(procs, tree, mailbox):
    qdir = tree / "queue"
    (n,) = make_backlog(qdir, 1, preprocessed=True)
    (qdir / "info" / str(n % 23) / str(n)).write_bytes(b"")  # what an F-less todo/N used to leave
    (qdir / "remote" / str(n % 23) / str(n)).write_bytes(b"Tfar@b.example\0")  # both channels meet it
    proc, log = start_send(procs, tree)
    warning = b"warning: no sender record in info/%d/%d; message set aside until qmail-send restarts\n" % (n % 23, n)
    wait_for(log, warning)
    pull_and_deliver(tree, log, mailbox, proc, 3)
    data = log.read_bytes()
    assert data.count(warning) == 1 and b"trouble opening" not in data, data.decode(errors="replace")
    moved = b"warning: damaged message %d moved to queue/corrupt/%d." % (n, n)
    assert data.count(moved) == 1
    assert b": msg %d to " % n not in data[:data.index(moved)]  # no delivery started for it (then n is free)
    [aside] = list((qdir / "corrupt").iterdir())
    assert {p.name for p in aside.iterdir()} == {"why", "mess", "info", "local", "remote"}
    assert not (qdir / "local" / str(n % 23) / str(n)).exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
