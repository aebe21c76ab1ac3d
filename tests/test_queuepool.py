"""The file pool: qmail-clean parks finished queue files in pid/, qmail-queue reuses them (lib/queuepool)."""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import program, qenv, queue_message, queued
from pyqmail.lib import queuepool


def clean(tree, commands):
    """Run the real qmail-clean with commands on fd 0; return its answers."""
    done = subprocess.run([program("qmail-clean")], input=commands, stdout=subprocess.PIPE, env=qenv(tree),
                          timeout=30)
    assert done.returncode == 0
    return done.stdout


def finish(tree, n):
    """Have qmail-clean remove message n as qmail-send does at the end: todo/N, then mess/N."""
    assert clean(tree, b"todo/%d\0foop/%d\0" % (n, n)) == b"++"


def pool(tree):
    """Return {pool name: inode} for the files parked in pid/."""
    pid = Path(tree) / "queue" / "pid"
    return {p.name: p.stat().st_ino for p in pid.iterdir() if queuepool.is_pooled(p.name)}


def test_finished_files_are_parked_and_reused_with_no_stale_bytes(tree):
    long_message = b"Subject: long\n\n" + b"x" * 9000 + b"\n"
    assert queue_message(tree, long_message, b"Fa@b\0Tc@d\0Te@f\0Tg@h\0\0") == 0
    [(n, (mess, todo))] = queued(tree).items()
    todo_inode = (Path(tree) / "queue" / "todo" / str(n)).stat().st_ino
    finish(tree, n)
    assert pool(tree) == {"pool.mess.0": n, "pool.intd.0": todo_inode}
    assert not (Path(tree) / "queue" / "mess" / str(n % 23) / str(n)).exists()
    assert not (Path(tree) / "queue" / "todo" / str(n)).exists()

    assert queue_message(tree, b"Subject: short\n\nhi\n", b"Fs@t\0Tr@u\0\0") == 0
    [(m, (mess2, todo2))] = queued(tree).items()
    assert m == n  # the message number is the reused inode's
    assert mess2.split(b"\n", 1)[1] == b"Subject: short\n\nhi\n"  # the Received line, then exactly the message
    assert todo2.endswith(b"\0Fs@t\0Tr@u\0")
    assert (Path(tree) / "queue" / "todo" / str(m)).stat().st_ino == todo_inode
    assert pool(tree) == {}
    assert [p.name for p in (Path(tree) / "queue" / "pid").iterdir()] == []


def test_a_file_with_another_name_or_a_big_one_is_unlinked_not_parked(tree):
    q = Path(tree) / "queue"
    assert queue_message(tree, b"Subject: a\n\nbody\n", b"Fa@b\0Tc@d\0\0") == 0
    [n] = queued(tree)
    os.link(q / "mess" / str(n % 23) / str(n), q / "pid" / "1.2.3")  # a dead injection's pid file, say
    finish(tree, n)
    assert set(pool(tree)) == {"pool.intd.0"}
    assert (q / "pid" / "1.2.3").stat().st_nlink == 1  # mess/N's name went, the inode was not pooled
    big = b"Subject: big\n\n" + b"y" * (queuepool.LARGEST + 10) + b"\n"
    assert queue_message(tree, big, b"Fa@b\0Tc@d\0\0") == 0
    [m] = queued(tree)
    finish(tree, m)
    assert set(pool(tree)) == {"pool.intd.0"}  # taken and given back; the big mess file was unlinked


def test_the_giver_fills_the_lowest_free_slot_and_the_taker_empties_the_highest(tree):
    for i in range(3):
        assert queue_message(tree, b"Subject: %d\n\nbody\n" % i, b"Fa@b\0Tc@d\0\0") == 0
    numbers = sorted(queued(tree))
    for n in numbers:
        finish(tree, n)
    assert sorted(k for k in pool(tree) if k.startswith("pool.mess.")) == ["pool.mess.0", "pool.mess.1",
                                                                           "pool.mess.2"]
    top = pool(tree)["pool.mess.2"]
    assert queue_message(tree, b"Subject: again\n\nbody\n", b"Fa@b\0Tc@d\0\0") == 0
    assert list(queued(tree)) == [top]
    assert "pool.mess.2" not in pool(tree) and "pool.mess.1" in pool(tree)


@pytest.mark.parametrize("kind", ["mess", "intd"])
def test_a_pool_slot_that_is_not_a_plain_file_is_removed_and_a_file_created(tree, kind):
    q = Path(tree) / "queue"
    target = q / "pid" / "elsewhere"
    target.write_bytes(b"must not change\n")
    os.symlink(target, q / "pid" / ("pool.%s.0" % kind))
    assert queue_message(tree, b"Subject: s\n\nbody\n", b"Fa@b\0Tc@d\0\0") == 0
    [(n, (mess, todo))] = queued(tree).items()
    assert mess.endswith(b"Subject: s\n\nbody\n") and todo.endswith(b"\0Fa@b\0Tc@d\0")
    assert target.read_bytes() == b"must not change\n"
    assert sorted(p.name for p in (q / "pid").iterdir()) == ["elsewhere"]


def test_idle_pool_files_go_after_36_hours_like_pid_files(tree):
    assert queue_message(tree, b"Subject: a\n\nbody\n", b"Fa@b\0Tc@d\0\0") == 0
    [n] = queued(tree)
    finish(tree, n)
    pid = Path(tree) / "queue" / "pid"
    past = os.stat(pid / "pool.mess.0").st_atime - 129600 - 10
    os.utime(pid / "pool.mess.0", (past, past))
    assert clean(tree, b"") == b""
    assert set(pool(tree)) == {"pool.intd.0"}


def test_a_taken_pool_file_gets_a_fresh_access_time(tree):
    """The 36-hour rule must not remove a running injection's pid file because its inode is old."""
    assert queue_message(tree, b"Subject: a\n\nbody\n", b"Fa@b\0Tc@d\0\0") == 0
    [n] = queued(tree)
    finish(tree, n)
    pid = Path(tree) / "queue" / "pid"
    os.utime(pid / "pool.mess.0", (1000, 1000))
    assert queue_message(tree, b"Subject: b\n\nbody\n", b"Fa@b\0Tc@d\0\0") == 0
    [m] = queued(tree)
    mess = Path(tree) / "queue" / "mess" / str(m % 23) / str(m)
    assert m == n and mess.stat().st_atime > 1000 + 129600


def test_every_31st_command_sweeps_pid_files_but_leaves_the_pool_for_the_hourly_sweep(tree):
    pid = Path(tree) / "queue" / "pid"
    p = subprocess.Popen([program("qmail-clean")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=qenv(tree))
    try:
        p.stdin.write(b"todo/1\0")
        p.stdin.flush()
        assert p.stdout.read(1) == b"+"  # started: its start-up sweep is over
        for name in ("9.9.1", "pool.mess.0"):
            (pid / name).write_bytes(b"")
            os.utime(pid / name, (1000, 1000))
        p.stdin.write(b"todo/1\0" * 31)
        p.stdin.flush()
        assert p.stdout.read(31) == b"+" * 31
    finally:
        p.stdin.close()
        assert p.wait(10) == 0
        p.stdout.close()
    assert sorted(q.name for q in pid.iterdir()) == ["pool.mess.0"]


def test_one_giver_keeps_the_pool_a_stack_while_takers_drain_it(tmp_path, monkeypatch):
    """In one process, as qmail-clean gives and qmail-queue takes: fills go just above the full slots."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pid").mkdir()
    monkeypatch.setattr(queuepool, "_next_free", {})

    def full():
        return sorted(int(p.name.rsplit(".", 1)[1]) for p in (tmp_path / "pid").iterdir())

    def give(i):
        (tmp_path / ("f%d" % i)).write_bytes(b"x")
        return queuepool.give("mess", "f%d" % i)

    assert all(give(i) for i in range(10)) and full() == list(range(10))
    for n in range(7):  # takers drain more than TRIES slots below the giver's last fill
        assert queuepool.take("mess", "t%d" % n)
    assert full() == [0, 1, 2]
    assert give(10) and full() == [0, 1, 2, 3]
    assert queuepool.take("mess", "t7") and give(11) and give(12) and full() == [0, 1, 2, 3, 4]
    for n in range(5):
        assert queuepool.take("mess", "u%d" % n)
    assert full() == [] and not queuepool.take("mess", "u5")
    assert give(13) and full() == [0]
    monkeypatch.setattr(queuepool, "SLOTS", 2)
    assert give(14) and not give(15) and full() == [0, 1]


def test_a_dead_injections_intd_file_is_replaced_by_a_pooled_one(tree):
    """qmail-queue(8): with the pool, a leftover intd/N is replaced (qmail's exclusive create exits 65)."""
    assert queue_message(tree, b"Subject: a\n\nbody\n", b"Fa@b\0Tc@d\0\0") == 0
    [n] = queued(tree)
    finish(tree, n)
    intd = Path(tree) / "queue" / "intd" / str(n)  # the next message is number n: pool.mess.0's inode
    intd.write_bytes(b"u0\0p1\0Fstale@x\0Tstale@y\0")
    assert queue_message(tree, b"Subject: b\n\nbody\n", b"Fs@t\0Tr@u\0\0") == 0
    [(m, (mess, todo))] = queued(tree).items()
    assert m == n and todo.endswith(b"\0Fs@t\0Tr@u\0") and b"stale" not in todo
