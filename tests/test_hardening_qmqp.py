"""Hardening, issue 17 point 2: QMQP recipients held compactly and bounded in number; a reused worker gets
back to its idle size. Memory is measured on real qmail-qmqpd processes (tcpserver, qmail-tcpserver)."""

import io
import os
import re
import socket
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from conftest import program, qenv, queued, tcpserver
from test_qmail_tcpserver import serve
from test_envelope import Trickle, todo_record
from test_qmqpd import assert_nothing_queued, control, K_REPLY, session
from test_qmqpd_request import parse_request
from pyqmail.lib.qmqp import qmqp
from pyqmail.lib.queue import envelope
from pyqmail.lib.tcpserver import tcppool
from pyqmail.lib.queue.envelope import EnvelopeError, Recipients
from pyqmail.lib.util.netstring import encode

MB = 1 << 20
SMALL = qmqp.encode_request(b"Subject: x\n\nhi\n", b"a@b", [b"c@d"])


def big_request(count, recipient):
    """A request of about 1 MB: count copies of one recipient."""
    return encode(encode(b"Subject: x\n\nhi\n") + encode(b"a@b") + encode(recipient) * count)


EMPTY_1MB = big_request(333333, b"")  # the reported request: 109 MB of RSS
ONE_BYTE_1MB = big_request(250000, b"x")  # 85 MB


@pytest.fixture
def qtree(tree):
    """A tree whose qmail-qmqpd answers without the error delay."""
    control(tree, qmqpderrordelay=0)
    return tree


def t_records(todo):
    """Return the T records of a todo file."""
    return [r for r in todo.split(b"\0")[:-1] if r[:1] == b"T"]


# --- the recipient limit, on the installed qmail-qmqpd ---------------------------------------------------------

def test_qmqpdmaxrcpt_refuses_one_recipient_too_many_and_queues_nothing(procs, qtree):
    control(qtree, qmqpdmaxrcpt=3)
    reply, code, log = session(procs, qtree, qmqp.encode_request(b"hi\n", b"a@b", [b"r1@x", b"r2@x", b"r3@x", b"r4@x"]))
    assert (reply, code) == (b"27:DError: too many recipients,", 0)
    assert "reply to unknown[127.0.0.1]: DError: too many recipients" in log
    assert_nothing_queued(qtree)
    reply, code, _ = session(procs, qtree, qmqp.encode_request(b"hi\n", b"a@b", [b"r1@x", b"r2@x", b"r3@x"]))
    assert K_REPLY.match(reply) and code == 0
    [(_, todo)] = queued(qtree).values()
    assert t_records(todo) == [b"Tr1@x", b"Tr2@x", b"Tr3@x"]


def test_default_limit_is_10000_recipients(procs, qtree):
    many = [b"r%d@example.com" % i for i in range(10001)]
    reply, _, _ = session(procs, qtree, qmqp.encode_request(b"hi\n", b"a@b", many))
    assert reply == b"27:DError: too many recipients,"
    assert_nothing_queued(qtree)
    reply, _, _ = session(procs, qtree, qmqp.encode_request(b"hi\n", b"a@b", many[:10000]))
    assert K_REPLY.match(reply)
    [(_, todo)] = queued(qtree).values()
    assert t_records(todo) == [b"T" + r for r in many[:10000]]


def test_empty_recipients_are_queued_as_qmail_does_and_count(procs, qtree):
    control(qtree, qmqpdmaxrcpt=2)
    reply, _, _ = session(procs, qtree, qmqp.encode_request(b"hi\n", b"a@b", [b"", b"c@d"]))
    assert K_REPLY.match(reply)
    [(_, todo)] = queued(qtree).values()
    assert todo.endswith(b"Fa@b\0T\0Tc@d\0")
    reply, _, _ = session(procs, qtree, qmqp.encode_request(b"hi\n", b"a@b", [b"", b"", b""]))
    assert reply == b"27:DError: too many recipients,"


# --- memory, measured ------------------------------------------------------------------------------------------

WAIT4 = """#!%s
import os
pid = os.fork()
if pid == 0:
    os.execv(%r, %r)
_, status, usage = os.wait4(pid, 0)
with open(%r, "a") as f:
    f.write("%%d\\n" %% usage.ru_maxrss)
os._exit(os.waitstatus_to_exitcode(status))
"""


def peak_recorder(path, peaks, argv):
    """Write an executable that runs argv as its child and appends the child's peak RSS (wait4's
    ru_maxrss, the VmHWM it ended with) in kB to the file peaks; return its path as a string."""
    path.write_text(WAIT4 % (sys.executable, argv[0], argv, str(peaks)))
    path.chmod(0o755)
    return str(path)


def peaks_in(peaks):
    """Return the peak RSS the recorder wrote, in bytes, once it has written it."""
    return int(wait_for(lambda: peaks.exists() and peaks.read_text())) * 1024


def ask(port, request):
    """Send one request over loopback, half-close, return the whole reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        with s.makefile("rb") as f:
            return f.read()


def wait_for(condition, timeout=20):
    """Return condition()'s first true value, polling until the deadline."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value or time.time() > deadline:
            return value
        time.sleep(0.02)


def vm(pid, field):
    """Return a process's VmHWM, VmRSS or RssAnon in bytes (/proc/PID/status)."""
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^%s:\s+(\d+) kB" % field, f.read(), re.M).group(1)) * 1024


def test_peak_memory_of_a_1mb_request_under_tcpserver_is_a_few_times_the_request(procs, qtree, world_tmp):
    # each connection's qmail-qmqpd is exec'd by a wrapper that reports its peak RSS (wait4's ru_maxrss = VmHWM)
    control(qtree, qmqpdmaxrcpt=0)  # accepted and queued: the queue commit is measured too
    peaks = world_tmp / "peaks"
    port = tcpserver(procs, qtree, [peak_recorder(world_tmp / "qmqpd", peaks, [program("qmail-qmqpd")])])
    peaks_in(peaks)  # the fixture's own probe connection
    peak = {}
    for name, request in (("small", SMALL), ("empty", EMPTY_1MB), ("one-byte", ONE_BYTE_1MB)):
        peaks.unlink()
        assert K_REPLY.match(ask(port, request))
        peak[name] = peaks_in(peaks)
    print("peak RSS under tcpserver, bytes:", peak)
    for name, request in (("empty", EMPTY_1MB), ("one-byte", ONE_BYTE_1MB)):
        assert peak[name] < peak["small"] + 3 * len(request), peak
    assert sorted(len(t_records(todo)) for _, todo in queued(qtree).values()) == [1, 250000, 333333]


def test_qmail_queue_takes_a_1mb_envelope_in_a_few_times_its_size(procs, qtree, world_tmp):
    # qmail-qmqpd hands the records to the real qmail-queue ($QMAILQUEUE: its envelope reader and queue writer)
    control(qtree, qmqpdmaxrcpt=0)
    peaks = world_tmp / "peaks"
    qq = peak_recorder(world_tmp / "qq", peaks, [program("qmail-queue")])
    peak = {}
    for name, request in (("small", SMALL), ("empty", EMPTY_1MB)):
        reply, code, log = session(procs, qtree, request, QMAILQUEUE=qq)
        assert K_REPLY.match(reply) and code == 0, log
        peak[name] = peaks_in(peaks)
        peaks.unlink()
    print("qmail-queue peak RSS, bytes:", peak)
    assert peak["empty"] < peak["small"] + 3 * len(EMPTY_1MB), peak
    assert sorted(len(t_records(todo)) for _, todo in queued(qtree).values()) == [1, 333333]
    assert any(todo.endswith(b"Fa@b\0" + b"T\0" * 333333) for _, todo in queued(qtree).values())


def test_a_reused_worker_gets_back_to_its_idle_size(procs, qtree):
    control(qtree, qmqpdmaxrcpt=0)
    port, _, log = serve(procs, qtree, program("qmail-tcpserver"), [program("qmail-qmqpd")], ["-c", "1"],
                         env=qenv(qtree))

    def served(request):
        """Send a request, wait for its worker's `end` line; return the worker's pid."""
        ends = log.read_text().count("tcpserver: end ")
        assert K_REPLY.match(ask(port, request))
        assert wait_for(lambda: log.read_text().count("tcpserver: end ") > ends)
        return int(re.findall(r"^tcpserver: ok (\d+) ", log.read_text(), re.M)[-1])

    worker = served(SMALL)
    idle, idle_rss = vm(worker, "RssAnon"), vm(worker, "VmRSS")  # RssAnon: what the worker can give back
    for request in (EMPTY_1MB, ONE_BYTE_1MB):
        worker = served(request)
        try:
            assert vm(worker, "VmHWM") < idle_rss + 3 * len(request)
        except FileNotFoundError:
            pass  # it exited to shed its memory
    worker = served(SMALL)
    after = wait_for(lambda: vm(worker, "RssAnon") <= idle + MB // 2 and vm(worker, "RssAnon"))
    print("worker RssAnon idle %d, after 1 MB requests %d" % (idle, vm(worker, "RssAnon")))
    assert after, (idle, vm(worker, "RssAnon"))


def test_a_worker_keeps_serving_until_a_connection_leaves_it_grown_past_the_bound():
    # lib/tcpserver/tcppool's worker loop in a forked process, as qmail-tcpserver runs it; the third connection keeps
    # three times GROWTH_MAX alive: a fresh worker is the way back to the idle size
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    status_r, status_w = os.pipe()
    kept = []

    def serve_one(conn, remote):
        """Answer with this worker's pid; grow at the third connection."""
        conn.sendall(b"%d" % os.getpid())
        if conn.recv(10) == b"grow":
            kept.append(bytearray(3 * tcppool.GROWTH_MAX))
            kept[0][::4096] = b"x" * len(kept[0][::4096])  # touch every page
        return 0

    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            # pytest's heap holds what earlier tests freed: the worker trims it before it measures its size, or its
            # first trim would give that back and hide as much growth
            tcppool.Worker(listener.detach(), status_w, serve_one, lambda pid, wstat: None).run(parent)
        finally:
            os._exit(111)
    os.close(status_w)
    try:
        for word in (b"stay", b"stay", b"grow"):
            with socket.create_connection(listener.getsockname(), timeout=10) as c:
                assert c.recv(100) == b"%d" % pid
                c.sendall(word)
                c.shutdown(socket.SHUT_WR)
                assert c.recv(100) == b""
            if word == b"stay":
                assert os.waitpid(pid, os.WNOHANG)[0] == 0
        assert wait_for(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid, timeout=10)
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(status_r)
        listener.close()


# --- the parsers: envelope records and the QMQP recipient count -------------------------------------------------

def old_decode(data):
    """The list-based decode this module replaced: the oracle for its results and exit codes."""
    if not data.endswith(b"\0\0") and data != b"\0":
        raise EnvelopeError(54, "")
    records = data[:-1].split(b"\0")[:-1]
    if not records or records[0][:1] != b"F":
        raise EnvelopeError(91, "")
    for record in records:
        if len(record) > envelope.ADDR_MAX:
            raise EnvelopeError(11, "")
    for record in records[1:]:
        if record[:1] != b"T":
            raise EnvelopeError(91, "")
    return records[0][1:], [r[1:] for r in records[1:]]


def old_read(stream, limit=envelope.ADDR_MAX):
    """The list-based read this module replaced: the oracle for read()."""
    records, buf = [], b""
    while True:
        nul = buf.find(b"\0")
        while nul < 0:
            if buf and buf[:1] != (b"T" if records else b"F"):
                raise EnvelopeError(91, "")
            if len(buf) > limit:
                raise EnvelopeError(11, "")
            chunk = stream.read(4096)
            if not chunk:
                raise EnvelopeError(54, "")
            buf += chunk
            nul = buf.find(b"\0")
        record, buf = buf[:nul], buf[nul + 1:]
        if len(record) > limit:
            raise EnvelopeError(11, "")
        if not record:
            break
        if record[:1] != (b"T" if records else b"F"):
            raise EnvelopeError(91, "")
        records.append(record[1:])
    if not records:
        raise EnvelopeError(91, "")
    return records[0], records[1:]


def outcome(function, *args):
    """Return (sender, [recipients]) or the exit code function gives."""
    try:
        sender, recipients = function(*args)
    except EnvelopeError as e:
        return e.code
    if function in (envelope.decode, envelope.read):
        assert isinstance(recipients, Recipients)  # held as one buffer of records
    return sender, list(recipients)


# records near the limits: short ones, ones around ADDR_MAX, wrong types, empty ones
record = st.one_of(st.binary(max_size=6), st.integers(995, 1010).map(lambda n: b"a" * n),
                   st.sampled_from([b"F", b"T", b"X", b""])).map(lambda r: r.replace(b"\0", b""))
envelopes = st.builds(lambda head, records, tail: head + b"".join(r + b"\0" for r in records) + tail,
                      st.sampled_from([b"F", b"T", b"", b"Fa@b\0"]), st.lists(record, max_size=12),
                      st.sampled_from([b"\0", b"", b"\0\0", b"T"]))


@settings(max_examples=500, deadline=None)
@given(envelopes)
def test_decode_gives_what_the_list_based_decode_gave(data):
    assert outcome(envelope.decode, data) == outcome(old_decode, data)


@settings(max_examples=500, deadline=None)
@given(envelopes, st.integers(1, 5000))
def test_read_gives_what_the_list_based_read_gave(data, step):
    assert outcome(envelope.read, Trickle(data, step)) == outcome(old_read, Trickle(data, step))
    assert outcome(envelope.read, io.BytesIO(data)) == outcome(old_read, io.BytesIO(data))


@given(st.binary(max_size=3000).map(lambda b: b.replace(b"\1", b"\0")), st.integers(0, 40), st.integers(1, 1100))
def test_runs_fit_finds_every_long_run(data, start, limit):
    start = min(start, len(data))
    naive = all(len(run) <= limit for run in data[start:].split(b"\0"))
    assert envelope.runs_fit(data, start, len(data), limit) == naive


addresses = st.binary(max_size=20).map(lambda b: b.replace(b"\0", b""))


@given(st.lists(addresses, max_size=30))
def test_recipients_hold_the_addresses_as_t_records(rcpts):
    held = Recipients(rcpts)
    assert list(held) == rcpts and len(held) == len(rcpts) and held == rcpts
    assert bytes(held.records) == b"".join(b"T" + r + b"\0" for r in rcpts)
    assert envelope.encode(b"s", held) == envelope.encode(b"s", rcpts)
    assert todo_record(1, 2, b"s", held) == todo_record(1, 2, b"s", rcpts)
    assert envelope.decode(envelope.encode(b"s", held)) == (b"s", held)


def test_an_address_with_a_nul_cannot_be_held():
    with pytest.raises(ValueError):
        Recipients([b"a\0b"])


@given(st.lists(addresses, max_size=12), st.integers(1, 12))
def test_read_request_keeps_at_most_maxrcpt_recipients(rcpts, maxrcpt):
    _, request = parse_request(qmqp.encode_request(b"hi\n", b"a@b", rcpts), maxrcpt=maxrcpt)
    assert request.too_many_recipients == (len(rcpts) > maxrcpt)
    assert list(request.recipients) == rcpts[:maxrcpt]
    assert request.refusal() == ("DError: too many recipients" if len(rcpts) > maxrcpt else "")


ADDRESSES_1MB = qmqp.encode_request(b"hi\n", b"a@b", [b"r%07d@example.com" % i for i in range(41000)])


@pytest.mark.parametrize("data, count", [(EMPTY_1MB, 333333), (ADDRESSES_1MB, 41000)])
def test_a_1mb_request_is_held_in_about_its_own_size(data, count):
    import tracemalloc
    tracemalloc.start()
    try:
        _, request = parse_request(data)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(request.recipients) == count and not request.too_many_recipients
    assert held < 1.5 * len(data)  # a list of bytes objects: 2.7 and 2.8 MB
