"""The file pool: qmail-clean parks finished queue files in pid/, qmail-queue reuses them (lib/queue/queuepool)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import program, qenv, queue_message, queued
from pyqmail.lib.queue import queuepool


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


def test_the_giver_and_the_taker_look_at_slot_0_first_then_at_random_slots(tree):
    for i in range(3):
        assert queue_message(tree, b"Subject: %d\n\nbody\n" % i, b"Fa@b\0Tc@d\0\0") == 0
    numbers = sorted(queued(tree))
    for n in numbers:
        finish(tree, n)
    parked = pool(tree)
    mess = sorted(k for k in parked if k.startswith("pool.mess."))
    assert len(mess) == 3 and "pool.mess.0" in mess
    assert all(0 <= int(k.rsplit(".", 1)[1]) < queuepool.SLOTS for k in mess)
    assert sorted(parked[k] for k in mess) == numbers  # the finished mess files themselves
    assert queue_message(tree, b"Subject: again\n\nbody\n", b"Fa@b\0Tc@d\0\0") == 0
    assert list(queued(tree)) == [parked["pool.mess.0"]]
    assert sorted(k for k in pool(tree) if k.startswith("pool.mess.")) == [k for k in mess if k != "pool.mess.0"]


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


def slots_in(directory):
    """Return the numbers of the full slots of pool.mess in directory/pid, sorted."""
    return sorted(int(p.name.rsplit(".", 1)[1]) for p in (directory / "pid").iterdir())


def test_an_empty_slot_0_hides_no_file_and_a_full_slot_0_no_free_slot(tmp_path, monkeypatch):
    """The ordered pool's failure: racing takers emptied slot 0, and the full pool looked empty."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pid").mkdir()
    for k in range(1, queuepool.SLOTS):
        (tmp_path / "pid" / ("pool.mess.%d" % k)).write_bytes(b"x")
    assert queuepool.take("mess", "taken") and len(slots_in(tmp_path)) == queuepool.SLOTS - 2
    assert Path("taken").read_bytes() == b"x"
    Path("a").write_bytes(b"y")
    assert queuepool.give("mess", "a") and (tmp_path / "pid" / "pool.mess.0").read_bytes() == b"y"
    [free] = set(range(queuepool.SLOTS)) - set(slots_in(tmp_path))  # the slot taken
    (tmp_path / "pid" / ("pool.mess.%d" % free)).write_bytes(b"x")
    Path("c").write_bytes(b"z")
    assert not queuepool.give("mess", "c") and Path("c").exists()  # full: the caller unlinks it
    for n in range(queuepool.SLOTS):
        (tmp_path / "pid" / ("pool.mess.%d" % n)).unlink()
    assert not queuepool.take("mess", "none") and not Path("none").exists()


RACER = """
import os, sys
from pyqmail.lib.queue import queuepool
os.chdir(sys.argv[1])
role, count = sys.argv[2], int(sys.argv[3])
got = []
if role == "give":
    for i in range(count):
        name = "given.%d" % i
        with open(name, "wb") as f:
            f.write(b"%d\\n" % i)
        if not queuepool.give("mess", name):
            os.unlink(name)
            got.append("unlinked %d" % i)
    open("done", "w").close()
else:
    i = 0
    while not os.path.exists("done") or i % 100:  # until the giver is done, and a last 100 tries
        i += 1
        name = "taken.%s.%d" % (role, i)
        if queuepool.take("mess", name):
            with open(name, "rb") as f:
                got.append("took " + f.read().decode().strip())
            os.unlink(name)
print("\\n".join(got))
"""


def test_racing_takers_and_the_giver_never_share_or_lose_a_file(tmp_path):
    """One giver (qmail-clean) and four takers (qmail-queue runs) at once: every file given is unlinked
    by the giver, taken by exactly one taker, or still in the pool."""
    (tmp_path / "pid").mkdir()
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), role, "1500"],
                               stdout=subprocess.PIPE, text=True)
              for role in ("give", "t1", "t2", "t3", "t4")]
    outputs = [p.communicate(timeout=120)[0].split() for p in racers]
    assert all(p.returncode == 0 for p in racers)
    unlinked = [int(n) for word, n in zip(outputs[0][::2], outputs[0][1::2]) if word == "unlinked"]
    taken = [int(n) for out in outputs[1:] for word, n in zip(out[::2], out[1::2]) if word == "took"]
    left = [int((tmp_path / "pid" / ("pool.mess.%d" % k)).read_bytes()) for k in slots_in(tmp_path)]
    assert sorted(unlinked + taken + left) == list(range(1500))
    assert len(taken) > 1000  # the pool works: most files given are taken again


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


def test_the_giver_rests_after_a_full_pool_then_looks_again(tmp_path, monkeypatch):
    """qmail-clean draining with nothing injected: after one give finds the pool full, the next FULL_REST
    files are not offered even if a slot has come free meanwhile; the one after is pooled again."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pid").mkdir()
    for k in range(queuepool.SLOTS):
        (tmp_path / "pid" / ("pool.mess.%d" % k)).write_bytes(b"x")
    giver = queuepool.Giver()
    Path("full").write_bytes(b"f")
    assert giver.give("mess", "full") is False and Path("full").exists()
    (tmp_path / "pid" / "pool.mess.0").unlink()  # a taker took slot 0
    for i in range(queuepool.FULL_REST):
        Path("r%d" % i).write_bytes(b"r")
        assert giver.give("mess", "r%d" % i) is False and Path("r%d" % i).exists()
    assert giver.give("intd", "r0") is True  # the other kind's pool does not rest
    Path("again").write_bytes(b"a")
    assert giver.give("mess", "again") is True and (tmp_path / "pid" / "pool.mess.0").read_bytes() == b"a"


def test_a_file_that_may_not_be_pooled_does_not_make_the_giver_rest(tmp_path, monkeypatch):
    """A hard-linked or oversized file is refused (None) without the pool being taken for full."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pid").mkdir()
    giver = queuepool.Giver()
    Path("big").write_bytes(b"b" * (queuepool.LARGEST + 1))
    Path("linked").write_bytes(b"l")
    os.link("linked", "other")
    assert giver.give("mess", "big") is None and giver.give("mess", "linked") is None
    Path("fits").write_bytes(b"f")
    assert giver.give("mess", "fits") is True
