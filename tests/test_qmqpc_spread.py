"""qmail-qmqpc with control/qmqpspread: a random first hub, failed hubs last (lib/qmqp/hubmemory, lock/qmqpto),
failover only before the request's last byte, the whole-request deadline (control/timeoutqmqpc); and unchanged
qmail behaviour without qmqpspread. Unit and property tests of lib/qmqp/hubmemory, then the installed program
against scripted loopback servers."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, strategies as st

from conftest import make_tree, program, qenv
from test_imports import HEAVY, imported
from test_qmqpc import MESSAGE, SENDER, RECIPIENTS, qmqp_request, qmqpc, servers, set_servers, unused_port  # noqa: F401
from pyqmail.lib.qmqp import hubmemory
from pyqmail.lib.qmqp.hubmemory import FORGET, RECORD, SIZE, failed, key, order, record, records, update
from pyqmail.lib.queue import envelope

NOW = 1_800_000_000
hosts = st.one_of(st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: "%d.%d.%d.%d" % t),
                  st.sampled_from(["::1", "2001:db8::5", "fe80::1"]))
server_lists = st.lists(st.tuples(hosts, st.integers(1, 65535)), min_size=1, max_size=8, unique=True)


# ---- lib/qmqp/hubmemory ----

def test_key_maps_ipv4_into_ipv6_and_refuses_junk():
    assert key("10.0.0.1", 628) == key("::ffff:10.0.0.1", 628)
    assert len(key("::1", 1)) == 18
    assert key("10.0.0.1", 628) != key("10.0.0.1", 629)
    assert key("not an address", 628) is None
    assert key("10.0.0.1", 0) is None


def test_record_round_trip_and_expiry():
    hub = key("10.0.0.1", 628)
    table = record(hub, hubmemory.REFUSED, 1, NOW) + bytes(SIZE - RECORD)
    assert records(table)[0] == (hub, 1, 1, NOW)
    assert failed(table, NOW + 1) == {hub: NOW}
    assert failed(table, NOW + FORGET) == {}  # forgotten after FORGET seconds
    assert failed(table, NOW - 3600) == {}  # a time far in the future is garbage, not a failure


def test_order_rotates_then_puts_failed_last_oldest_first():
    servers = [("10.0.0.%d" % i, 628) for i in range(1, 5)]
    assert order(servers, 2, {}) == [servers[2], servers[3], servers[0], servers[1]]
    recent = {key(*servers[2]): NOW, key(*servers[3]): NOW - 50}
    assert order(servers, 2, recent) == [servers[0], servers[1], servers[3], servers[2]]


def test_update_success_clears_and_failures_count():
    hub = key("10.0.0.1", 628)
    empty = bytes(SIZE)
    assert update(empty, hub, 0, NOW) is None  # a success with no record writes nothing
    i, rec = update(empty, hub, hubmemory.TIMED_OUT, NOW)
    table = empty[:i * RECORD] + rec + empty[(i + 1) * RECORD:]
    i2, rec2 = update(table, hub, hubmemory.REFUSED, NOW + 5)
    assert i2 == i and records(rec2)[0] == (hub, hubmemory.REFUSED, 2, NOW + 5)
    assert update(table, hub, 0, NOW + 6) == (i, bytes(RECORD))


@given(server_lists, st.integers(0, 2 ** 32), st.binary(max_size=SIZE + 100))
def test_order_is_always_a_permutation_whatever_the_file_holds(servers, start, table):
    """A corrupt or hostile file can reorder hubs but never drop or add one."""
    result = order(servers, start, failed(table, NOW))
    assert sorted(result) == sorted(servers)


@given(st.binary(max_size=SIZE + 100), hosts, st.integers(1, 65535), st.integers(0, 4))
def test_update_stays_inside_the_table(table, host, port, kind):
    change = update(table, key(host, port), kind, NOW)
    if change is not None:
        index, rec = change
        assert 0 <= index * RECORD and (index + 1) * RECORD <= max(len(table), SIZE)
        assert len(rec) == RECORD
        if kind:
            assert key(host, port) in failed(table[:index * RECORD] + rec + table[(index + 1) * RECORD:], NOW)


@given(server_lists, st.data())
def test_failed_hub_goes_last_after_one_note(servers, data):
    failing = data.draw(st.sampled_from(servers))
    _, rec = update(bytes(SIZE), key(*failing), hubmemory.REFUSED, NOW)
    result = order(servers, data.draw(st.integers(0, 100)), failed(rec + bytes(SIZE - RECORD), NOW + 1))
    assert result[-1] == failing


# ---- the installed qmail-qmqpc ----

@pytest.fixture
def mini(world_tmp):
    """A mini-qmail tree from the real qmail-setup --mini (so lock/qmqpto is as installed)."""
    return make_tree(world_tmp / "node", "--single-user", "--mini", "127.0.0.1")


def spread(tree, *lines, on=True):
    """Write control/qmqpservers and control/qmqpspread (or remove it)."""
    set_servers(tree, *lines)
    path = tree / "control" / "qmqpspread"
    if on:
        path.write_text("1\n")
    elif path.exists():
        path.unlink()


def memory(tree):
    """Return {(host key): (kind, count)} of the records in lock/qmqpto."""
    return {k: (kind, count) for k, kind, count, _ in records((tree / "lock" / "qmqpto").read_bytes()) if kind}


def plant(tree, server, when):
    """Write a REFUSED record for server into lock/qmqpto at time when."""
    (tree / "lock" / "qmqpto").write_bytes(record(key(server.host, server.port), 1, 1, when)
                                           + bytes(SIZE - RECORD))


def test_setup_mini_makes_the_memory_file(mini):
    assert (mini / "lock" / "qmqpto").read_bytes() == b""
    assert (mini / "control" / "qmqpservers").read_text() == "127.0.0.1\n"


def test_without_qmqpspread_every_message_goes_to_the_first_hub_and_nothing_is_written(mini, servers):
    hubs = [servers(b"3:Kok,") for _ in range(3)]
    spread(mini, "127.0.0.1:%d" % unused_port(), *[h.line() for h in hubs], on=False)
    for _ in range(5):
        assert qmqpc(mini) == 0
    assert [len(h.requests) for h in hubs] == [5, 0, 0]
    assert (mini / "lock" / "qmqpto").read_bytes() == b""


def test_spread_uses_every_hub(mini, servers):
    hubs = [servers(b"3:Kok,") for _ in range(3)]
    spread(mini, *[h.line() for h in hubs])
    for _ in range(30):
        assert qmqpc(mini) == 0
    counts = [len(h.requests) for h in hubs]
    assert sum(counts) == 30 and min(counts) >= 1, counts  # P(a hub gets none) = 3 * (2/3)^30 < 2e-5
    assert all(r == qmqp_request(MESSAGE, SENDER, RECIPIENTS) for h in hubs for r in h.requests)


def test_refused_hub_is_remembered_and_tried_last(mini, servers):
    live = servers(b"3:Kok,")
    dead = "127.0.0.1:%d" % unused_port()
    spread(mini, dead, live.line())
    assert qmqpc(mini) == 0
    port = int(dead.split(":")[1])
    assert memory(mini) in ({key("127.0.0.1", port): (hubmemory.REFUSED, 1)}, {})  # {}: the live hub came first
    for _ in range(40):  # until a message started at the dead hub (each does with probability 1/2)
        if memory(mini):
            break
        assert qmqpc(mini) == 0
    assert memory(mini) == {key("127.0.0.1", port): (hubmemory.REFUSED, 1)}


def test_remembered_hub_gets_nothing_while_remembered_then_its_share_again(mini, servers):
    a, b = servers(b"3:Kok,"), servers(b"3:Kok,")
    spread(mini, a.line(), b.line())
    plant(mini, a, int(time.time()))
    for _ in range(10):
        assert qmqpc(mini) == 0
    assert (len(a.requests), len(b.requests)) == (0, 10)
    plant(mini, a, int(time.time()) - FORGET - 1)  # forgotten
    for _ in range(20):
        assert qmqpc(mini) == 0
    assert len(a.requests) >= 1


def test_success_on_a_remembered_hub_clears_its_record(mini, servers):
    a = servers(b"3:Kok,")
    spread(mini, a.line())
    plant(mini, a, int(time.time()))
    assert qmqpc(mini) == 0  # the only hub: tried last is tried all the same
    assert memory(mini) == {}


@pytest.mark.parametrize("damage", ["garbage", "short", "missing", "symlink", "directory", "fifo"])
def test_a_damaged_memory_file_costs_nothing(mini, servers, world_tmp, damage):
    live = servers(b"3:Kok,")
    spread(mini, "127.0.0.1:%d" % unused_port(), live.line())
    path = mini / "lock" / "qmqpto"
    path.unlink()
    victim = world_tmp / "victim"
    victim.write_bytes(b"keep")
    if damage == "garbage":
        path.write_bytes(os.urandom(SIZE * 2))
    elif damage == "short":
        path.write_bytes(b"\xff" * 7)
    elif damage == "symlink":
        path.symlink_to(victim)
    elif damage == "directory":
        path.mkdir()
    elif damage == "fifo":
        os.mkfifo(path)
    for _ in range(4):
        assert qmqpc(mini, timeout=20) == 0
    assert len(live.requests) == 4
    assert victim.read_bytes() == b"keep"  # a planted symlink is never followed


def test_concurrent_processes_keep_one_record_per_hub(mini, servers):
    live = servers(b"3:Kok,")
    dead_port = unused_port()
    spread(mini, "127.0.0.1:%d" % dead_port, live.line())
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(qmqpc(mini))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == [0] * 8
    table = (mini / "lock" / "qmqpto").read_bytes()
    assert len(table) in (0, SIZE)
    kept = [k for k, kind, _, _ in records(table) if kind]
    assert kept in ([], [key("127.0.0.1", dead_port)])


class EarlyServer:
    """A loopback server that answers `reply` as soon as it accepts, then closes without reading (or, with
    stall, keeps the connection open without reading, its receive buffer small)."""

    def __init__(self, reply, stall=False):
        self.sock = socket.socket()
        if stall:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.reply, self.stall, self.conns, self.stopping = reply, stall, [], threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def line(self):
        """This server as a qmqpservers line."""
        return "127.0.0.1:%d" % self.port

    def serve(self):
        """Answer connections until stopped."""
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.sendall(self.reply)
            if self.stall:
                self.conns.append(conn)
            else:
                conn.close()

    def stop(self):
        """Stop and close everything."""
        self.stopping.set()
        self.thread.join(5)
        for c in self.conns + [self.sock]:
            c.close()


@pytest.fixture
def early():
    """Start EarlyServers that are stopped at the end."""
    started = []

    def start(reply, stall=False):
        """Start one."""
        started.append(EarlyServer(reply, stall))
        return started[-1]
    yield start
    for s in started:
        s.stop()


BIG = b"x" * (20 << 20) + b"\n"  # more than any socket buffer: the failure comes before the last byte


@pytest.mark.parametrize("on,codes", [(True, {0}), (False, {74, 71})])
def test_z_before_the_request_fails_over_only_with_spread(mini, servers, early, on, codes):
    refuser, live = early(b"9:Zbusy now,"), servers(b"3:Kok,")
    spread(mini, refuser.line(), live.line(), on=on)
    if on:
        (mini / "lock" / "qmqpto").write_bytes(b"")
        plant(mini, live, int(time.time()))  # the refuser first, every time
    assert qmqpc(mini, message=BIG, timeout=60) in codes
    assert len(live.requests) == (1 if on else 0)
    if on:
        assert key("127.0.0.1", refuser.port) in {k for k, kind, _, _ in records(
            (mini / "lock" / "qmqpto").read_bytes()) if kind == hubmemory.REFUSED}


def test_a_hub_stalling_mid_request_is_failed_over_with_spread(mini, servers, early):
    staller, live = early(b"", stall=True), servers(b"3:Kok,")
    spread(mini, staller.line(), live.line())
    plant(mini, live, int(time.time()))
    assert qmqpc(mini, message=BIG, extra_env={"QMQPC_TIMEOUTREMOTE": "1"}, timeout=60) == 0
    assert len(live.requests) == 1


def test_z_after_the_whole_request_is_the_answer_even_with_spread(mini, servers):
    z, live = servers(b"9:Zbusy now,"), servers(b"3:Kok,")
    spread(mini, z.line(), live.line())
    plant(mini, live, int(time.time()) - 10)  # the refuser first; then, both remembered, the older failure first
    assert qmqpc(mini) == 71
    assert (len(z.requests), len(live.requests)) == (1, 0)
    assert memory(mini)[key("127.0.0.1", z.port)] == (hubmemory.ANSWERED_Z, 1)  # so the next message goes elsewhere
    assert qmqpc(mini) == 0
    assert len(live.requests) == 1


@pytest.mark.parametrize("on", [True, False])
def test_whole_request_deadline(mini, servers, on):
    silent = servers("silent")
    spread(mini, silent.line(), on=on)
    (mini / "control" / "timeoutqmqpc").write_text("2\n")
    start = time.monotonic()
    assert qmqpc(mini) == 74  # the reply read would wait 60 s without the deadline
    assert 1.5 < time.monotonic() - start < 10
    assert silent.requests == [qmqp_request(MESSAGE, SENDER, RECIPIENTS)]


def test_spread_path_imports_nothing_heavy(mini, servers):
    hubs = [servers(b"3:Kok,"), servers(b"3:Kok,")]
    spread(mini, "127.0.0.1:%d" % unused_port(), *[h.line() for h in hubs])
    env_r, env_w = os.pipe()
    os.write(env_w, envelope.encode(SENDER, RECIPIENTS))
    os.close(env_w)
    proc = subprocess.run([sys.executable, "-X", "importtime", program("qmail-qmqpc")], input=MESSAGE,
                          stdout=env_r, stderr=subprocess.PIPE, env=qenv(mini), timeout=30)
    os.close(env_r)
    assert proc.returncode == 0
    mods = imported(proc.stderr)
    assert "pyqmail" in mods
    assert not mods & HEAVY, sorted(mods & HEAVY)
