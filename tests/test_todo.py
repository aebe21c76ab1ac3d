"""qmail-send's todo preprocessing on a real queue tree fed by the installed qmail-queue (qmail-send(8), the todo
scan and damaged messages)."""

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.queue import envelope
from pyqmail.lib.send import todo
from pyqmail.lib.config.control import scan_ulong
from pyqmail.lib.send.rewrite import Rewriter
from conftest import queue_message
from test_envelope import todo_record

REWRITER = Rewriter(b"test.example", [b"test.example"], [b"relay.example"], [b"virt.example:vprep"])
UID = os.getuid()


def preprocess_many(ids, rewriter, queue=".", fsync_all=todo.fsync_each):
    """Preprocess several todo entries as qmail-send's todo scan does, their fsyncs handed to fsync_all together;
    return {N: todo.Result}. todo/N and intd/N are left alone."""
    results, unwritten = {}, []
    for n in ids:
        r = todo.prepare(n, rewriter, queue)
        if isinstance(r, todo.Unwritten):
            unwritten.append(r)
        else:
            results[n] = r
    results.update(todo.write_files(unwritten, queue, fsync_all))
    return results


def preprocess(n, rewriter, queue="."):
    """Preprocess todo/N in the queue directory as qmail-send does; todo/N and intd/N are left alone."""
    return preprocess_many([n], rewriter, queue)[n]


def queue_one(tree, message, sender, recipients):
    """Queue a message with the real qmail-queue; return (n, qp)."""
    assert queue_message(tree, message, envelope.encode(sender, recipients)) == 0
    [n] = [int(p.name) for p in (Path(tree) / "queue" / "todo").iterdir()]
    qp = int(re.match(rb"Received: \(qmail (\d+) ", split(tree, "mess", n).read_bytes()).group(1))
    return n, qp


def split(tree, directory, n):
    """Path of message n in a split queue directory."""
    return Path(tree) / "queue" / directory / str(n % 23) / str(n)


def test_preprocess_writes_info_local_remote(tree):
    message = b"Subject: hi\n\nbody\n"
    n, qp = queue_one(tree, message, b"joe@a.example",
                      [b"me@test.example", b"far@b.example", b"x@virt.example", b"bare", b"u%z.example@relay.example"])
    size = split(tree, "mess", n).stat().st_size
    result = preprocess(n, REWRITER, str(Path(tree) / "queue"))
    assert result == todo.Result(True, [
        b"new msg %d\n" % n,
        b"info msg %d: bytes %d from <joe@a.example> qp %d uid %d\n" % (n, size, qp, UID),
    ], ("local", "remote"))
    assert split(tree, "info", n).read_bytes() == b"Fjoe@a.example\0"
    assert split(tree, "local", n).read_bytes() == \
        b"Tme@test.example\0Tvprep-x@virt.example\0Tbare@test.example\0"
    assert split(tree, "remote", n).read_bytes() == b"Tfar@b.example\0Tu@z.example\0"
    for d in ("info", "local", "remote"):
        assert split(tree, d, n).stat().st_mode & 0o777 == 0o600
    # qmail-clean's job, not ours
    assert (Path(tree) / "queue" / "todo" / str(n)).exists()
    assert (Path(tree) / "queue" / "intd" / str(n)).exists()
    assert not (Path(tree) / "queue" / "bounce" / str(n)).exists()


def test_only_remote_and_no_recipients(tree):
    q = str(Path(tree) / "queue")
    n, qp = queue_one(tree, b"x\n", b"", [b"far@b.example"])
    assert preprocess(n, REWRITER, q).channels == ("remote",)
    assert not split(tree, "local", n).exists()
    assert split(tree, "info", n).read_bytes() == b"F\0"
    os.unlink(Path(q) / "todo" / str(n))
    m, _ = queue_one(tree, b"y\n", b"s@a", [])
    result = preprocess(m, REWRITER, q)
    assert result.ok and result.channels == ()
    assert not split(tree, "local", m).exists() and not split(tree, "remote", m).exists()


def test_stale_files_are_replaced_while_todo_exists(tree):
    q = str(Path(tree) / "queue")
    n, _ = queue_one(tree, b"x\n", b"s@a", [b"me@test.example"])
    for d, junk in (("info", b"Fold\0"), ("local", b"Dold\0"), ("remote", b"Tstale@x\0")):
        split(tree, d, n).write_bytes(junk)
    assert todo.schedule_at_start(n, q).state == "skip"   # todo/N exists: do not trust them
    result = preprocess(n, REWRITER, q)
    assert result.ok and result.channels == ("local",)
    assert split(tree, "info", n).read_bytes() == b"Fs@a\0"
    assert split(tree, "local", n).read_bytes() == b"Tme@test.example\0"
    assert not split(tree, "remote", n).exists()
    # preprocessing twice (a crash before qmail-clean removed todo/N) gives the same files
    assert preprocess(n, REWRITER, q) == result
    assert split(tree, "local", n).read_bytes() == b"Tme@test.example\0"


def test_schedule_at_start(tree):
    q = str(Path(tree) / "queue")
    n, _ = queue_one(tree, b"x\n", b"s@a", [b"me@test.example", b"far@b.example"])
    assert todo.schedule_at_start(n, q) == todo.Start("skip", {}, [])  # no info/N yet
    preprocess(n, REWRITER, q)
    os.unlink(Path(q) / "todo" / str(n))  # as qmail-clean would
    os.utime(split(tree, "local", n), (1000, 1000))
    os.utime(split(tree, "remote", n), (2000, 2000))
    assert todo.schedule_at_start(n, q) == todo.Start("chan", {"local": 1000, "remote": 2000}, [])
    split(tree, "local", n).unlink()
    split(tree, "remote", n).unlink()
    assert todo.schedule_at_start(n, q) == todo.Start("done", {}, [])


def test_failures_are_logged_as_qmail_does(tree):
    q = str(Path(tree) / "queue")
    assert preprocess(999, REWRITER, q) == todo.Result(False, [b"warning: unable to open todo/999\n"], ())
    n, _ = queue_one(tree, b"x\n", b"s@a", [b"me@test.example"])
    os.rename(split(tree, "mess", n), Path(q) / "saved")
    assert preprocess(n, REWRITER, q) == todo.Result(
        False, [b"warning: unable to stat mess/%d/%d\n" % (n % 23, n)], ())
    os.rename(Path(q) / "saved", split(tree, "mess", n))
    (Path(q) / "todo" / str(n)).unlink()
    (Path(q) / "todo" / str(n)).write_bytes(b"u1\0p2\0Fs@a\0Tme@test.example\0Xodd\0Tfar@b\0")
    result = preprocess(n, REWRITER, q)
    assert not result.ok
    assert result.log[0] == b"new msg %d\n" % n
    assert result.log[-1] == b"warning: unknown record type in todo/%d\n" % n


def test_unlink_failure_is_logged(tree):
    q = str(Path(tree) / "queue")
    n, _ = queue_one(tree, b"x\n", b"s@a", [b"me@test.example"])
    split(tree, "local", n).mkdir()  # unlink of a directory fails with EISDIR
    assert preprocess(n, REWRITER, q) == todo.Result(
        False, [b"warning: unable to unlink local/%d/%d\n" % (n % 23, n)], ())
    split(tree, "local", n).rmdir()


ADDR = st.binary(min_size=0, max_size=20).filter(lambda b: b"\0" not in b)


@given(st.integers(0, 2 ** 31), st.integers(0, 2 ** 31), ADDR, st.lists(ADDR, max_size=6))
def test_plan_of_qmail_queue_records(uid, pid, sender, recipients):
    data = todo_record(uid, pid, sender, recipients)
    p = todo.plan(7, data, 99, REWRITER)
    assert p.failure is None
    assert p.info == b"F" + sender + b"\0"
    assert len(p.log) == 1 and p.log[0].endswith(b" qp %d uid %d\n" % (pid, uid))
    expected = {}
    for r in recipients:
        channel, addr = REWRITER.rewrite(r)
        expected[channel] = expected.get(channel, b"") + b"T" + addr + b"\0"
    assert p.chan == expected
    # a record cut before its NUL is ignored, as qmail's getln without a match
    assert todo.plan(7, data + b"Tcut", 99, REWRITER) == p


@pytest.mark.parametrize("data", [b"\0", b"Fs\0\0", b"Fs\0Ta@b\0Dx\0"])
def test_plan_rejects_unknown_and_empty_records(data):
    assert todo.plan(7, data, 1, REWRITER).failure == b"warning: unknown record type in todo/7\n"


@pytest.mark.parametrize("value, number", [(b"123", 123), (b"12x3", 12), (b"", 0), (b"x", 0)])
def test_scan_ulong(value, number):
    assert scan_ulong(value, 0) == number


def test_a_batch_hands_every_file_to_one_fsync_call_and_a_failed_fsync_fails_only_its_message(tree):
    q = str(Path(tree) / "queue")
    ids = []
    for i in range(3):
        n, _ = queue_one(tree, b"Subject: %d\n\nbody\n" % i, b"joe@a.example", [b"me@test.example", b"far@b.example"])
        os.rename(Path(q) / "todo" / str(n), Path(q) / ("todo-%d" % n))  # queue_one expects one todo entry
        ids.append(n)
    for n in ids:
        os.rename(Path(q) / ("todo-%d" % n), Path(q) / "todo" / str(n))
    calls = []

    def fsync_all(fds):
        """Record the call; the second message's local file cannot be fsynced."""
        calls.append(list(fds))
        for fd in fds:
            os.fsync(fd)
        return {fds[4]}

    results = preprocess_many(ids, REWRITER, q, fsync_all)
    assert len(calls) == 1 and len(calls[0]) == 9  # info, local and remote of all three, at once
    assert [results[n].ok for n in ids] == [True, False, True]
    assert results[ids[1]].log[-1] == b"warning: trouble fsyncing local/%d/%d\n" % (ids[1] % 23, ids[1])
    assert results[ids[0]] == preprocess(ids[0], REWRITER, q)  # the same as one at a time
    for fd in calls[0]:
        with pytest.raises(OSError):
            os.fstat(fd)  # every descriptor closed
