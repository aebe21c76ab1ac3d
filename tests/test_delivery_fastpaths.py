"""The delivery side's short cuts (issue 23) give what the long ways gave: the Delivered-To search in the first
read, qmail-local's bytes operands from a worker, the lazily made From_ line and program environment, a worker's
idle limit as its socket's receive timeout, and qmail-send's starts of one message's deliveries in one write."""

import os
import select
import signal
import socket
import sys
import tempfile
import time

from hypothesis import given, settings, strategies as st

from pyqmail.commands import qmail_local
from pyqmail.lib.local import delivery_env, msgfd
from pyqmail.lib.spawn import localworkers

from test_qmail_send import start_send, wait_for

WANTED = b"Delivered-To: joe@test.example\n"
line = st.one_of(st.just(WANTED), st.just(WANTED[:-1]), st.just(b"X" + WANTED), st.just(b"\n"),
                 st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"") + b"\n"))


def search_both(data, wanted):
    """Return (header_has_line, the line-by-line search) on data in a file."""
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        fd = f.fileno()
        fast = msgfd.header_has_line(fd, wanted)
        msgfd.rewind(fd)
        return fast, msgfd._header_has_line(fd, wanted)


def stop_worker(w):
    """Kill a test's worker if it still runs, reap it, and close the spawner's end of its socket."""
    try:
        os.kill(w.pid, signal.SIGKILL)
        os.waitpid(w.pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    w.sock.close()


@settings(max_examples=300)
@given(st.lists(line, max_size=8), st.binary(max_size=60), st.booleans())
def test_the_first_read_search_agrees_with_the_line_by_line_one(lines, tail, final_newline):
    data = b"".join(lines) + tail + (b"\n" if final_newline else b"")
    fast, slow = search_both(data, WANTED)
    assert fast == slow


def test_the_search_past_the_first_read_and_in_the_body():
    long_header = b"X-Long: " + b"a" * (msgfd.CHUNK + 10) + b"\n"
    assert search_both(long_header + WANTED + b"\nbody\n", WANTED) == (True, True)
    assert search_both(b"Subject: x\n\n" + WANTED, WANTED) == (False, False)  # in the body: no loop
    assert search_both(b"\n" + WANTED, WANTED) == (False, False)
    assert search_both(WANTED + b"\n", WANTED) == (True, True)
    assert search_both(b"", WANTED) == (False, False)
    assert search_both(b"\n", b"\n") == (True, True)  # a wanted line that is the empty line: the long way
    assert search_both(long_header + b"\n" + WANTED, WANTED) == (False, False)  # past 64 KB, in the body
    # byte for byte: another case, a folded line, a CR before the LF, a longer address are other lines
    for other in (WANTED.lower(), b" " + WANTED, WANTED[:-1] + b"\r\n", WANTED[:-1] + b"x\n"):
        assert search_both(b"Subject: x\n" + other + b"\nbody\n", WANTED) == (False, False)
    assert search_both(b"X: y\n  folded\n" + WANTED + b"\n", WANTED) == (True, True)


def test_qmail_local_takes_a_workers_bytes_operands_as_they_are():
    ops = [b"joe", b"/home/j\xffoe", b"joe", b"", b"", b"test.example", b"s@x", b"./Maildir/"]
    assert qmail_local.parse_args([b"--"] + ops) == (True, ops)
    assert qmail_local.parse_args(["--"] + [os.fsdecode(o) for o in ops]) == (True, ops)
    assert qmail_local.parse_args(["-n"] + [os.fsdecode(o) for o in ops]) == (False, ops)


def test_the_from_line_and_program_environment_are_as_before_when_asked():
    d = delivery_env.Delivery(b"joe", b"/home/joe", b"joe-x-y-z", b"x-y-z", b"a.b.c.example", b"s@x", 86400.5)
    assert d.ufline == delivery_env.ufline(b"s@x", 86400.5) == b"From s@x Fri Jan 02 00:00:00 1970\n"
    env = d.program_env({b"PATH": b"/bin", b"DEFAULT": b"gone"}, b"y-z", b"s@x")
    assert env[b"UFLINE"] == d.ufline and env[b"DTLINE"] == b"Delivered-To: joe-x-y-z@a.b.c.example\n"
    assert (env[b"EXT2"], env[b"EXT3"], env[b"EXT4"]) == (b"y-z", b"z", b"")
    assert (env[b"HOST2"], env[b"HOST3"], env[b"HOST4"]) == (b"a.b.c", b"a.b", b"a")
    assert env[b"DEFAULT"] == b"y-z" and env[b"PATH"] == b"/bin" and env[b"NEWSENDER"] == b"s@x"


def test_an_idle_worker_exits_after_its_receive_timeout_and_serves_until_then(monkeypatch):
    monkeypatch.setattr(localworkers, "MAX_IDLE", 1)
    workers = localworkers.LocalWorkers(lambda uid, gid: 0, lambda argv, extra: 7 if argv == [b"a", b"b"] else 1)
    w = workers.fork((os.getuid(), os.getgid()))
    try:
        r, wr = os.pipe()
        assert workers.send(w, [b"a", b"b"], r, wr)
        os.close(r)
        os.close(wr)
        w.sock.settimeout(10)
        assert workers.answer(w) == 7 << 8
        started = time.time()
        deadline = started + 20
        while time.time() < deadline:
            pid, status = os.waitpid(w.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the idle worker did not exit")
        # the idle end is a temporary failure: a request sent as it came would be deferred (see below)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 111
        assert 0.8 <= time.time() - started < 10
    finally:
        stop_worker(w)


def test_a_request_that_meets_the_workers_idle_end_is_deferred_not_reported_delivered(monkeypatch):
    """The spawner reports a worker's delivery from the worker's exit status if it dies without answering; a
    request sent just as the receive timeout ended was never served, so that status must not read as success."""
    from pyqmail.lib.spawn import spawnproto
    from pyqmail.lib.util.exits import QLX_SYS

    def timed_out(sock, buf):
        """The receive timeout ends just as the spawner sends a request (the race, made certain)."""
        select.select([sock], [], [], 10)  # the request is there now, unread
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(localworkers, "receive", timed_out)
    served = []
    for idle_code, report in ((111, b"Z"), (QLX_SYS, b"ZTemporary failure in qmail-lspawn.\n")):
        workers = localworkers.LocalWorkers(lambda uid, gid: 0, lambda argv, extra: served.append(argv) or 0,
                                            idle_code=idle_code)
        w = workers.fork((os.getuid(), os.getgid()))
        try:
            r, wr = os.pipe()
            assert workers.send(w, [b"--", b"joe"], r, wr)  # the spawner sees an idle worker take it
            os.close(r)
            os.close(wr)
            _, status = os.waitpid(w.pid, 0)
            w.sock.settimeout(10)
            assert workers.answer(w) is None  # no answer: the spawner gives the delivery the worker's status
            assert spawnproto.local_report(status, b"") == report
        finally:
            stop_worker(w)
    assert not served


RECORDING_SPAWNER = """import os, sys
os.write(1, bytes([10]))
log = open(sys.argv[1], "ab", buffering=0)
while True:
    data = os.read(0, 65536)
    if not data:
        break
    log.write(b"%d\\n" % data.count(b"@test.example\\0"))
"""


def test_qmail_send_writes_one_messages_deliveries_to_the_spawner_in_one_write(procs, tree, world_tmp):
    from conftest import queue_message
    reads = world_tmp / "reads"
    proc, log = start_send(procs, tree, lspawn=[sys.executable, "-c", RECORDING_SPAWNER, str(reads)])
    rcpts = b"".join(b"Tu%d@test.example\0" % i for i in range(6))
    assert queue_message(tree, b"Subject: x\n\nbody\n", b"F\0" + rcpts + b"\0") == 0
    wait_for(log, b"starting delivery ", count=6)
    deadline = time.time() + 30
    while time.time() < deadline and not (reads.exists() and reads.read_bytes().strip()):
        time.sleep(0.02)
    assert reads.read_bytes().split() == [b"6"]  # the six requests came in one write (one read takes them)
    data = log.read_bytes()
    assert [data.count(b"starting delivery %d: msg " % d) for d in range(1, 7)] == [1] * 6
    assert b"status: local 6/10 remote 0/20\n" in data
    proc.send_signal(signal.SIGTERM)


def test_one_write_of_a_messages_deliveries_stops_at_concurrencylocal(procs, tree, world_tmp):
    from conftest import queue_message
    (tree / "control" / "concurrencylocal").write_text("2\n")
    reads = world_tmp / "reads"
    proc, log = start_send(procs, tree, lspawn=[sys.executable, "-c", RECORDING_SPAWNER, str(reads)])
    rcpts = b"".join(b"Tu%d@test.example\0" % i for i in range(6))
    assert queue_message(tree, b"Subject: x\n\nbody\n", b"F\0" + rcpts + b"\0") == 0
    deadline = time.time() + 30
    while time.time() < deadline and not (reads.exists() and reads.read_bytes().strip()):
        time.sleep(0.02)
    # the log lines of a step's starts are written before its requests: all of them are in the log by now
    data = log.read_bytes()
    assert reads.read_bytes().split() == [b"2"]  # the spawner never answers: no slot frees, no third start
    assert data.count(b"starting delivery ") == 2
    assert b"status: local 2/2 remote 0/20\n" in data and b"status: local 3/" not in data
    proc.send_signal(signal.SIGTERM)


SLOW_READING_SPAWNER = """import os, sys, time
from pyqmail.lib.spawn.spawnproto import RequestReader
os.write(1, bytes([120]))
flag, out = sys.argv[1], sys.argv[2]
while not os.path.exists(flag):  # not reading: qmail-send's write to this pipe stays short, the rest waits
    time.sleep(0.02)
reader, got = RequestReader(), []
while len(got) < 120:
    data = os.read(0, 65536)
    if not data:
        break
    got += reader.feed(data)
with open(out + ".tmp", "wb") as f:
    f.write(b"".join(b"%d %s\\n" % (r.delnum, r.recipient) for r in got))
os.rename(out + ".tmp", out)
while os.read(0, 65536):
    pass
"""


def test_a_steps_requests_beyond_what_the_pipe_takes_arrive_whole_and_in_order(procs, tree, world_tmp):
    from conftest import queue_message
    (tree / "control" / "concurrencylocal").write_text("120\n")
    flag, out = world_tmp / "go", world_tmp / "requests"
    proc, log = start_send(procs, tree, lspawn=[sys.executable, "-c", SLOW_READING_SPAWNER, str(flag), str(out)])
    recips = [b"u%03d" % i + b"x" * 900 + b"@test.example" for i in range(120)]  # ~115 kB of requests: > a pipe
    assert queue_message(tree, b"Subject: x\n\nbody\n", b"F\0" + b"".join(b"T" + r + b"\0" for r in recips)
                         + b"\0") == 0
    wait_for(log, b"starting delivery ", count=120)
    flag.write_bytes(b"")
    deadline = time.time() + 30
    while time.time() < deadline and not out.exists():
        time.sleep(0.02)
    assert out.read_bytes().splitlines() == [b"%d %s" % (i, r) for i, r in enumerate(recips)]
    proc.send_signal(signal.SIGTERM)
