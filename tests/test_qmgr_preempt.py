"""lib/send/qmgr: preemption arithmetic (reference §7.4), checked against a model written here from the
reference text (C's integer division where qmgr_job.c divides ints), plus worked examples."""

import math
from fractions import Fraction

from hypothesis import given, settings, strategies as st

from pyqmail.lib.send import qmgr


def c_div(a, b):
    """C's int division: the exact quotient truncated toward zero."""
    return math.trunc(Fraction(a, b))


def model_max_slots(current, cost):
    """max_slots = (MIN_ENTRIES(current) - current.selected + current.slots_available) / slot_cost."""
    return c_div(current.min_entries - current.selected + current.slots_available, cost)


def model_candidate(jobs, current, cost, now):
    """Among jobs after current, not blockers, not stacked, 0 < MAX - selected <= max_slots, the highest
    (now - queued_time + 1) / MAX_ENTRIES; qmgr's best score starts at 0 and must be beaten."""
    if cost < 2:  # preemption off
        return None
    slots = model_max_slots(current, cost)
    if slots <= 0:
        return None
    best, best_score = None, Fraction(0)
    for job in jobs[jobs.index(current) + 1:]:
        if job.blocker or job.stacked:
            continue
        if 0 < job.max_entries - job.selected <= slots:
            score = Fraction(now - job.queued_time + 1, job.max_entries)
            if score > best_score:
                best, best_score = job, score
    return best


def model_decision(current, job, cost, loan, discount):
    """slots_available / slot_cost + slot_loan >= expected_slots * (100 - slot_discount) / 100."""
    expected = job.max_entries - job.selected
    return c_div(current.slots_available, cost) + loan >= Fraction(expected * (100 - discount), 100)


def job_strategy(name):
    """A job record with consistent counters: selected <= min_entries <= max_entries."""
    return st.builds(
        lambda mx, mn_frac, sel_frac, queued, slots, blocker, stacked: qmgr.Job(
            name, mx, mx * mn_frac // 100, queued, selected=(mx * mn_frac // 100) * sel_frac // 100,
            slots_available=slots, blocker=blocker, stacked=stacked),
        st.integers(1, 200), st.integers(0, 100), st.integers(0, 100), st.integers(0, 1000),
        st.integers(-100, 100), st.booleans(), st.booleans())


policies = st.builds(qmgr.SlotPolicy, slot_cost=st.integers(0, 10), slot_loan=st.integers(0, 6),
                     slot_discount=st.integers(0, 100), minimum_slots=st.integers(0, 5))


@given(current=job_strategy("current"), policy=policies)
def test_max_slots(current, policy):
    if policy.slot_cost >= 1:
        assert qmgr.max_slots(current, policy) == model_max_slots(current, policy.slot_cost)


@given(current=job_strategy("current"), others=st.lists(job_strategy("j"), max_size=8),
       before=st.integers(0, 8), policy=policies, now=st.integers(0, 2000))
def test_choose_candidate_equals_the_reference(current, others, before, policy, now):
    jobs = others[:before] + [current] + others[before:]
    assert qmgr.choose_candidate(jobs, current, policy, now) is model_candidate(
        jobs, current, policy.slot_cost, now)


@given(current=job_strategy("current"), job=job_strategy("job"), policy=policies)
def test_preempt_decision_equals_the_reference_inequality(current, job, policy):
    if policy.slot_cost >= 2:
        assert qmgr.should_preempt(current, job, policy) == model_decision(
            current, job, policy.slot_cost, policy.slot_loan, policy.slot_discount)
    else:
        assert not qmgr.should_preempt(current, job, policy)


@given(current=job_strategy("current"), policy=policies)
def test_preemption_is_tried_only_with_slots_and_a_big_enough_current_job(current, policy):
    expected = (policy.slot_cost >= 2 and current.slots_available > 0
                and current.max_entries >= policy.minimum_slots * policy.slot_cost)
    assert qmgr.may_try_preemption(current, policy) == expected


@settings(max_examples=300)
@given(current=job_strategy("current"), others=st.lists(job_strategy("j"), max_size=6),
       before=st.integers(0, 6), policy=policies, now=st.integers(0, 2000))
def test_preempt_moves_the_candidate_and_charges_the_slots(current, others, before, policy, now):
    jobs = others[:before] + [current] + others[before:]
    order = list(jobs)
    slots = current.slots_available
    tried = qmgr.may_try_preemption(current, policy)
    candidate = model_candidate(jobs, current, policy.slot_cost, now) if tried else None
    decided = candidate is not None and model_decision(current, candidate, policy.slot_cost,
                                                       policy.slot_loan, policy.slot_discount)
    chosen = qmgr.preempt(jobs, current, policy, now)
    if not decided:
        assert chosen is current and jobs == order and current.slots_available == slots
        return
    assert chosen is candidate
    assert current.slots_available == slots - (candidate.max_entries - candidate.selected) * policy.slot_cost
    assert current.stacked
    order.remove(candidate)
    order.insert(order.index(current), candidate)
    assert jobs == order


def test_select_entry_earns_slots_for_the_current_job_only():
    current, other = qmgr.Job("c", 10, 10, 0), qmgr.Job("o", 3, 3, 0)
    qmgr.select_entry(current, current)
    qmgr.select_entry(other, current)
    assert (current.selected, current.slots_available, current.slots_used) == (1, 1, 1)
    assert (other.selected, other.slots_available, other.slots_used) == (1, 0, 0)


def test_worked_example_small_message_overtakes_a_big_one():
    """Defaults (cost 5, loan 3, discount 50, minimum 3): a 100-recipient job has delivered one entry
    (1 slot); a 2-recipient job queued later needs 2 entries: max_slots = (100 - 1 + 1) / 5 = 20 >= 2, and
    1 / 5 + 3 = 3 >= 2 * 50 / 100 = 1, so it preempts and the big job owes 1 - 2 * 5 = -9 slots."""
    policy = qmgr.SlotPolicy()
    big, small = qmgr.Job("big", 100, 100, queued_time=0), qmgr.Job("small", 2, 2, queued_time=50)
    jobs = [big, small]
    assert qmgr.preempt(jobs, big, policy, 100) is big  # no slot earned yet
    qmgr.select_entry(big, big)
    assert qmgr.max_slots(big, policy) == 20
    assert qmgr.preempt(jobs, big, policy, 100) is small
    assert jobs == [small, big] and big.slots_available == -9 and big.stacked


def test_worked_example_no_preemption_of_a_small_current_job():
    """A current job with fewer than minimum_slots * slot_cost = 15 entries is never preempted."""
    policy = qmgr.SlotPolicy()
    current, small = qmgr.Job("c", 14, 14, 0, slots_available=10), qmgr.Job("s", 1, 1, 5)
    assert qmgr.preempt([current, small], current, policy, 10) is current


def test_worked_example_best_score():
    """Score (now - queued + 1) / MAX_ENTRIES: an older job wins over a smaller, younger one."""
    current = qmgr.Job("c", 100, 100, 0, slots_available=50)
    young, old = qmgr.Job("young", 2, 2, queued_time=90), qmgr.Job("old", 4, 4, queued_time=0)
    # at now 99: young 10 / 2 = 5, old 100 / 4 = 25
    assert qmgr.choose_candidate([current, young, old], current, qmgr.SlotPolicy(), 99) is old
    old.blocker = True
    assert qmgr.choose_candidate([current, young, old], current, qmgr.SlotPolicy(), 99) is young
    assert qmgr.choose_candidate([young, current], current, qmgr.SlotPolicy(), 99) is None


def deliver_until_first_done(policy, first, jobs):
    """Deliver one entry per step from the job preemption picks; return the other entries delivered
    before the first job completes."""
    current = jobs[0]
    others = 0
    now = 1000
    while True:
        now += 1
        current = qmgr.preempt(jobs, current, policy, now)
        qmgr.select_entry(current, current)
        if current is not first:
            others += 1
        if current.selected == current.max_entries:
            jobs.remove(current)
            if current is first:
                break
            current = jobs[0]
            current.stacked = False  # its preempting child is done: it is no longer a stack parent
    return others


def test_worked_example_inflation():
    """Cost 5, no loan or discount: a 100-entry job and twenty 2-entry jobs behind it. Each small job
    costs 10 slots, paid after every 10 entries of the big one: after entries 10, 20, ..., 90 (the 100th
    ends the job), so 9 overtake it (18 entries, under 100 / 5) and it finishes 1.18 times later."""
    policy = qmgr.SlotPolicy(slot_cost=5, slot_loan=0, slot_discount=0)
    first = qmgr.Job("first", 100, 100, queued_time=0)
    jobs = [first] + [qmgr.Job("s%d" % i, 2, 2, queued_time=i) for i in range(20)]
    assert deliver_until_first_done(policy, first, jobs) == 18


@settings(max_examples=200)
@given(cost=st.integers(2, 8), big=st.integers(0, 300), sizes=st.lists(
    st.tuples(st.integers(1, 60), st.integers(0, 500)), max_size=30))
def test_preemption_inflates_a_job_by_at_most_k_over_k_minus_1(cost, big, sizes):
    """With no loan and no discount, every preempting entry is paid with cost slots earned by its parent,
    nested preemptions included: the other entries delivered while a job of N entries completes are at
    most N / (k - 1), so its delivery takes at most k / (k - 1) times as long."""
    policy = qmgr.SlotPolicy(slot_cost=cost, slot_loan=0, slot_discount=0)
    first = qmgr.Job("first", big + 1, big + 1, queued_time=0)
    jobs = [first] + [qmgr.Job("j%d" % i, n, n, queued_time=t) for i, (n, t) in enumerate(sizes)]
    others = deliver_until_first_done(policy, first, jobs)
    assert others * (cost - 1) <= first.max_entries
    assert (first.max_entries + others) <= first.max_entries * qmgr.inflation_bound(cost) + 1e-9
    assert qmgr.inflation_bound(cost) == cost / (cost - 1)
