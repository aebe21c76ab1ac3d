"""Many recipients per delivery, end to end (issue 19): a real qmail-send + qmail-rspawn + qmail-remote started by
qmail-start sends to the destination simulator (tests/smtpsim.py, smtproutes written into the tree). With
control/scheduler `qmgr`, a message's recipients at one domain go in one SMTP transaction, up to
qmgrrecipientlimit; the log keeps one starting line and one result line per recipient; refused recipients are
deferred or bounced each on its own. Without control/scheduler, qmail's one recipient per run stays."""

import math
import re
import signal

import smtpsim
from conftest import queue_message
from mailsystem import MailSystem, make_system_tree
from smtpsim import Simulator

MSG = b"Subject: batch\nMessage-ID: <batch@x>\n\nOne message, many recipients.\n"
DOMAINS = ("a.example", "b.example", "c.example")
STARTING = re.compile(rb"starting delivery (\d+): msg (\d+) to remote (\S+)\n")
RESULT = re.compile(rb"delivery (\d+): (success|failure|deferral): (\S*)\n")


def setup(world_tmp, name, scheduler=b"qmgr\n", limit=None):
    """A system tree with control/scheduler (None: absent) and qmgrrecipientlimit."""
    tree = make_system_tree(world_tmp / name)
    if scheduler is not None:
        (tree / "control" / "scheduler").write_bytes(scheduler)
    if limit is not None:
        (tree / "control" / "qmgrrecipientlimit").write_bytes(b"%d\n" % limit)
    return tree


def queue(tree, recipients, sender=b"s@b.example"):
    """Queue MSG for recipients with the real qmail-queue."""
    envelope = b"F" + sender + b"\0" + b"".join(b"T" + r + b"\0" for r in recipients) + b"\0"
    assert queue_message(tree, MSG, envelope) == 0


def deliveries(log):
    """Return {delivery number: (recipient, result word, text)} from the log, checking each number once."""
    started = {}
    for d, _, recip in STARTING.findall(log):
        assert d not in started
        started[d] = recip
    results = {}
    for d, word, text in RESULT.findall(log):
        assert d in started and d not in results
        results[d] = (started[d], word, text)
    return results


def recipients(n_per_domain):
    """n recipients at each of the three domains, interleaved as a list would be."""
    return [b"u%d@%s" % (i, d.encode()) for i in range(n_per_domain) for d in DOMAINS]


def run_and_check(procs, tree, sim, n_per_domain, limit):
    """Queue one message, let the system deliver it, check the sinks and the log."""
    rcpts = recipients(n_per_domain)
    queue(tree, rcpts)
    system = MailSystem(procs, tree)
    log = system.wait_log(b"end msg ")
    assert system.stop() == 0
    per_run = math.ceil(n_per_domain / limit)
    for domain in DOMAINS:
        records = sim.sink(domain).wait_for(lambda r: r["connections_closed"] == r["connections_opened"])
        assert records["errors"] == []
        assert records["transaction_count"] == per_run
        got = [r for t in records["transactions"] for r in t["recipients"]]
        assert sorted(got) == sorted(r.decode() for r in rcpts if r.endswith(domain.encode()))
        assert all(n <= limit for n in records["recipients_per_transaction"])
    done = deliveries(log)
    assert len(done) == len(rcpts)
    assert sorted(r for r, _, _ in done.values()) == sorted(rcpts)
    assert all(word == b"success" and b"accepted_message" in text for _, word, text in done.values())
    assert log.count(b"delivery ") - log.count(b"starting delivery ") == len(rcpts)  # one result line each
    return log


def test_qmgr_sends_120_recipients_over_3_domains_in_one_transaction_each(procs, world_tmp):
    tree = setup(world_tmp, "q120")
    with Simulator([(d, smtpsim.healthy()) for d in DOMAINS], prefix="127.0.21.") as sim:
        sim.write_routes(tree)
        log = run_and_check(procs, tree, sim, 40, 50)
    # the remote channel counts one slot per qmail-remote run: at most three were ever running
    used = [int(m) for m in re.findall(rb"status: local \d+/\d+ remote (\d+)/\d+", log)]
    assert max(used) <= 3


def test_qmgrrecipientlimit_splits_a_domain_into_several_transactions(procs, world_tmp):
    tree = setup(world_tmp, "q15", limit=15)
    with Simulator([(d, smtpsim.healthy()) for d in DOMAINS], prefix="127.0.21.", first=10) as sim:
        sim.write_routes(tree)
        run_and_check(procs, tree, sim, 40, 15)


def test_without_control_scheduler_each_recipient_has_its_own_run(procs, world_tmp):
    tree = setup(world_tmp, "qmail", scheduler=None)
    with Simulator([(d, smtpsim.healthy()) for d in DOMAINS], prefix="127.0.21.", first=20) as sim:
        sim.write_routes(tree)
        run_and_check(procs, tree, sim, 2, 1)


def test_refused_recipients_are_deferred_or_bounced_each_on_its_own(procs, world_tmp):
    tree = setup(world_tmp, "qrefuse")
    busy = {"later": True}  # until switched off, later*@a.example is refused with 451
    behaviour = smtpsim.rcpt_codes({"bad*@a.example": 550,
                                    (lambda r: busy["later"] and r.startswith("later")): 451})
    with Simulator([("a.example", behaviour), ("b.example", smtpsim.healthy())], prefix="127.0.21.", first=30,
                   keep_bodies=True) as sim:
        sim.write_routes(tree)
        rcpts = [b"ok1@a.example", b"bad1@a.example", b"later1@a.example", b"ok2@a.example", b"bad2@a.example"]
        queue(tree, rcpts, sender=b"s@b.example")
        system = MailSystem(procs, tree)
        log = system.wait_log(b"delivery ", count=2 * len(rcpts))
        [t] = sim.sink("a.example").transactions()
        assert t["recipients"] == ["ok1@a.example", "ok2@a.example"]
        done = {r: (word, text) for r, word, text in deliveries(log).values()}
        assert len(done) == len(rcpts)
        assert done[b"ok1@a.example"][0] == done[b"ok2@a.example"][0] == b"success"
        assert done[b"bad1@a.example"][0] == done[b"bad2@a.example"][0] == b"failure"
        assert b"does_not_like_recipient./Remote_host_said:_550" in done[b"bad1@a.example"][1]
        assert done[b"later1@a.example"][0] == b"deferral"
        assert b"Remote_host_said:_451" in done[b"later1@a.example"][1]
        # the deferred recipient is still to do, the others are marked done; bounce/N holds the refused ones
        [remote] = [f.read_bytes() for f in (tree / "queue" / "remote").glob("*/*")]
        assert [r for r in remote.split(b"\0") if r] == [b"Dok1@a.example", b"Dbad1@a.example",
                                                         b"Tlater1@a.example", b"Dok2@a.example", b"Dbad2@a.example"]
        [pending] = [f.read_bytes() for f in (tree / "queue" / "bounce").iterdir()]
        assert pending.startswith(b"<bad1@a.example>:\n") and b"<bad2@a.example>:\n" in pending
        assert b"later1" not in pending and b"bounce msg " not in log
        # the retry (ALRM) delivers the deferred one alone; the message is done and its bounce goes out
        busy["later"] = False
        system.signal(signal.SIGALRM)
        log = system.wait_log(b"end msg ", count=2)
        sim.sink("b.example").wait_for(lambda r: r["transaction_count"] == 1)
        assert system.stop() == 0
        a_transactions = sim.sink("a.example").transactions()
        b_transactions = sim.sink("b.example").transactions()
    assert [t["recipients"] for t in a_transactions] == [["ok1@a.example", "ok2@a.example"], ["later1@a.example"]]
    [bounce] = b_transactions
    assert bounce["sender"] == "" and bounce["recipients"] == ["s@b.example"]
    body = bounce["body"]
    assert b"<bad1@a.example>:" in body and b"<bad2@a.example>:" in body
    assert b"<later1@a.example>" not in body and b"<ok1@a.example>" not in body
    results = [(r, word) for r, word, _ in deliveries(log).values()]
    assert results.count((b"later1@a.example", b"success")) == 1 and (b"s@b.example", b"success") in results


def test_hup_rereads_the_scheduler_choice(procs, world_tmp):
    tree = setup(world_tmp, "qhup", scheduler=None)
    with Simulator([("a.example", smtpsim.healthy())], prefix="127.0.21.", first=40) as sim:
        sim.write_routes(tree)
        system = MailSystem(procs, tree)
        queue(tree, [b"one%d@a.example" % i for i in range(3)])
        system.wait_log(b"end msg ")
        (tree / "control" / "scheduler").write_bytes(b"qmgr\n")
        system.signal(signal.SIGHUP)  # handled before the next message's pass, which needs several turns
        queue(tree, [b"two%d@a.example" % i for i in range(3)])
        system.wait_log(b"end msg ", count=2)
        assert system.stop() == 0
        records = sim.sink("a.example").wait_for(lambda r: r["transaction_count"] == 4)
    assert records["recipients_per_transaction"] == [1, 1, 1, 3]
