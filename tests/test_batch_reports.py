"""Batches on qmail-rspawn's pipe (issue 19, many recipients per delivery): the batch request's reader and
encoder, the splitting of one qmail-remote run's r/h/s and K/Z/D reports into one report per recipient
(property tests against single-recipient runs), and qmail-rspawn serving a batch with a stand-in qmail-remote."""

import os

from hypothesis import given, strategies as st

from conftest import program, qenv
from test_spawners import MSG, Spawner, queued
from conftest import queue_message as conftest_queue_message

from pyqmail.lib.spawn import spawnproto
from pyqmail.lib.spawn.spawnproto import (BATCH_CUT, BATCH_FLAG, BATCH_MAX, OUT_OF_MEMORY, Batch, Request,
                                          RequestReader, encode_batch, encode_request, remote_batch_reports,
                                          remote_report)

no_nul = st.binary(max_size=30).filter(lambda b: b"\0" not in b)
address = st.binary(min_size=1, max_size=30).filter(lambda b: b"\0" not in b)
text = st.binary(max_size=40).filter(lambda b: b"\0" not in b)


def exited(code):
    """Return the wait status of a process that exited with code."""
    return code << 8


def chunks(data, cuts):
    """Split data at the given positions."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


# ---- the request reader


@given(st.lists(st.one_of(
    st.tuples(st.just("one"), st.integers(0, 127), no_nul, no_nul, no_nul),
    st.tuples(st.just("batch"), st.integers(0, 127), no_nul, no_nul, st.lists(address, min_size=1, max_size=8))),
    max_size=6), st.lists(st.integers(0, 10000), max_size=8))
def test_reader_returns_requests_and_batches_in_order_however_the_bytes_are_cut(items, cuts):
    wire, expected = b"", []
    for kind, delnum, messid, sender, rest in items:
        if kind == "one":
            wire += encode_request(delnum, messid, sender, rest)
            expected.append(Request(delnum, messid, sender, rest, False))
        else:
            wire += encode_batch(delnum, messid, sender, rest)
            expected.append(Batch(delnum, messid, sender, tuple(rest), len(rest), False))
    reader = RequestReader(batch=True)
    got = []
    for piece in chunks(wire, cuts):
        got += reader.feed(piece)
    assert got == expected


@given(st.integers(BATCH_FLAG, 255), no_nul, no_nul, address)
def test_without_batch_a_high_delnum_stays_a_plain_request(delnum, messid, sender, recipient):
    assert RequestReader().feed(encode_request(delnum, messid, sender, recipient)) == [
        Request(delnum, messid, sender, recipient, False)]


def test_a_batch_past_its_bound_is_counted_not_kept():
    recipients = [b"r%d@a.example" % i for i in range(BATCH_MAX + 5)]
    [b] = RequestReader(batch=True).feed(encode_batch(7, b"1/1", b"s@x", recipients))
    assert b.overflow and b.total == BATCH_MAX + 5 and len(b.recipients) == BATCH_MAX and b.delnum == 7


# ---- splitting one run's reports


recipient_report = st.tuples(st.sampled_from([b"r", b"h", b"s"]), text).map(lambda t: t[0] + t[1])
message_report = st.tuples(st.sampled_from([b"K", b"Z", b"D"]), text).map(lambda t: t[0] + t[1])


@given(st.lists(recipient_report, max_size=8), st.integers(0, 3), message_report,
       st.lists(st.tuples(st.sampled_from([b"K", b"Z", b"D", b"x"]), text).map(lambda t: t[0] + t[1]), max_size=2))
def test_each_recipient_gets_what_a_run_for_it_alone_would_give(own, missing, final, after):
    """Recipient i's report is the single-recipient mapping of its own r/h/s report and the message report."""
    count = len(own) + missing  # the run may have ended before the last recipients' RCPTs
    output = b"".join(r + b"\0" for r in own + [final] + after)
    reports = remote_batch_reports(0, output, count)
    rest = b"".join(r + b"\0" for r in [final] + after)
    assert len(reports) == count
    for i, rep in enumerate(reports):
        alone = own[i] + b"\0" + rest if i < len(own) else rest
        assert rep == remote_report(0, alone)
        assert rep[:1] in (b"K", b"Z", b"D")
        if i < len(own) and own[i][:1] == b"h":
            assert rep[:1] == b"D"
        if i < len(own) and own[i][:1] == b"s":
            assert rep[:1] == b"Z"
        if i < len(own) and own[i][:1] == b"r":
            assert rep[:1] == final[:1]


@given(st.binary(max_size=300), st.integers(1, 6), st.sampled_from([0, exited(111), exited(100), 9]))
def test_any_output_gives_one_report_per_recipient(output, count, wstat):
    reports = remote_batch_reports(wstat, output, count)
    assert len(reports) == count and all(r[:1] in (b"K", b"Z", b"D") for r in reports)
    if wstat or not output:
        assert reports == [remote_report(wstat, output)] * count


@given(st.lists(recipient_report, min_size=1, max_size=6), st.integers(0, 5))
def test_a_cut_report_defers_everyone(own, extra):
    output = b"".join(r + b"\0" for r in own) + b"Ktrunc"
    assert remote_batch_reports(0, output, len(own) + extra) == [BATCH_CUT] * (len(own) + extra)


@given(recipient_report, message_report)
def test_a_batch_of_one_is_qmail_rspawn(own, final):
    output = own + b"\0" + final + b"\0"
    assert remote_batch_reports(0, output, 1) == [remote_report(0, output)]


def test_worked_example():
    output = (b"r\0h1.2.3.4 does not like recipient.\nRemote host said: 550 no\n\0"
              b"s1.2.3.4 does not like recipient.\nRemote host said: 451 later\n\0"
              b"K1.2.3.4 accepted message.\nRemote host said: 250 ok\n\0")
    assert remote_batch_reports(0, output, 3) == [
        b"K1.2.3.4 accepted message.\nRemote host said: 250 ok\n",
        b"D1.2.3.4 does not like recipient.\nRemote host said: 550 no\n",
        b"Z1.2.3.4 does not like recipient.\nRemote host said: 451 later\n"]


# ---- qmail-rspawn serving a batch


def fake_remote(world_tmp):
    """A qmail-remote stand-in: records its argv and message, prints $OUT."""
    script = world_tmp / "fake-remote"
    script.write_text('#!/bin/sh\nprintf "%%s\\n" "$@" > %s/argv\ncat > %s/message\nprintf "$OUT"\n'
                      % (world_tmp, world_tmp))
    script.chmod(0o755)
    return script


def queue(tree):
    """Queue MSG; return its messid."""
    assert conftest_queue_message(tree, MSG, b"Fs@example.org\0Ta@remote.example\0\0") == 0
    n = max(queued(tree))
    return b"%d/%d" % (n % 23, n), n


def reports(s, count):
    """Read count reports."""
    return [s.report() for _ in range(count)]


def test_rspawn_runs_qmail_remote_once_for_a_batch_and_splits_its_reports(procs, tree, world_tmp):
    messid, n = queue(tree)
    out = r"r\0h1.2.3.4 does not like recipient.\n\0s1.2.3.4 busy.\n\0K1.2.3.4 accepted message.\n\0"
    s = Spawner(procs, [program("qmail-rspawn")], qenv(tree, QMAILREMOTE=fake_remote(world_tmp), OUT=out))
    batch = [b"a@Remote.example", b"no-host", b"b@remote.EXAMPLE", b"c@other.example", b"d@remote.example"]
    s.p.stdin.write(encode_batch(4, messid, b"s@example.org", batch))
    s.p.stdin.flush()
    assert reports(s, 5) == [(4, b"K1.2.3.4 accepted message.\n"),
                             (4, b"DSorry, address must include host name. (#5.1.3)\n"),
                             (4, b"D1.2.3.4 does not like recipient.\n"),
                             (4, b"ZInternal error: batch mixes hosts. (#4.3.5)\n"),
                             (4, b"Z1.2.3.4 busy.\n")]
    assert (world_tmp / "argv").read_text().splitlines() == [
        "Remote.example", "s@example.org", "a@Remote.example", "b@remote.EXAMPLE", "d@remote.example"]
    assert (world_tmp / "message").read_bytes() == (tree / "queue" / "mess" / str(n % 23) / str(n)).read_bytes()
    assert s.finish()[0] == 0


def test_rspawn_refuses_a_whole_batch_at_once(procs, tree, world_tmp):
    s = Spawner(procs, [program("qmail-rspawn")], qenv(tree, QMAILREMOTE=fake_remote(world_tmp), OUT="K\\0"))
    s.p.stdin.write(encode_batch(119, b"1/999999", b"s@x", [b"a@b", b"c@b"]))
    s.p.stdin.write(encode_batch(2, b"x/1", b"s@x", [b"a@b", b"c@b"]))
    s.p.stdin.flush()
    assert reports(s, 4) == [(119, b"Zqmail-spawn unable to open message. (#4.3.0)\n")] * 2 + [
        (2, b"DInternal error: messid has nonnumerics. (#5.3.5)\n")] * 2
    many = [b"r%d@b.example" % i for i in range(BATCH_MAX + 1)]
    s.p.stdin.write(encode_batch(3, b"1/1", b"s@x", many))
    s.p.stdin.flush()
    assert reports(s, BATCH_MAX + 1) == [(3, OUT_OF_MEMORY)] * (BATCH_MAX + 1)
    assert s.finish()[0] == 0
    assert not os.path.exists(world_tmp / "argv")


def test_rspawn_still_refuses_a_high_plain_delnum_byte_as_qmail():
    """qmail-lspawn never reads batches; qmail-rspawn's plain requests keep spawn.c's checks."""
    req = Request(120, b"1/1", b"", b"a@b", False)
    assert spawnproto.request_error(req, 120, {}) == b"ZInternal error: delnum too big. (#4.3.5)\n"
