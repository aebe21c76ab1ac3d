"""qmgr's concurrency window and dead destinations in qmail-send's remote channel (issue 19), end to end: a real
qmail-start/qmail-send/qmail-rspawn/qmail-remote sends to the destination simulator (tests/smtpsim.py) with
control/scheduler `qmgr` and small qmgr* values. Slow start shows in the sink's concurrency timeline and in
qmail-send's status lines, a mute destination costs one cohort of connections before it is dead (its recipients
are deferred at once, it comes back after minimalbackofftime), a sink that greets with 421 above k connections
keeps the window near k. The report classification and the destination book-keeping are checked as properties."""

import re
import signal

from hypothesis import given, settings, strategies as st

import smtpsim
from conftest import queue_message
from mailsystem import MailSystem, make_system_tree
from smtpsim import Simulator

from pyqmail.lib.send import destinations, qmgr

MSG = b"Subject: window\nMessage-ID: <window@x>\n\nOne of many.\n"
STATUS = re.compile(rb"status: local \d+/\d+ remote (\d+)/\d+")
STARTING = re.compile(rb"starting delivery (\d+): msg \d+ to remote (\S+)\n")
RESULT = re.compile(rb"delivery (\d+): (success|failure|deferral): (\S*)\n")


def setup(world_tmp, name, **controls):
    """A system tree with control/scheduler qmgr and the given control files (name: value)."""
    tree = make_system_tree(world_tmp / name)
    (tree / "control" / "scheduler").write_bytes(b"qmgr\n")
    for key, value in controls.items():
        (tree / "control" / key).write_bytes(b"%s\n" % str(value).encode())
    return tree


def queue_each(tree, recipients, sender=b"s@b.example"):
    """Queue one message per recipient with the real qmail-queue."""
    for r in recipients:
        assert queue_message(tree, MSG, b"F" + sender + b"\0T" + r + b"\0\0") == 0


def results(log):
    """Return [(recipient, word, text)] for every finished delivery in the log."""
    started = dict(STARTING.findall(log))
    return [(started[d], word, text) for d, word, text in RESULT.findall(log)]


def in_progress(transactions):
    """The sink's count of deliveries in progress after each event, a delivery lasting from its connection's
    start to the sink's 250 for its message (one message per connection). A slot's next qmail-remote connects
    only after that 250 reached the one before, so this never exceeds qmail-send's concurrency; open sockets
    can, for a moment: qmail-remote reports once QUIT is sent, before the sink has read it."""
    events = sorted([(t["connected"], 1) for t in transactions] + [(t["time"], -1) for t in transactions])
    counts, n = [], 0
    for _, step in events:  # at one instant an end (-1) sorts before a start
        n += step
        counts.append(n)
    return counts


def used_before_first_result(log):
    """Return the remote slots in use in each status line written before the first delivery result."""
    first = RESULT.search(log)
    return [int(n) for n in STATUS.findall(log[:first.start()])]


def test_slow_start_grows_from_the_initial_window_up_to_the_limit(procs, world_tmp):
    # smtpconnectioncache 0: the sink's connection timeline shows the runs only when each has its own connection
    tree = setup(world_tmp, "slow", qmgrinitialconcurrency=2, qmgrconcurrencylimit=5, qmgrdebug=1,
                 smtpconnectioncache=0)
    rcpts = [b"u%d@a.example" % i for i in range(24)]
    queue_each(tree, rcpts)
    with Simulator([("a.example", smtpsim.slow_data(0.5))], prefix="127.0.22.", first=10) as sim:
        sim.write_routes(tree)
        system = MailSystem(procs, tree)
        log = system.wait_log(b"end msg ", count=len(rcpts), timeout=60)
        assert system.stop() == 0
        records = sim.sink("a.example").wait_for(lambda r: r["connections_closed"] == r["connections_opened"])
    assert records["transaction_count"] == len(rcpts) and records["errors"] == []
    assert all(word == b"success" for _, word, _ in results(log))
    # qmail-send: two runs at first, never more than five
    assert max(used_before_first_result(log)) == 2
    used = [int(n) for n in STATUS.findall(log)]
    assert max(used) == 5
    # the sink: deliveries in progress climb to 2 before the first one ends, later to 5 and never above
    timeline = in_progress(records["transactions"])
    first_drop = next(i for i in range(1, len(timeline)) if timeline[i] < timeline[i - 1])
    assert max(timeline[:first_drop]) == 2
    assert max(timeline) == 5
    # control/qmgrdebug: each window change logged, one step at a time from 2 up to the limit
    windows = [int(w) for w in re.findall(rb"destination \S+ window (\d+) busy \d+\n", log)]
    assert windows == [3, 4, 5]


def test_a_mute_destination_costs_one_cohort_then_is_dead_while_others_are_delivered(procs, world_tmp):
    tree = setup(world_tmp, "mute", qmgrinitialconcurrency=2, timeoutremote=2, minimalbackofftime=4)
    mute = [b"m%d@m.example" % i for i in range(8)]
    healthy = [b"h%d@h.example" % i for i in range(8)]
    queue_each(tree, [r for pair in zip(mute, healthy) for r in pair])
    with Simulator([("m.example", smtpsim.mute()), ("h.example", smtpsim.slow_data(0.2))], prefix="127.0.22.",
                   first=20) as sim:
        sim.write_routes(tree)
        system = MailSystem(procs, tree)
        log = system.wait_log(b"delivery ", count=2 * (len(mute) + len(healthy)), timeout=60)
        h = sim.sink("h.example").wait_for(lambda r: r["transaction_count"] == len(healthy))
        m = sim.sink("m.example").snapshot()
        assert m["connections_opened"] <= 2  # one cohort: the initial window
        # the destination is the smtproutes next hop the simulator's route names
        hop = b"[%s]:%d" % (sim.sink("m.example").host.encode(), sim.sink("m.example").port)
        dead = re.findall(rb"warning: destination " + re.escape(hop) + rb" is dead: (\S+)\n", log)
        assert dead == [b"Connected_to_127.0.22.20_but_connection_died._(#4.4.2)/"]
        done = results(log)
        assert sorted(r for r, word, _ in done if word == b"success") == sorted(healthy)
        deferred = [(r, text) for r, word, text in done if word == b"deferral"]
        assert sorted(r for r, _ in deferred) == sorted(mute)
        assert all(text == dead[0] for _, text in deferred)
        # the recipients behind the dead destination were deferred without a connection of their own
        assert len(deferred) - m["connections_opened"] >= len(mute) - 2
        # minimalbackofftime later it is alive again, and a retry (ALRM) tries it once more
        log = system.wait_log(b"destination %s is alive again\n" % hop, timeout=30)
        assert log.index(b"is alive again") > log.index(b"is dead")
        opened = m["connections_opened"]
        system.signal(signal.SIGALRM)
        sim.sink("m.example").wait_for(lambda r: r["connections_opened"] > opened, timeout=20)
        assert system.stop() == 0
    assert h["errors"] == []
    # the mute messages are still to do (deferred, never bounced)
    remote = [f.read_bytes() for f in (tree / "queue" / "remote").glob("*/*")]
    assert len(remote) == len(mute) and all(r.startswith(b"Tm") for r in remote)


def test_too_many_connections_keeps_the_window_near_k(procs, world_tmp):
    k = 3
    tree = setup(world_tmp, "many", qmgrinitialconcurrency=2, qmgrconcurrencylimit=10,
                 qmgrpositivefeedback="1/concurrency")
    rcpts = [b"t%d@t.example" % i for i in range(24)]
    queue_each(tree, rcpts)
    with Simulator([("t.example", smtpsim.too_many(k) + smtpsim.slow_data(0.4))], prefix="127.0.22.",
                   first=30) as sim:
        sim.write_routes(tree)
        system = MailSystem(procs, tree)
        log = system.wait_log(b"delivery ", count=2 * len(rcpts), timeout=60)
        sink = sim.sink("t.example")
        first = sink.wait_for(lambda r: r["connections_closed"] == r["connections_opened"])
        # growth stopped near k: qmail-send never ran more than k + 1 at once (the limit is 10)
        used = [int(n) for n in STATUS.findall(log)]
        assert k <= max(used) <= k + 1
        assert first["max_concurrent"] <= k
        refused = [text for _, word, text in results(log) if word == b"deferral"]
        assert len(refused) == first["refused_421"] >= 1
        assert all(b"but_greeting_failed./Remote_host_said:_421" in text for text in refused)
        assert len(refused) <= len(rcpts) // 3  # not one refusal per delivery: the window came down
        # the refused ones are retried (ALRM) until all are in; no destination was ever made dead by 421s
        for _ in range(10):
            done = results(system.log())
            if sum(word == b"success" for _, word, _ in done) == len(rcpts):
                break
            pending = len(rcpts) - sum(word == b"success" for _, word, _ in done)
            system.signal(signal.SIGALRM)
            smtpsim.wait_until(lambda: len(results(system.log())), lambda n: n >= len(done) + pending, 30)
        final = sink.wait_for(lambda r: r["transaction_count"] == len(rcpts), timeout=30)
        assert system.stop() == 0
    assert final["transaction_count"] == len(rcpts)
    assert b"is dead" not in system.log()


# --- properties of the pure parts -------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_classify_takes_any_report(report):
    assert destinations.classify(report) in (destinations.NONE, destinations.NEGATIVE, destinations.TOO_MANY,
                                             destinations.POSITIVE)


def test_classify_examples():
    c = destinations.classify
    assert c(b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n") == destinations.NEGATIVE
    assert c(b"ZConnected to 1.2.3.4 but greeting failed.\nRemote host said: 554 go away\n") == destinations.NEGATIVE
    assert c(b"ZConnected to 1.2.3.4 but greeting failed.\nRemote host said: 421 busy\n") == destinations.TOO_MANY
    assert c(b"ZConnected to 1.2.3.4 but connection died. (#4.4.2)\n") == destinations.NEGATIVE
    assert c(b"ZConnected to 1.2.3.4 but connection died. Possible duplicate! (#4.4.2)\n") == destinations.POSITIVE
    assert c(b"K1.2.3.4 accepted message.\nRemote host said: 250 ok\n") == destinations.POSITIVE
    assert c(b"D1.2.3.4 does not like recipient.\nRemote host said: 550 no\n") == destinations.POSITIVE
    assert c(b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n") == destinations.NONE
    assert c(b"") == destinations.NONE


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from("aaabc"), st.sampled_from(["add", "start", "done"]),
                          st.sampled_from([destinations.NONE, destinations.NEGATIVE, destinations.TOO_MANY,
                                           destinations.POSITIVE])), max_size=80),
       st.integers(1, 4), st.integers(1, 6))
def test_destinations_never_start_beyond_the_window(ops, initial, limit):
    """Whatever arrives and however runs end: a start only below the window, never above the limit, a dead
    destination holds nothing waiting, the waiting count adds up."""
    dests = destinations.Destinations(qmgr.WindowPolicy(initial=initial, limit=limit, minimal_backoff=10))
    running = []
    now = 0
    for name, op, kind in ops:
        now += 1
        if op == "add":
            if dests.is_dead(name):
                continue
            dests.add(destinations.Entry(object(), name, [(now, b"r@" + name.encode())]))
        elif op == "start":
            picked = dests.pick()
            if picked is None:
                continue
            queue = dests.queues[picked]
            assert queue.busy < queue.window <= limit
            dests.pop(picked)
            dests.started(picked)
            running.append(picked)
        elif running:
            picked = running.pop(0)
            if dests.feedback(picked, kind, b"Zreason", now) == destinations.DIED:
                dests.drain(picked)  # (the channel defers them)
                assert dests.is_dead(picked) and dests.reason(picked) == b"Zreason"
        for n, q in dests.queues.items():
            assert q.window <= limit
            assert not (q.is_dead() and dests.live[n])
            assert dests.live[n] == sum(not e.taken for e in dests.waiting[n])
        assert dests.count == sum(len(e.items) for w in dests.waiting.values() for e in w if not e.taken)
        dests.revive_due(now)
