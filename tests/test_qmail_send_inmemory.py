"""qmail-send's messages kept in memory (lib/send/inmemory): local-only mail (and under qmgr/oqmgr remote-only
mail) delivered with todo/N as its only record, spilled to qmail's info/N and local/N (remote/N) on a deferral,
a failure or a TERM after some deliveries."""

import re
import signal
import time

import pytest

from conftest import queue_message
from pyqmail.lib.send.inmemory import KEEP_MAX
from pyqmail.lib.send.sendmessages import TODO_BATCH
from test_qmail_send import make_backlog, scripted, start_send, wait_for


def noting(tree, *reports):
    """Return the argv of a scripted spawner that notes the queue files of each delivery, and the notes."""
    notes = tree / "notes"
    return scripted("--notes", str(tree / "queue"), str(notes), *reports), notes


def envelope(*recipients):
    """A qmail-queue envelope from sender@example.org to recipients."""
    return b"Fsender@example.org\0" + b"".join(b"T" + r + b"\0" for r in recipients) + b"\0"


def message_id(log):
    """The id in the log's `new msg` line."""
    return int(re.search(rb"new msg (\d+)\n", log).group(1))


def queue_files(tree, n):
    """The queue's files for message n that exist, as "dir" names."""
    q = tree / "queue"
    paths = {"mess": q / "mess" / str(n % 23) / str(n), "intd": q / "intd" / str(n), "todo": q / "todo" / str(n),
             "info": q / "info" / str(n % 23) / str(n), "local": q / "local" / str(n % 23) / str(n),
             "remote": q / "remote" / str(n % 23) / str(n), "bounce": q / "bounce" / str(n)}
    return {name for name, p in paths.items() if p.exists()}


def wait_gone(tree, n, timeout=30):
    """Wait until message n has no file left in the queue."""
    deadline = time.time() + timeout
    while queue_files(tree, n) and time.time() < deadline:
        time.sleep(0.02)
    assert not queue_files(tree, n)


def test_a_local_message_is_delivered_with_todo_as_its_only_record(procs, tree):
    argv, notes = noting(tree)
    proc, log = start_send(procs, tree, lspawn=argv)
    assert queue_message(tree, b"Subject: x\n\nx\n", envelope(b"joe@test.example", b"ann@test.example")) == 0
    data = wait_for(log, b"end msg ")
    n = message_id(data)
    # no info/N or local/N was ever written: todo/N stood for the message while it was delivered
    assert notes.read_text() == "joe@test.example todo\nann@test.example todo\n"
    wait_gone(tree, n)
    lines = [re.sub(rb"\d+", b"#", line) for line in data.splitlines() if not line.startswith(b"status:")]
    # qmail's log lines, as for any message (the deliveries may interleave)
    assert lines[:2] == [b"new msg #", b"info msg #: bytes # from <sender@example.org> qp # uid #"]
    assert lines[-1] == b"end msg #"
    assert sorted(lines[2:-1]) == [b"delivery #: success: ok", b"delivery #: success: ok",
                                   b"starting delivery #: msg # to local ann@test.example",
                                   b"starting delivery #: msg # to local joe@test.example"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


@pytest.mark.parametrize("recipients", [
    [b"a@remote.example", b"joe@test.example"],  # a remote one: qmail's way
    [b"u%d@test.example" % i for i in range(17)],  # more than KEEP_RCPTS local ones
])
def test_other_messages_go_through_info_and_channel_files_as_in_qmail(procs, tree, recipients):
    argv, notes = noting(tree)
    proc, log = start_send(procs, tree, lspawn=argv, rspawn=argv)
    assert queue_message(tree, b"\n", envelope(*recipients)) == 0
    wait_for(log, b"end msg ")
    seen = dict(line.split(" ") for line in notes.read_text().splitlines())
    assert sorted(seen) == sorted(r.decode() for r in recipients)
    for rcpt, files in seen.items():  # todo/N may be gone already: it goes once the files are fsynced
        channel = "remote" if rcpt.endswith("remote.example") else "local"
        assert {"info", channel} <= set(files.split(",")), (rcpt, files)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_a_deferral_spills_the_message_to_qmails_files(procs, tree):
    argv, notes = noting(tree, "#Kfine\\0", "#Zlater\\0")
    (tree / "control" / "concurrencylocal").write_text("1\n")
    before = int(time.time())
    proc, log = start_send(procs, tree, lspawn=argv)
    assert queue_message(tree, b"\n", envelope(b"joe@test.example", b"ann@test.example")) == 0
    data = wait_for(log, b"deferral: later\n")
    n = message_id(data)
    q = tree / "queue"
    deadline = time.time() + 30
    while "todo" in queue_files(tree, n) and time.time() < deadline:
        time.sleep(0.02)
    assert queue_files(tree, n) == {"mess", "info", "local"}
    assert (q / "info" / str(n % 23) / str(n)).read_bytes() == b"Fsender@example.org\0"
    assert (q / "local" / str(n % 23) / str(n)).read_bytes() == b"Djoe@test.example\0Tann@test.example\0"
    assert before <= (q / "info" / str(n % 23) / str(n)).stat().st_mtime <= time.time()  # the birth
    assert b"end msg" not in log.read_bytes()
    proc.send_signal(signal.SIGALRM)  # retry now: ann is delivered from local/N, joe is not again
    data = wait_for(log, b"end msg %d\n" % n)
    assert notes.read_text() == "joe@test.example todo\nann@test.example todo\nann@test.example info,local\n"
    wait_gone(tree, n)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_a_failure_spills_and_bounces_as_qmail_does(procs, tree):
    argv, notes = noting(tree, "#Dno such user\\0")
    proc, log = start_send(procs, tree, lspawn=argv, rspawn=scripted())
    assert queue_message(tree, b"Subject: x\n\nx\n", envelope(b"nobody@test.example")) == 0
    data = wait_for(log, b"end msg ", count=1)
    n = message_id(data)
    assert b"delivery 1: failure: no_such_user\n" in data
    assert re.search(rb"bounce msg %d qp \d+\n" % n, data)
    data = wait_for(log, b"starting delivery 2: msg ")  # the bounce, to the remote sender
    assert b"to remote sender@example.org" in data
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_term_after_some_deliveries_spills_so_nothing_is_delivered_twice(procs, tree):
    (tree / "control" / "concurrencylocal").write_text("1\n")
    argv, notes = noting(tree, "#Kone\\0", "sleep:1", "#Ktwo\\0")
    proc, log = start_send(procs, tree, lspawn=argv)
    rcpts = [b"a@test.example", b"b@test.example", b"c@test.example"]
    assert queue_message(tree, b"\n", envelope(*rcpts)) == 0
    data = wait_for(log, b"starting delivery 2:")
    n = message_id(data)
    proc.send_signal(signal.SIGTERM)  # delivery 2 is running: qmail-send waits for it, starts no third
    assert proc.wait(10) == 0
    assert queue_files(tree, n) == {"mess", "info", "local"}
    q = tree / "queue"
    assert (q / "local" / str(n % 23) / str(n)).read_bytes() == b"Da@test.example\0Db@test.example\0Tc@test.example\0"
    proc, log = start_send(procs, tree, lspawn=argv)
    wait_for(log, b"end msg %d\n" % n)
    assert notes.read_text().splitlines()[-1] == "c@test.example info,local"
    assert [line.split(" ")[0] for line in notes.read_text().splitlines()] == [r.decode() for r in rcpts]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_term_before_any_delivery_leaves_todo_for_the_next_start(procs, tree):
    (tree / "control" / "concurrencylocal").write_text("1\n")
    argv, notes = noting(tree, "sleep:1", "#Kone\\0")
    proc, log = start_send(procs, tree, lspawn=argv)
    assert queue_message(tree, b"\n", envelope(b"a@test.example")) == 0
    first = message_id(wait_for(log, b"starting delivery 1:"))
    assert queue_message(tree, b"\n", envelope(b"b@test.example")) == 0
    data = wait_for(log, b"new msg ", count=2)
    second = int(re.findall(rb"new msg (\d+)\n", data)[1])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert queue_files(tree, second) == {"mess", "intd", "todo"}  # as qmail-queue left it
    assert not queue_files(tree, first)
    assert b"warning" not in log.read_bytes()
    proc, log = start_send(procs, tree, lspawn=noting(tree)[0])
    wait_for(log, b"end msg %d\n" % second)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_a_backlog_beyond_the_memory_waits_in_todo_while_the_kept_messages_are_delivered(procs, tree):
    """With more local messages in todo/ than may be kept in memory, the others wait there while the kept ones
    are delivered, and are kept in turn, instead of being preprocessed into info/N and local/N."""
    make_backlog(tree / "queue", KEEP_MAX + 500)
    argv, notes = noting(tree, *["sleep:0.002", "#Kok\\0"] * (KEEP_MAX + 500))  # slower than the intake
    proc, log = start_send(procs, tree, lspawn=argv)
    wait_for(log, b"end msg ", count=KEEP_MAX + 500, timeout=180)
    seen = notes.read_text().splitlines()
    assert len(seen) == KEEP_MAX + 500
    preprocessed = [line for line in seen if "info" in line]
    # qmail's way for the first batches, while no kept message has been delivered yet, at most
    assert len(preprocessed) <= 2 * TODO_BATCH, len(preprocessed)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


# ---- remote-only messages, kept in memory under control/scheduler qmgr or oqmgr

def remote_system(procs, world_tmp, scheduler, behaviour):
    """A system tree with control/scheduler, routed to one smtpsim sink for far.example; return (sim, tree, system)."""
    import smtpsim
    from mailsystem import MailSystem, make_system_tree
    sim = smtpsim.Simulator([("far.example", behaviour)], prefix="127.0.4.").start()
    tree = make_system_tree(world_tmp / ("sys-%s" % scheduler))
    if scheduler is not None:
        (tree / "control" / "scheduler").write_text(scheduler + "\n")
    sim.write_routes(tree)
    return sim, tree, MailSystem(procs, tree)


HOLD = 3.0  # seconds the sink holds the reply to the final dot: the queue files are listed meanwhile


def files_during_delivery(sim, tree, log_wait):
    """Queue one message to far.example; return (its number, its queue files while the sink holds its DATA)."""
    assert queue_message(tree, b"Subject: far\n\nx\n", envelope(b"a@far.example", b"b@far.example")) == 0
    log = log_wait(b"starting delivery")
    n = message_id(log)
    deadline = time.time() + 30
    while not sim.records()["far.example"]["connections_opened"] and time.time() < deadline:
        time.sleep(0.02)
    files = queue_files(tree, n)
    # the sink counts the transaction just before its 250: none counted yet, so the listing saw the delivery
    # in progress (a test process slower than HOLD would otherwise list what is left after it)
    assert sim.records()["far.example"]["transaction_count"] == 0, "the files were listed after the delivery"
    return n, files


@pytest.mark.parametrize("scheduler", ["qmgr", "oqmgr"])
def test_a_remote_message_is_delivered_with_todo_as_its_only_record_under_qmgr(procs, world_tmp, scheduler):
    import smtpsim
    sim, tree, system = remote_system(procs, world_tmp, scheduler, smtpsim.slow_data(HOLD))
    try:
        n, files = files_during_delivery(sim, tree, system.wait_log)
        assert files == {"mess", "intd", "todo"}  # no info/N, no remote/N (intd/N: todo/N's other name)
        log = system.wait_log(b"end msg %d\n" % n)
        assert log.count(b": success: ") == 2
        wait_gone(tree, n)
        assert sorted(t["recipients"] for t in sim.records()["far.example"]["transactions"]) == [
            ["a@far.example", "b@far.example"]]
        assert system.stop() == 0
    finally:
        sim.stop()


def test_under_qmails_scheduler_a_remote_message_goes_through_info_and_remote(procs, world_tmp):
    import smtpsim
    sim, tree, system = remote_system(procs, world_tmp, None, smtpsim.slow_data(HOLD))
    try:
        n, files = files_during_delivery(sim, tree, system.wait_log)
        assert {"mess", "info", "remote"} <= files
        system.wait_log(b"end msg %d\n" % n)
        assert system.stop() == 0
    finally:
        sim.stop()


def test_a_remote_deferral_spills_the_message_to_info_and_remote(procs, world_tmp):
    import smtpsim
    sim, tree, system = remote_system(procs, world_tmp, "qmgr", smtpsim.rcpt_codes({"b@far.example": 451}))
    try:
        assert queue_message(tree, b"Subject: far\n\nx\n", envelope(b"a@far.example", b"b@far.example")) == 0
        log = system.wait_log(b": deferral: ")
        n = message_id(log)
        deadline = time.time() + 30
        while "todo" in queue_files(tree, n) and time.time() < deadline:
            time.sleep(0.02)
        assert queue_files(tree, n) == {"mess", "info", "remote"}
        q = tree / "queue"
        assert (q / "remote" / str(n % 23) / str(n)).read_bytes() == b"Da@far.example\0Tb@far.example\0"
        assert b"end msg" not in system.log()
        assert [t["recipients"] for t in sim.records()["far.example"]["transactions"]] == [["a@far.example"]]
        assert system.stop() == 0
    finally:
        sim.stop()


def test_keepable_takes_one_channel_only_and_remote_only_when_allowed():
    from hypothesis import given, strategies as st
    from pyqmail.lib.send import todo

    @given(st.dictionaries(st.sampled_from(["local", "remote"]), st.integers(0, 20), min_size=1),
           st.booleans(), st.booleans(), st.booleans())
    def check(counts, remote, failure, has_sender):
        chan = {c: b"Tx@y\0" * k for c, k in counts.items()}
        plan = todo.Plan(b"Fs@x\0" if has_sender else b"", chan, [], b"warning\n" if failure else None)
        got = todo.keepable(plan, remote)
        [(channel, k)] = counts.items() if len(counts) == 1 else [(None, 0)]
        ok = (channel is not None and not failure and has_sender and k <= todo.KEEP_RCPTS
              and (channel == "local" or remote))
        assert got == (channel if ok else None)
    check()
