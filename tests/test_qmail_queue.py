"""qmail-queue as a program: queue files byte for byte, exit codes, clean-up, trigger (qmail-queue(8))."""

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

from conftest import queue_message, queued

RECEIVED = re.compile(rb"Received: \(qmail (\d+) invoked by uid (\d+)\); "
                      rb"(\d{1,2}) [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000\n")


def leftovers(tree):
    """Every file under the queue's working directories (pid, mess, intd, todo)."""
    q = Path(tree) / "queue"
    return [p for d in ("pid", "mess", "intd", "todo") for p in (q / d).rglob("*") if p.is_file()]


def test_queue_files_are_qmails_bytes(tree):
    message = b"Subject: hi\n\nbody\n"
    assert queue_message(tree, message, b"Fa@b\0Tc@d\0Te@f\0\0") == 0
    [(n, (mess, todo))] = queued(tree).items()
    m = RECEIVED.match(mess)
    assert m and int(m.group(2)) == os.getuid()
    assert mess[m.end():] == message
    pid = int(m.group(1))
    assert todo == b"u%d\0p%d\0Fa@b\0Tc@d\0Te@f\0" % (os.getuid(), pid)
    messfile = Path(tree) / "queue" / "mess" / str(n % 23) / str(n)
    assert messfile.stat().st_ino == n
    intd = Path(tree) / "queue" / "intd" / str(n)
    assert intd.stat().st_ino == (Path(tree) / "queue" / "todo" / str(n)).stat().st_ino
    assert not list((Path(tree) / "queue" / "pid").iterdir())


def test_zero_recipients_and_empty_sender_are_queued(tree):
    assert queue_message(tree, b"x\n", b"F\0\0") == 0
    [(mess, todo)] = queued(tree).values()
    assert todo.endswith(b"\0F\0")


@pytest.mark.parametrize("env_bytes, code", [
    (b"Fa@b\0Tc@d\0", 54),          # no final NUL: EOF before the envelope ended
    (b"Fa@b\0Tc@d", 54),
    (b"", 54),
    (b"Xa@b\0\0", 91),               # first record is not F
    (b"Fa@b\0Xc@d\0\0", 91),         # a record that is not T
    (b"\0", 91),
    (b"F" + b"a" * 1003 + b"\0\0", 11),
    (b"Fa@b\0T" + b"c" * 1003 + b"\0\0", 11),
])
def test_bad_envelopes_queue_nothing(tree, env_bytes, code):
    assert queue_message(tree, b"Subject: x\n\nbody\n", env_bytes) == code
    assert leftovers(tree) == []


def test_address_limit_is_1002_bytes(tree):
    addr = b"c" * 1002
    assert queue_message(tree, b"x\n", b"Fa@b\0T" + addr + b"\0\0") == 0
    [(mess, todo)] = queued(tree).values()
    assert todo.endswith(b"T" + addr + b"\0")


def test_missing_home_and_queue(world_tmp, tree):
    assert queue_message(world_tmp / "nonexistent", b"x\n", b"Fa\0\0") == 61
    os.rename(Path(tree) / "queue", Path(tree) / "queue.moved")
    assert queue_message(tree, b"x\n", b"Fa\0\0") == 62


@pytest.mark.parametrize("part, code", [("pid", 63), ("intd", 65), ("todo", 66)])
def test_broken_queue_part_gives_its_code_and_cleans_up(tree, part, code):
    broken = Path(tree) / "queue" / part
    broken.rmdir()
    broken.write_bytes(b"")  # a file where the directory should be: fails even for root
    assert queue_message(tree, b"x\n", b"Fa\0Tb\0\0") == code
    broken.unlink()
    broken.mkdir()
    assert leftovers(tree) == []


def test_trigger_is_pulled(tree):
    fifo = os.open(Path(tree) / "queue" / "lock" / "trigger", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert queue_message(tree, b"x\n", b"Fa\0Tb\0\0") == 0
        assert os.read(fifo, 16) == b"\0"
    finally:
        os.close(fifo)


def test_large_message_is_intact(tree):
    message = bytes(range(256)) * 8192  # 2 MiB, every byte value
    assert queue_message(tree, message, b"Fa\0Tb\0\0") == 0
    [(mess, _)] = queued(tree).values()
    assert mess[RECEIVED.match(mess).end():] == message


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.binary(max_size=3000),
       sender=st.binary(max_size=40).filter(lambda b: b"\0" not in b),
       rcpts=st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b), max_size=4))
def test_any_message_and_envelope_round_trip(tree, message, sender, rcpts):
    for f in (Path(tree) / "queue" / "todo").iterdir():
        f.unlink()
    envelope = b"F" + sender + b"\0" + b"".join(b"T" + r + b"\0" for r in rcpts) + b"\0"
    assert queue_message(tree, message, envelope) == 0
    [(mess, todo)] = queued(tree).values()
    assert mess[RECEIVED.match(mess).end():] == message
    assert todo.split(b"\0", 2)[2] == envelope[:-1]


def test_a_directory_on_fd_0_queues_nothing_and_callers_take_it_as_temporary(tree):
    # CPython refuses a directory as stdin before our code runs (qmail-queue(8) EXIT CODES): exit 1, which
    # qmail's table does not name, so every caller must report it as a temporary failure, never as accepted
    import subprocess
    from conftest import program, qenv
    from pyqmail.lib.util.exits import qq_text
    r, w = os.pipe()
    os.write(w, b"Fme@test.example\0Tyou@test.example\0\0")
    os.close(w)
    directory = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        p = subprocess.run([program("qmail-queue")], stdin=directory, stdout=r, env=qenv(tree), stderr=subprocess.PIPE)
    finally:
        os.close(directory)
        os.close(r)
    assert p.returncode == 1 and b"is a directory" in p.stderr
    assert not queued(tree) and leftovers(tree) == []
    assert qq_text(p.returncode).startswith("Z")
