"""qmail-rspawn's connection cache after a control file changed (task h2): a cached connection is lent on only if it
was opened as the control files would open it now (EHLO name from helohost, else me; port; AUTH user); otherwise
qmail-remote QUITs it and delivers over a fresh connection, from the next delivery on."""

import os
import re

import smtpsim
from conftest import program, qenv
from smtpsim import Simulator
from test_qmail_remote import SINK_IP, dumped, start_sink
from test_remote_conncache import deliver_in_turn
from test_spawners import Spawner

from pyqmail.lib.remote import conncache

ACCEPTED = b"K%s accepted message." % SINK_IP.encode()


def helo_by_recipient(dump, count):
    """Return {recipient: the HELO/EHLO argument of its session} for the count messages smtp-sink stored."""
    out = {}
    for head, _ in dumped(dump, count):
        helo = re.search(rb"^X-Helo-Args: (.*)$", head, re.M).group(1)
        out[re.search(rb"^X-Rcpt-Args: <(.*)>$", head, re.M).group(1)] = helo
    return out


def write(tree, name, data, mode=0o644):
    """Write a control file."""
    path = tree / "control" / name
    path.write_bytes(data)
    os.chmod(path, mode)


def test_after_helohost_changes_the_next_delivery_greets_with_the_new_name(procs, tree, world_tmp):
    """Postfix's smtp-sink records each message's HELO/EHLO argument: two deliveries share the name, the one after
    helohost changed has the new one, and the one after helohost is gone has control/me's."""
    port, dump = start_sink(procs, world_tmp)
    write(tree, "smtproutes", b"sink.example:[%s]:%d\n" % (SINK_IP.encode(), port))
    write(tree, "smtpconnectioncache", b"30\n")
    write(tree, "helohost", b"old.example\n")
    s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))
    deliver_in_turn(s, tree, b"old%d@sink.example", ACCEPTED, count=2)
    write(tree, "helohost", b"new.example\n")
    deliver_in_turn(s, tree, b"new%d@sink.example", ACCEPTED, count=2)
    (tree / "control" / "helohost").unlink()
    write(tree, "me", b"me.example\n")
    deliver_in_turn(s, tree, b"me%d@sink.example", ACCEPTED, count=1)
    assert s.finish()[0] == 0
    assert helo_by_recipient(dump, 5) == {
        b"old0@sink.example": b"old.example", b"old1@sink.example": b"old.example",
        b"new0@sink.example": b"new.example", b"new1@sink.example": b"new.example",
        b"me0@sink.example": b"me.example"}


def test_after_a_route_port_changes_the_next_delivery_goes_to_the_new_port(procs, tree, world_tmp):
    """A domain-literal route with a port and no relay (`[ip]::port`) is cached under the domain, whose key has no
    port: the connection to the old port must not carry the next delivery."""
    ports_dumps = [start_sink(procs, world_tmp) for _ in range(2)]
    write(tree, "smtpconnectioncache", b"30\n")
    s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))
    for n, (port, _) in enumerate(ports_dumps):
        write(tree, "smtproutes", b"[%s]::%d\n" % (SINK_IP.encode(), port))
        deliver_in_turn(s, tree, b"to%d.%%d@[%s]" % (n, SINK_IP.encode()), ACCEPTED, count=2)
    assert s.finish()[0] == 0
    for n, (_, dump) in enumerate(ports_dumps):
        assert sorted(helo_by_recipient(dump, 2)) == [b"to%d.%d@[%s]" % (n, i, SINK_IP.encode()) for i in (0, 1)]


def test_each_changed_setting_quits_the_cached_connection_and_the_next_delivery_opens_one(procs, tree):
    """Counted at the sink: a connection carries deliveries while nothing changes; a new helohost, a remoteauth
    user where there was none, another user: each time the cached connection is QUIT and a fresh one is made."""
    with Simulator([("plain.example", smtpsim.healthy())], prefix="127.0.29.", first=90) as sim:
        sim.write_routes(tree)
        write(tree, "smtpconnectioncache", b"30\n")
        write(tree, "helohost", b"one.example\n")
        sink = sim.sink("plain.example")
        s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))
        steps = [("helohost", b"one.example\n"), ("helohost", b"two.example\n"),
                 ("remoteauth", b"[127.0.29.90]:alice:secret\n"), ("remoteauth", b"[127.0.29.90]:bob:secret\n")]
        for n, (name, data) in enumerate(steps, 1):
            write(tree, name, data, 0o600)
            deliver_in_turn(s, tree, b"s%d.%%d@plain.example" % n, b"K127.0.29.90 accepted message.", count=2)
            records = sink.wait_for(lambda r: r["transaction_count"] == 2 * n)
            assert records["connections_opened"] == n, (name, records["connections_opened"])
            assert sink.wait_for(lambda r: r["quits"] == n - 1)["open_now"] == 1  # the one cached now
        assert s.finish()[0] == 0
        records = sink.wait_for(lambda r: r["open_now"] == 0)
    assert records["quits"] == 4
    connections = [t["connection"] for t in records["transactions"]]
    assert connections == sorted(connections) and len(set(connections)) == 4  # two deliveries on each


def test_a_record_carries_the_session_it_was_opened_with():
    session = conncache.session_of(b"helo.example", 587, (b"user", b"password"))
    record = conncache.Record(b"relay:[127.0.0.1]:587", b"127.0.0.1", 5.5, 2, {b"SIZE": [b"10"]}, session)
    assert conncache.decode(conncache.encode(record)) == record
    assert b"password" not in conncache.encode(record)  # the user names the session; no secret travels
    assert len({conncache.session_of(*a) for a in [(b"a", 25, None), (b"b", 25, None), (b"a", 26, None),
                                                   (b"a", 25, (b"u", b"p")), (b"a", 25, (b"v", b"p"))]}) == 5
