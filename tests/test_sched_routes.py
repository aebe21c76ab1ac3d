"""Destinations as smtproutes next hops and exponential backoff under control/scheduler qmgr (issue 19): two
domains relayed to one host share one concurrency window; a deferred remote message is tried again after
minimalbackofftime..maximalbackofftime (Postfix's backoff), not after qmail's schedule (about 400 s)."""

import time

from hypothesis import given, strategies as st

import smtpsim
from conftest import queue_message
from mailsystem import MailSystem, make_system_tree
from smtpsim import Simulator

from pyqmail.lib.remote.remoteroute import parse_routes
from pyqmail.lib.send.destinations import destination_of, local_user_of

MSG = b"Subject: routes\nMessage-ID: <routes@x>\n\nA line.\n"


def test_destination_of_follows_smtproutes_as_qmail_remote_does():
    routes = parse_routes([b"a.example:[127.0.0.9]:2525", b".b.example:Relay.Example", b"c.example:",
                           b"d.example::26"])
    assert destination_of(b"x@A.Example", routes) == "[127.0.0.9]:2525"
    assert destination_of(b"x@sub.b.example", routes) == "relay.example:25"
    assert destination_of(b"x@b.example", routes) == "b.example"  # `.b.example` is for subdomains only
    assert destination_of(b"x@c.example", routes) == "c.example"  # no relay: the MX, so the domain
    assert destination_of(b"x@d.example", routes) == "d.example"
    assert destination_of(b"x@e.example", routes) == "e.example"
    assert destination_of(b"x@e.example", parse_routes([b":smarthost.example"])) == "smarthost.example:25"
    assert destination_of(b"x@E.example") == "e.example"


@given(st.binary(max_size=40), st.binary(max_size=20))
def test_destination_and_user_are_total(local, domain):
    routes = parse_routes([b"a.example:[127.0.0.9]:2525", b":relay.example"])
    assert isinstance(destination_of(local + b"@" + domain, routes), str)
    assert isinstance(destination_of(local + b"@" + domain), str)
    user = local_user_of(local + b"@" + domain)
    assert b"-" not in user.encode("latin-1")
    assert user.encode("latin-1") == user.encode("latin-1").lower()  # (ASCII letters, as qmail-lspawn)


def test_domains_relayed_to_one_host_share_its_window(procs, world_tmp):
    tree = make_system_tree(world_tmp / "shared")
    for name, value in (("scheduler", "qmgr"), ("qmgrinitialconcurrency", 2), ("qmgrconcurrencylimit", 2)):
        (tree / "control" / name).write_bytes(b"%s\n" % str(value).encode())
    rcpts = [b"u%d@%s.example" % (i, b"ab"[i % 2:i % 2 + 1]) for i in range(16)]
    for r in rcpts:
        assert queue_message(tree, MSG, b"Fs@s.example\0T" + r + b"\0\0") == 0
    with Simulator([("a.example", smtpsim.slow_data(0.3))], prefix="127.0.27.", first=10) as sim:
        sink = sim.sink("a.example")
        (tree / "control" / "smtproutes").write_bytes(b"a.example:[%s]:%d\nb.example:[%s]:%d\n" % (
            sink.host.encode(), sink.port, sink.host.encode(), sink.port))
        system = MailSystem(procs, tree)
        records = sink.wait_for(lambda r: r["transaction_count"] == len(rcpts), timeout=60)
        log = system.wait_log(b"end msg ", count=len(rcpts))
        assert system.stop() == 0
    # one window of 2 for the relay (a QUIT may overlap the next connect): per domain it would be 4
    assert records["max_concurrent"] <= 3
    assert b"status: local 0/10 remote 3/" not in log and b"remote 4/" not in log


def test_a_deferred_remote_message_is_retried_after_the_backoff(procs, world_tmp):
    tree = make_system_tree(world_tmp / "backoff")
    for name, value in (("scheduler", "qmgr"), ("minimalbackofftime", 3), ("maximalbackofftime", 3)):
        (tree / "control" / name).write_bytes(b"%s\n" % str(value).encode())
    assert queue_message(tree, MSG, b"Fs@s.example\0Tlater@t.example\0\0") == 0
    with Simulator([("t.example", smtpsim.rcpt_codes({"later@*": 451}))], prefix="127.0.27.", first=20) as sim:
        sim.write_routes(tree)
        system = MailSystem(procs, tree)
        system.wait_log(b"deferral: ", timeout=30)
        first = time.time()
        system.wait_log(b"deferral: ", count=3, timeout=30)  # no ALRM: qmail's schedule would wait ~400 s
        elapsed = time.time() - first
        assert system.stop() == 0
    assert 4 <= elapsed < 20  # two backoffs of 3 s each (and the loop's 1 s fuzz), not qmail's schedule
