"""Fairness between new and deferred mail in a channel's schedule (issue 19; reference §7.1): a FairQueue keeps
new messages (from todo/) apart from deferred ones. Not fair (control/scheduler qmail) it is exactly qmail's one
queue in (due, id) order; fair (qmgr, oqmgr) the two take turns while both have a message due."""

from hypothesis import given, strategies as st

from pyqmail.lib.send.timequeue import FairQueue, TimeQueue

ENTRIES = st.lists(st.tuples(st.booleans(), st.integers(0, 50)), max_size=60)


def fill(entries):
    """Return a FairQueue and a TimeQueue holding the same entries (id = position; new or deferred)."""
    fq, tq = FairQueue(), TimeQueue()
    for id, (new, due) in enumerate(entries):
        (fq.add_new if new else fq.add)(id, due)
        tq.add(id, due)
    return fq, tq


def pops(q, recent):
    """Pop every id due at recent."""
    out = []
    while (id := q.pop_due(recent)) is not None:
        out.append(id)
    return out


@given(ENTRIES, st.integers(0, 60))
def test_not_fair_is_qmails_single_queue(entries, recent):
    fq, tq = fill(entries)
    assert fq.next_due() == tq.next_due()
    assert pops(fq, recent) == pops(tq, recent)
    assert list(fq.drain()) == list(tq.drain())


@given(ENTRIES, st.integers(0, 60))
def test_fair_alternates_while_both_are_due_and_loses_nothing(entries, recent):
    fq, _ = fill(entries)
    fq.fair = True
    got = pops(fq, recent)
    due = [id for id, (_, d) in enumerate(entries) if d <= recent]
    assert sorted(got) == due
    new = {id for id, (n, _) in enumerate(entries) if n}
    kinds = [id in new for id in got]
    both = min(kinds.count(True), kinds.count(False))
    # while both kinds were left, they alternated: no two of a kind in a row in that stretch
    assert all(kinds[i] != kinds[i + 1] for i in range(max(0, 2 * both - 1)))
    rest = [id for id in range(len(entries)) if id not in got]
    assert sorted(id for id, _ in fq.drain()) == rest


def test_an_alarm_makes_a_backlog_due_without_holding_new_mail_back():
    q = FairQueue()
    q.fair = True
    for id in range(100):
        q.add(id, 1000 + id)  # deferred, due later
    q.run_all_now(10)
    q.add_new(500, 10)
    q.add_new(501, 10)
    assert pops(q, 10)[:4] == [500, 0, 501, 1]
