"""qmail-rspawn's SMTP connection cache (issue 19, scenario 3; qmail-rspawn(8), qmail-remote(8)): qmail-remote
hands a cleanly ended connection to qmail-rspawn, which lends it to the next run for the same host; a dead,
refused or expired one costs nothing but a fresh connection; TLS sessions are never cached."""

import os
import socket
import ssl
import threading
import time

from hypothesis import given, strategies as st

import smtpsim
from conftest import program, qenv, queue_message
from mailsystem import MailSystem, make_system_tree
from smtpsim import Simulator, wait_until
from test_qmail_remote_tls import self_signed
from test_spawners import Spawner, queue_message as spawner_queue_message

from pyqmail.lib.remote import conncache
from pyqmail.lib.remote.remoteroute import parse_routes
from pyqmail.lib.remote.conncache import Record

MSG = b"Subject: cached\nMessage-ID: <cached@x>\n\nA line.\n"

WORD = st.binary(min_size=1, max_size=12).filter(conncache.is_word)
KEYWORDS = st.dictionaries(WORD, st.lists(WORD, max_size=4), max_size=8)
RECORDS = st.builds(Record, st.binary(min_size=1, max_size=60), st.binary(min_size=1, max_size=45),
                    st.integers(0, 10 ** 12).map(lambda ms: ms / 1000), st.integers(0, 10 ** 6), KEYWORDS)


@given(RECORDS)
def test_a_record_survives_encoding(record):
    data = conncache.encode(record)
    assert data is not None and len(data) <= conncache.RECORD_MAX
    assert conncache.decode(data) == record


@given(st.binary(max_size=600))
def test_decoding_anything_gives_a_record_or_none(data):
    record = conncache.decode(data)
    assert record is None or conncache.decode(conncache.encode(record)) == record


@given(RECORDS, st.integers(0, 200))
def test_a_damaged_record_is_refused_or_still_well_formed(record, cut):
    data = conncache.encode(record)[:cut]
    decoded = conncache.decode(data)
    assert decoded is None or decoded == record


def test_oversized_records_are_not_carried():
    assert conncache.encode(Record(b"x" * 5000, b"127.0.0.1", 0, 0, {})) is None
    assert conncache.decode(b"1" + b"x" * conncache.RECORD_MAX) is None
    assert conncache.decode(b"2" + conncache.encode(Record(b"a", b"b", 0, 0, {}))[1:]) is None


def test_domains_relayed_to_one_host_share_a_key():
    routes = parse_routes([b"a.example:[127.0.0.9]:2525", b"b.example:[127.0.0.9]:2525", b".c.example:Relay.X",
                           b"d.example:"])
    assert conncache.cache_key(routes, b"A.Example") == conncache.cache_key(routes, b"b.example") == \
        b"relay:[127.0.0.9]:2525"
    assert conncache.cache_key(routes, b"x.c.example") == b"relay:relay.x:25"
    assert conncache.cache_key(routes, b"D.example") == b"domain:d.example"  # no relay: the MX, so the domain
    assert conncache.cache_key({}, b"E.Example") == b"domain:e.example"
    assert conncache.cache_key(routes, b"[127.0.0.9]:2525") == b"domain:[127.0.0.9]:2525"  # test_remote_audit


def system_with(tree, sim, **controls):
    """Write the routes and the control files; return the tree."""
    sim.write_routes(tree)
    for name, value in controls.items():
        (tree / "control" / name).write_bytes(b"%s\n" % str(value).encode())
    return tree


def queue_all(tree, rcpts):
    """Queue one message per recipient."""
    for r in rcpts:
        assert queue_message(tree, MSG, b"Fs@s.example\0T" + r + b"\0\0") == 0


def arrived(records):
    """Return every recipient the sink accepted, in a sorted list."""
    return sorted(r for t in records["transactions"] for r in t["recipients"])


def deliver_through_qmail_send(procs, tree, sink, rcpts):
    """Start qmail-send, wait until every message is delivered and the sink holds them; return (records, log)."""
    system = MailSystem(procs, tree)
    records = sink.wait_for(lambda r: r["transaction_count"] >= len(rcpts), timeout=60)
    log = system.wait_log(b"end msg ", count=len(rcpts))
    assert system.stop() == 0
    # the cache's QUITs are sent without waiting for the reply, the last ones as qmail-rspawn exits: the sink has
    # read every one once it has seen every connection's end
    return sink.wait_for(lambda r: r["connections_closed"] == r["connections_opened"]), log


def test_messages_to_one_domain_share_connections(procs, world_tmp):
    tree = make_system_tree(world_tmp / "on")
    rcpts = [b"u%d@one.example" % i for i in range(12)]
    queue_all(tree, rcpts)
    with Simulator([("one.example", smtpsim.healthy())], prefix="127.0.29.", first=10) as sim:
        system_with(tree, sim, concurrencyremote=2)
        records, log = deliver_through_qmail_send(procs, tree, sim.sink("one.example"), rcpts)
    assert arrived(records) == sorted(r.decode() for r in rcpts)  # each exactly once
    assert records["transaction_count"] == 12
    # 2 slots (and control/smtpconnectioncache absent: on, 2 s): 12 sessions without the cache
    assert records["connections_opened"] <= 6, records["connections_opened"]
    used = {t["connection"] for t in records["transactions"]}
    assert len(used) == records["connections_opened"]
    assert log.count(b": success: ") == 12 and b"deferral" not in log and b"failure" not in log
    assert records["quits"] == records["connections_opened"]  # each cached one was QUIT at its end


def test_control_file_zero_is_one_session_per_message(procs, world_tmp):
    tree = make_system_tree(world_tmp / "off")
    rcpts = [b"u%d@one.example" % i for i in range(6)]
    queue_all(tree, rcpts)
    with Simulator([("one.example", smtpsim.healthy())], prefix="127.0.29.", first=20) as sim:
        system_with(tree, sim, concurrencyremote=2, smtpconnectioncache=0)
        records, log = deliver_through_qmail_send(procs, tree, sim.sink("one.example"), rcpts)
    assert arrived(records) == sorted(r.decode() for r in rcpts)
    assert records["connections_opened"] == 6 and records["quits"] == 6
    assert len({t["connection"] for t in records["transactions"]}) == 6


def test_a_connection_the_server_closed_while_idle_is_not_used(procs, world_tmp):
    """The sink closes idle connections after 0.3 s; the cache would keep them 30 s: the next message still goes."""
    tree = make_system_tree(world_tmp / "idle")
    with Simulator([("idle.example", smtpsim.idle_close(0.3))], prefix="127.0.29.", first=30) as sim:
        system_with(tree, sim, smtpconnectioncache=30)
        sink = sim.sink("idle.example")
        system = MailSystem(procs, tree)
        queue_all(tree, [b"first@idle.example"])
        sink.wait_for(lambda r: r["idle_closed"] == 1, timeout=30)
        queue_all(tree, [b"second@idle.example"])
        log = system.wait_log(b"end msg ", count=2)
        records = sink.wait_for(lambda r: r["transaction_count"] == 2)
        assert system.stop() == 0
    assert arrived(records) == ["first@idle.example", "second@idle.example"]
    assert records["connections_opened"] == 2
    assert log.count(b": success: ") == 2 and b"deferral" not in log


def test_a_cached_connection_refused_at_mail_falls_back_to_a_fresh_one(procs, world_tmp):
    """The sink takes one message per connection and answers the next MAIL with 421: qmail-remote, lent the
    cached connection, drops it and delivers over a new one, with nothing deferred or reported twice."""
    tree = make_system_tree(world_tmp / "per")
    rcpts = [b"p%d@per.example" % i for i in range(5)]
    queue_all(tree, rcpts)
    behaviour = smtpsim.transactions_per_connection(1)
    with Simulator([("per.example", behaviour)], prefix="127.0.29.", first=40) as sim:
        system_with(tree, sim, concurrencyremote=1)
        records, log = deliver_through_qmail_send(procs, tree, sim.sink("per.example"), rcpts)
    assert arrived(records) == sorted(r.decode() for r in rcpts)
    assert records["refused_by_count"] == 4  # every later message was lent the previous connection first
    assert records["connections_opened"] == 5
    assert log.count(b": success: ") == 5 and b"deferral" not in log and b"failure" not in log
    assert log.count(b"starting delivery") == 5


def test_an_idle_cached_connection_is_quit_after_the_time_limit(procs, world_tmp):
    tree = make_system_tree(world_tmp / "expiry")
    with Simulator([("exp.example", smtpsim.healthy())], prefix="127.0.29.", first=50) as sim:
        system_with(tree, sim, smtpconnectioncache=2)
        sink = sim.sink("exp.example")
        system = MailSystem(procs, tree)
        queue_all(tree, [b"only@exp.example"])
        done = sink.wait_for(lambda r: r["transaction_count"] == 1, timeout=30)
        accepted = done["transactions"][0]["time"]
        assert done["open_now"] == 1 and done["quits"] == 0  # kept in the cache, not quit
        quit = sink.wait_for(lambda r: r["quits"] == 1 and r["open_now"] == 0, timeout=10)
        waited = time.time() - accepted
        system.wait_log(b"end msg ")
        assert system.stop() == 0
    assert quit["connections_opened"] == 1 and quit["transaction_count"] == 1
    assert 1.9 <= waited < 10  # two seconds idle (select wakes for it), not qmail-send's exit


class TlsSink:
    """A threaded SMTP server on 127.0.0.1 offering STARTTLS; counts connections, TLS sessions, QUITs, messages."""

    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.counts = {"connections": 0, "tls": 0, "quits": 0, "messages": 0, "closed": 0}
        self.threads = []
        threading.Thread(target=self.accept, daemon=True).start()

    def bump(self, name):
        """Count an event."""
        with self.lock:
            self.counts[name] += 1

    def accept(self):
        """Serve each connection in a thread until the listener closes."""
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.bump("connections")
            t = threading.Thread(target=self.session, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def session(self, conn):
        """One SMTP session, STARTTLS included (bounded by a 20 s timeout per read)."""
        conn.settimeout(20)
        f = conn.makefile("rwb")
        try:
            f.write(b"220 tls sink ESMTP\r\n")
            f.flush()
            tls = False
            while True:
                line = f.readline(4096)
                if not line:
                    return
                verb = line.split()[0].upper() if line.split() else b""
                if verb == b"EHLO":
                    f.write(b"250-tls sink\r\n250-PIPELINING\r\n" + (b"" if tls else b"250-STARTTLS\r\n") +
                            b"250 8BITMIME\r\n")
                elif verb == b"STARTTLS" and not tls:
                    f.write(b"220 go ahead\r\n")
                    f.flush()
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                    f = conn.makefile("rwb")
                    tls = True
                    self.bump("tls")
                    continue
                elif verb == b"DATA":
                    f.write(b"354 go\r\n")
                    f.flush()
                    while f.readline(65536) not in (b".\r\n", b""):
                        pass
                    self.bump("messages")
                    f.write(b"250 ok queued\r\n")
                elif verb == b"QUIT":
                    self.bump("quits")
                    f.write(b"221 bye\r\n")
                    f.flush()
                    return
                else:
                    f.write(b"250 ok\r\n")
                f.flush()
        except OSError:
            return
        finally:
            self.bump("closed")
            conn.close()

    def close(self):
        """Stop accepting."""
        self.listener.close()


def deliver_in_turn(s, tree, pattern, accepted, count=3):
    """Queue and deliver count messages through the Spawner s one after another, recipient pattern % i; each
    report must start with accepted."""
    for i in range(count):
        messid, _ = spawner_queue_message(tree, rcpt=pattern % i)
        s.send(i, messid, b"s@example.org", pattern % i)
        delnum, text = s.report()
        assert delnum == i and text.startswith(accepted), text


def test_a_session_that_did_starttls_is_never_cached(procs, tree, world_tmp):
    cert, key = self_signed(world_tmp, "cc")
    sink = TlsSink(cert, key)
    try:
        (tree / "control" / "smtproutes").write_bytes(b"tls.example:[127.0.0.1]:%d\n" % sink.port)
        (tree / "control" / "smtpconnectioncache").write_bytes(b"30\n")
        s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))
        deliver_in_turn(s, tree, b"t%d@tls.example", b"K127.0.0.1 accepted message.")
        counts = wait_until(lambda: dict(sink.counts), lambda c: c["closed"] == 3, 30)
        assert counts == {"connections": 3, "tls": 3, "quits": 3, "messages": 3, "closed": 3}
        assert s.finish()[0] == 0
    finally:
        sink.close()


def test_plain_sessions_through_qmail_rspawn_reuse_one_connection(procs, tree):
    """The same three deliveries one after another to a plain server: one connection, QUIT once at the end."""
    with Simulator([("plain.example", smtpsim.healthy())], prefix="127.0.29.", first=60) as sim:
        sim.write_routes(tree)
        (tree / "control" / "smtpconnectioncache").write_bytes(b"30\n")
        s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))
        deliver_in_turn(s, tree, b"p%d@Plain.Example", b"K127.0.29.60 accepted message.")
        sink = sim.sink("plain.example")
        assert sink.snapshot()["quits"] == 0
        assert s.finish()[0] == 0  # at exit every cached connection is QUIT
        records = sink.wait_for(lambda r: r["quits"] == 1 and r["open_now"] == 0)
    assert records["connections_opened"] == 1 and records["transaction_count"] == 3
    assert arrived(records) == ["p0@Plain.Example", "p1@Plain.Example", "p2@Plain.Example"]


def test_the_cache_refuses_what_is_not_a_socket_and_bounds_its_size():
    cache = conncache.Cache(idle=30, cap=2, routes=lambda: {})
    try:
        r, w = os.pipe()
        socket.send_fds(cache.theirs, [conncache.encode(Record(b"a.example", b"127.0.0.1", time.monotonic(), 1,
                                                                  {}))], [r])
        socket.send_fds(cache.theirs, [b"garbage"], [])
        cache.receive()
        assert cache.total == 0  # a pipe is not a connection; the garbage is ignored
        os.close(w)
        pairs = [socket.socketpair() for _ in range(3)]
        for i, (a, b) in enumerate(pairs):
            record = Record(b"domain:k%d.example" % i, b"127.0.0.1", time.monotonic(), 1, {b"SIZE": [b"100"]})
            socket.send_fds(cache.theirs, [conncache.encode(record)], [a.fileno()])
            a.close()
            cache.receive()
        assert cache.total == 2 and sorted(cache.entries) == [b"domain:k1.example", b"domain:k2.example"]
        assert pairs[0][1].recv(100) == b"QUIT\r\n"  # the oldest made room, politely
        cache.lend(b"K2.EXAMPLE")
        assert cache.lent is not None and cache.lent.record.keywords == {b"SIZE": [b"100"]}
        cache.forked()
        pairs[1][1].close()  # the server closed k1's connection while it was idle
        cache.lend(b"k1.example")
        assert cache.lent is None and cache.total == 0
    finally:
        cache.close_all()
