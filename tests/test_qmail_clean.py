"""qmail-clean driven over pipes as qmail-send drives it, on a really queued message."""

import os
import subprocess
import time

from conftest import program, qenv, queued

OSSIFIED = 129600


def queue_one(tree):
    """Queue a message with the real qmail-queue; return its number."""
    r, w = os.pipe()
    os.write(w, b"Fs@example.org\0Tjoe@test.example\0\0")
    os.close(w)
    assert subprocess.run([program("qmail-queue")], input=b"Subject: x\n\nbody\n", stdout=r,
                          env=qenv(tree)).returncode == 0
    os.close(r)
    return max(queued(tree))


def clean(tree, commands):
    """Run qmail-clean with commands on fd 0; return (exit code, its answers)."""
    done = subprocess.run([program("qmail-clean")], input=commands, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=qenv(tree), timeout=30)
    return done.returncode, done.stdout


def test_todo_then_foop_remove_a_message_in_qmails_order(tree):
    n = queue_one(tree)
    q = tree / "queue"
    (q / "intd" / str(n)).write_bytes(b"")  # as if qmail-queue died between todo and unlinking intd
    mess = q / "mess" / str(n % 23) / str(n)
    assert clean(tree, b"todo/%d\0" % n) == (0, b"+")
    assert not (q / "intd" / str(n)).exists() and not (q / "todo" / str(n)).exists()
    assert mess.exists()
    assert clean(tree, b"foop/%d\0foop/%d\0" % (n, n)) == (0, b"++")  # already gone is fine
    assert not mess.exists()


def test_malformed_commands_get_one_x_each(tree):
    cmds = [b"todo/", b"foop/12a", b"mess/1", b"todo12345", b"x", b"foop/" + b"1" * 95, b"todo/" + b"9" * 5000]
    assert clean(tree, b"".join(c + b"\0" for c in cmds)) == (0, b"x" * len(cmds))


def test_an_unremovable_file_answers_bang(tree):
    (tree / "queue" / "intd" / "77").mkdir()
    (tree / "queue" / "intd" / "77" / "f").write_bytes(b"")
    assert clean(tree, b"todo/77\0foop/78\0") == (0, b"!+")


def test_old_pid_files_are_removed_at_start(tree):
    pid = tree / "queue" / "pid"
    old, new = pid / "1.2.1", pid / "3.4.1"
    old.write_bytes(b"")
    new.write_bytes(b"")
    past = time.time() - OSSIFIED - 10
    os.utime(old, (past, past))
    recent = time.time() - OSSIFIED + 3600
    os.utime(new, (recent, recent))
    assert clean(tree, b"") == (0, b"")
    assert not old.exists() and new.exists()


def test_a_command_without_nul_is_ignored_at_eof(tree):
    n = queue_one(tree)
    assert clean(tree, b"todo/%d" % n) == (0, b"")
    assert (tree / "queue" / "todo" / str(n)).exists()


def answer(p, command):
    """Write one command to a running qmail-clean and return its one-byte answer."""
    p.stdin.write(command)
    p.stdin.flush()
    return p.stdout.read(1)


def test_foop_skips_the_intd_unlink_its_own_todo_did(procs, tree):
    n = queue_one(tree)
    q = tree / "queue"
    intd, mess = q / "intd" / str(n), q / "mess" / str(n % 23) / str(n)
    p = procs.start([program("qmail-clean")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=qenv(tree))
    assert answer(p, b"todo/%d\0" % n) == b"+"
    assert not intd.exists() and not (q / "todo" / str(n)).exists()
    intd.write_bytes(b"")  # planted by hand meanwhile: qmail-clean(8) says why none can appear otherwise
    assert answer(p, b"foop/%d\0" % n) == b"+"
    assert intd.exists() and not mess.exists()  # intd/N was not unlinked a second time
    p.stdin.close()
    assert p.wait(30) == 0
    # a foop/N this process has no todo/N for (another run's) unlinks intd/N as qmail's does
    m = queue_one(tree)
    (q / "intd" / str(m)).write_bytes(b"")
    (q / "todo" / str(m)).unlink()
    assert clean(tree, b"foop/%d\0" % m) == (0, b"+")
    assert not (q / "intd" / str(m)).exists() and not (q / "mess" / str(m % 23) / str(m)).exists()


def test_unlinks_go_to_threads_only_while_they_are_slow(monkeypatch):
    from pyqmail.commands import qmail_clean
    calls = []

    def slow_removed(path):
        calls.append(path)
        time.sleep(0.002)
        return path != "bad"
    monkeypatch.setattr(qmail_clean, "removed", slow_removed)
    u = qmail_clean.Unlinks()
    assert u.run(["a", "bad"]) == [True, False] and u.pool is None  # the first group in turn, timed: slow
    assert u.slow
    assert u.run(["c", "d", "bad"]) == [True, True, False] and u.pool is not None  # then in threads
    for _ in range(qmail_clean.PROBE_EVERY - 1):
        u.run(["e", "f"])
    monkeypatch.setattr(qmail_clean, "removed", lambda path: True)
    assert u.run(["g", "h"]) == [True, True] and not u.slow  # the 65th in turn again: quick now
    u.pool.shutdown()
    u.pool = None
    assert u.run(["i", "j"]) == [True, True] and u.pool is None
