"""lib/send/qmgr: the destination concurrency window (reference §7.3), the dead cache, backoff (§7.2),
triggers and round robin, each checked against a model written here from the reference text."""

import math
from collections import OrderedDict

import pytest
from hypothesis import given, settings, strategies as st

from pyqmail.lib.send import qmgr

# ---------------------------------------------------------------------------------------------------------
# The model: reference §7.3's pseudo-code, written over a dict (state) and plain numbers.


def model_amount(kind, base, window):
    """g or f: base, base/window or base/sqrt(window)."""
    return {"base": base, "window": base / window, "sqrt": base / math.sqrt(window)}[kind]


def model_new(initial, limit, rate_delay):
    """A fresh queue's state: window = initial capped by the limit; rate delay forces limit 1."""
    if rate_delay > 0:
        limit = 1
    initial = max(1, initial)
    if limit:
        initial = min(initial, limit)
    return {"window": initial, "success": 0.0, "failure": 0.0, "cohorts": 0.0, "busy": 0,
            "initial": initial, "limit": limit, "reason": None, "ceiling": 0, "until": 0}


def model_positive(s, kind, base, now=0):
    """Positive feedback, as the pseudo-code says, below a 421's ceiling while it lasts."""
    s["cohorts"] = 0.0
    if s["window"] == 0:
        s["window"] = s["busy"] if s["busy"] > 0 else s["initial"]
        if s["limit"]:
            s["window"] = min(s["window"], s["limit"])  # the module's choice: never above the limit
        s["success"] = s["failure"] = 0.0
        s["reason"] = None
        return
    if s["ceiling"] and now >= s["until"]:
        s["ceiling"] = 0
    cap = min(x for x in (s["limit"], s["ceiling"]) if x) if s["limit"] or s["ceiling"] else 0
    if (cap == 0 or cap > s["window"]) and s["window"] < s["busy"] + s["initial"]:
        g = model_amount(kind, base, s["window"])
        s["success"] += g
        while s["success"] + g / 2 >= 1:
            s["window"] += 1
            s["success"] -= 1
            s["failure"] = 0.0
        if cap:
            s["window"] = min(s["window"], cap)


def model_negative(s, kind, base, cohort_limit, reason):
    """Negative feedback, as the pseudo-code says."""
    if s["window"] == 0:
        return
    s["cohorts"] += 1 / s["window"]
    if cohort_limit > 0 and s["cohorts"] >= cohort_limit:
        s["window"] = 0
        s["reason"] = reason
        return
    f = model_amount(kind, base, s["window"])
    s["failure"] -= f
    while s["failure"] - f / 2 < 0:
        s["window"] -= 1
        s["success"] = 0.0
        s["failure"] += 1
    s["window"] = max(1, s["window"])


def model_421(s, now=0):
    """The module's documented choice: window = max(1, min(window, busy - 1)), no cohort counted, and that
    window a ceiling for minimal_backoff (300) seconds."""
    if s["window"] == 0:
        return
    s["window"] = max(1, min(s["window"], s["busy"] - 1))
    s["success"] = s["failure"] = 0.0
    s["ceiling"], s["until"] = s["window"], now + 300


kinds = st.sampled_from(["base", "window", "sqrt"])
bases = st.sampled_from([1.0, 0.5, 0.25, 1 / 3])
events = st.lists(st.sampled_from(["pos", "neg", "start", "finish", "421", "revive"]), max_size=80)


def make_policy(initial, limit, pos, neg, cohort_limit, rate_delay=0):
    """A WindowPolicy from plain values."""
    return qmgr.WindowPolicy(initial=initial, limit=limit, positive=qmgr.Feedback(pos[1], pos[0]),
                             negative=qmgr.Feedback(neg[1], neg[0]), failed_cohort_limit=cohort_limit,
                             rate_delay=rate_delay, minimal_backoff=300)


@settings(max_examples=300)
@given(initial=st.integers(1, 12), limit=st.integers(0, 25), pos=st.tuples(kinds, bases),
       neg=st.tuples(kinds, bases), cohort_limit=st.integers(0, 3), rate_delay=st.sampled_from([0, 0, 5]),
       script=events)
def test_window_follows_the_reference_model(initial, limit, pos, neg, cohort_limit, rate_delay, script):
    policy = make_policy(initial, limit, pos, neg, cohort_limit, rate_delay)
    queue = qmgr.DestinationQueue("example.org", policy)
    model = model_new(initial, limit, rate_delay)
    now = 0
    died_at = None
    for event in script:
        now += 100
        if event == "pos":
            queue.positive_feedback(now)
            model_positive(model, *pos, now)
        elif event == "neg":
            queue.negative_feedback(b"connect failed", now)
            was_alive = model["window"] > 0
            model_negative(model, *neg, cohort_limit, b"connect failed")
            if was_alive and model["window"] == 0:
                died_at = now
        elif event == "start":
            queue.started()
            model["busy"] += 1
        elif event == "finish":
            queue.finished()
            model["busy"] = max(0, model["busy"] - 1)
        elif event == "421":
            queue.too_many_connections(now)
            model_421(model, now)
        elif event == "revive":
            revived = queue.revive_if_due(now)
            due = model["window"] == 0 and now >= died_at + 300
            assert revived == due
            if due:
                model_positive(model, *pos)
        assert queue.window == model["window"]
        assert queue.success == pytest.approx(model["success"])
        assert queue.failure == pytest.approx(model["failure"])
        assert queue.fail_cohorts == pytest.approx(model["cohorts"])
        assert queue.reason == model["reason"]
        effective_limit = 1 if rate_delay else limit
        if effective_limit:
            assert queue.window <= effective_limit  # never above the limit
        assert queue.is_dead() or queue.window >= 1  # never below 1 while alive
        assert queue.is_dead() == (queue.reason is not None)


@given(initial=st.integers(1, 10), limit=st.integers(0, 30), n=st.integers(0, 40), busy=st.integers(0, 40))
def test_slow_start_adds_one_per_positive_feedback(initial, limit, n, busy):
    """g = 1: n positive feedbacks from initial give initial + n, capped by the limit and by busy + initial."""
    queue = qmgr.DestinationQueue("d", make_policy(initial, limit, ("base", 1.0), ("base", 1.0), 1))
    queue.busy = busy
    start = queue.window
    for _ in range(n):
        queue.positive_feedback()
    expected = start + n
    if limit:
        expected = min(expected, limit)
    expected = min(expected, max(start, busy + start))
    assert queue.window == expected


@given(window=st.integers(1, 40))
def test_one_over_concurrency_needs_window_successes_per_step(window):
    """g = 1/concurrency: a window of w grows by exactly 1 after w positive feedbacks, not before."""
    policy = make_policy(window, 0, ("window", 1.0), ("base", 1.0), 1)
    queue = qmgr.DestinationQueue("d", policy)
    queue.busy = 1000
    for _ in range(window - 1):
        queue.positive_feedback()
        assert queue.window == window
    queue.positive_feedback()
    assert queue.window == window + 1


@given(window=st.integers(1, 20))
def test_one_failed_cohort_kills_at_cohort_limit_one(window):
    """Failures adding up to one pseudo-cohort (sum of 1/window) make the destination dead."""
    queue = qmgr.DestinationQueue("d", make_policy(window, 20, ("base", 1.0), ("base", 1.0), 1))
    cohorts = 0.0
    failures = 0
    while not queue.is_dead():
        cohorts += 1 / queue.window
        queue.negative_feedback(b"refused", 10)
        failures += 1
        assert failures <= window
    assert cohorts >= 1
    assert queue.window == 0 and queue.reason == b"refused" and queue.revive_at() == 310


def test_worked_example_throttle_and_death():
    """Window 5, f = 1: 0.2 cohort, window 3 (the ±f/2 rounding steps twice); 0.53, window 2; then dead."""
    queue = qmgr.DestinationQueue("d", qmgr.WindowPolicy())
    assert queue.window == 5
    queue.negative_feedback(b"x", 0)
    assert (queue.window, queue.failure, queue.fail_cohorts) == (3, 1.0, 0.2)
    queue.negative_feedback(b"x", 0)
    assert queue.window == 2
    queue.negative_feedback(b"y", 7)
    assert queue.is_dead() and queue.reason == b"y" and not queue.can_start()
    assert not queue.revive_if_due(306)
    assert queue.revive_if_due(307)
    assert queue.window == 5 and queue.reason is None and queue.fail_cohorts == 0


def test_worked_example_revival_takes_busy_count():
    """Back from the dead with deliveries in flight, the window is their number."""
    queue = qmgr.DestinationQueue("d", qmgr.WindowPolicy(failed_cohort_limit=1))
    queue.window = 1
    queue.busy = 3
    queue.negative_feedback(b"x", 0)
    assert queue.is_dead()
    queue.positive_feedback()
    assert queue.window == 3


def test_cohort_limit_zero_never_dies():
    queue = qmgr.DestinationQueue("d", qmgr.WindowPolicy(failed_cohort_limit=0))
    for _ in range(50):
        queue.negative_feedback(b"x", 0)
    assert queue.window == 1


def test_rate_delay_forces_limit_one():
    queue = qmgr.DestinationQueue("d", qmgr.WindowPolicy(rate_delay=1))
    queue.busy = 10
    assert queue.window == 1
    queue.positive_feedback()
    assert queue.window == 1


@given(window=st.integers(1, 20), busy=st.integers(0, 30))
def test_421_takes_what_the_server_accepted_and_never_kills(window, busy):
    queue = qmgr.DestinationQueue("d", qmgr.WindowPolicy(initial=window, limit=0))
    queue.busy = busy
    queue.too_many_connections()
    assert queue.window == max(1, min(window, busy - 1))
    assert queue.fail_cohorts == 0 and not queue.is_dead()


def test_after_a_421_the_window_stays_below_it_until_minimal_backoff_has_passed():
    queue = qmgr.DestinationQueue("d", qmgr.WindowPolicy(initial=5, limit=20, minimal_backoff=300))
    queue.busy = 6
    queue.too_many_connections(1000.0)  # the sixth connection was refused: the server takes 5
    assert queue.window == 5
    queue.busy = 5
    for t in range(1000, 1300, 10):
        queue.positive_feedback(float(t))
    assert queue.window == 5  # without the ceiling 30 successes would have grown it
    for _ in range(30):
        queue.positive_feedback(1300.0)
    assert queue.window > 5  # lapsed: it probes again


@pytest.mark.parametrize("text,feedback", [
    ("1", qmgr.Feedback(1.0, "base")),
    ("1/concurrency", qmgr.Feedback(1.0, "window")),
    ("1/sqrt(concurrency)", qmgr.Feedback(1.0, "sqrt")),
    (" 0.5 / concurrency ", qmgr.Feedback(0.5, "window")),
])
def test_parse_feedback(text, feedback):
    assert qmgr.parse_feedback(text) == feedback


@pytest.mark.parametrize("text", ["", "2", "0", "-1", "1/window", "x/concurrency", "1/sqrt(window)", "1/"])
def test_parse_feedback_rejects(text):
    with pytest.raises(ValueError):
        qmgr.parse_feedback(text)


@given(window=st.integers(1, 1000), base=st.floats(0.01, 1))
def test_feedback_amounts(window, base):
    assert qmgr.Feedback(base, "base").amount(window) == base
    assert qmgr.Feedback(base, "window").amount(window) == pytest.approx(base / window)
    assert qmgr.Feedback(base, "sqrt").amount(window) == pytest.approx(base / math.sqrt(window))


# ---------------------------------------------------------------------------------------------------------
# The dead-destination cache: bounded, oldest evicted.

@given(size=st.integers(1, 8), names=st.lists(st.sampled_from("abcdefghijkl"), max_size=60))
def test_dead_cache_is_bounded_and_evicts_the_oldest(size, names):
    cache = qmgr.DeadCache(size)
    model = OrderedDict()
    for now, name in enumerate(names):
        cache.add(name, name.encode(), now)
        model.pop(name, None)
        model[name] = now
        while len(model) > size:
            model.popitem(last=False)
        assert len(cache) <= size
        assert list(cache.entries) == list(model)
    for name in "abcdefghijkl":
        assert (name in cache) == (name in model)
        assert cache.reason(name) == (name.encode() if name in model else None)


def test_dead_cache_expiry_and_flush():
    cache = qmgr.DeadCache(10)
    cache.add("a", b"ra", 0)
    cache.add("b", b"rb", 100)
    assert cache.expire(299, 300) == []
    assert cache.expire(300, 300) == ["a"]
    cache.add("c", b"rc", 200)
    cache.remove("c")
    assert cache.flush() == ["b"] and len(cache) == 0


# ---------------------------------------------------------------------------------------------------------
# Exponential backoff and lifetime (§7.2).

@given(now=st.integers(0, 10**9), age=st.integers(-10**6, 10**6), lo=st.integers(1, 5000),
       span=st.integers(0, 10**5))
def test_backoff_is_the_age_clamped(now, age, lo, span):
    hi = lo + span
    delay = qmgr.backoff_delay(now, now - age, lo, hi)
    assert lo <= delay <= hi
    assert delay == (lo if age < lo else hi if age > hi else age)
    assert qmgr.next_attempt(now, now - age, lo, hi) == now + delay
    assert qmgr.backoff_delay(now, None, lo, hi) == lo


@given(created=st.integers(0, 10**9), age=st.integers(300, 2000))
def test_backoff_doubles_the_age(created, age):
    """Tried at age a (within the bounds), the next try comes at age 2a: the waits double."""
    tried = created + age
    assert qmgr.next_attempt(tried, created) - created == 2 * age


def test_backoff_worked_example():
    """A message deferred at ages 0, 300, 600, 1200, 2400, 4800 ... waits 300, 300, 600, 1200, 2400, 4000."""
    waits, now = [], 0
    for _ in range(7):
        later = qmgr.next_attempt(now, 0)
        waits.append(later - now)
        now = later
    assert waits == [300, 300, 600, 1200, 2400, 4000, 4000]


@given(created=st.integers(0, 10**9), age=st.integers(0, 10**7), lifetime=st.integers(0, 10**7))
def test_expiry(created, age, lifetime):
    assert qmgr.is_expired(created + age, created, lifetime) == (age >= lifetime)


# ---------------------------------------------------------------------------------------------------------
# Triggers and round robin.

@given(data=st.binary(max_size=40))
def test_triggers_collapse_in_order(data):
    letters = {chr(b) if chr(b) in "AFD" else "I" for b in data}
    assert qmgr.collapse_triggers(data) == tuple(x for x in "AFDI" if x in letters)


@pytest.mark.parametrize("data,requests", [
    (b"", ()), (b"I", ("I",)), (b"W", ("I",)), (b"\0", ("I",)), (b"DDDD", ("D",)),
    (b"DIAF", ("A", "F", "D", "I")), (b"WIDF", ("F", "D", "I")), (b"a", ("I",)),
])
def test_triggers_examples(data, requests):
    assert qmgr.collapse_triggers(data) == requests


@given(n=st.integers(1, 12), rounds=st.integers(1, 5))
def test_round_robin_visits_each_once_per_round(n, rounds):
    rr = qmgr.RoundRobin(list(range(n)))
    picks = [rr.pick(lambda x: True) for _ in range(n * rounds)]
    assert picks == list(range(n)) * rounds


@given(n=st.integers(1, 12), eligible=st.sets(st.integers(0, 11)), picks=st.integers(0, 30))
def test_round_robin_skips_ineligible(n, eligible, picks):
    rr = qmgr.RoundRobin(list(range(n)))
    allowed = sorted(x for x in eligible if x < n)
    got = [rr.pick(lambda x: x in eligible) for _ in range(picks)]
    if not allowed:
        assert got == [None] * picks
    else:
        assert got == [allowed[i % len(allowed)] for i in range(picks)]


def test_round_robin_remove_keeps_the_rotation():
    rr = qmgr.RoundRobin(["a", "b", "c", "d"])
    assert rr.pick(lambda x: True) == "a"
    assert rr.pick(lambda x: True) == "b"
    rr.remove("a")
    assert rr.pick(lambda x: True) == "c"
    rr.remove("d")
    assert rr.pick(lambda x: True) == "b"
    rr.add("e")
    assert [rr.pick(lambda x: True) for _ in range(3)] == ["c", "e", "b"]
