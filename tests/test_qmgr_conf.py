"""lib/send/qmgrconf: control/scheduler and the qmgr parameters read from control files, with Postfix's
defaults (reference §7.5)."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pyqmail.lib.send import qmgr, qmgrconf

# file name -> (Postfix's default, how to find the value in a QmgrConfig)
INTEGER_FILES = {
    "qmgrinitialconcurrency": (5, lambda c: c.window.initial),
    "qmgrconcurrencylimit": (20, lambda c: c.window.limit),
    "qmgrfailedcohortlimit": (1, lambda c: c.window.failed_cohort_limit),
    "qmgrrecipientlimit": (50, lambda c: c.recipient_limit),
    "qmgrslotcost": (5, lambda c: c.slots.slot_cost),
    "qmgrslotloan": (3, lambda c: c.slots.slot_loan),
    "qmgrslotdiscount": (50, lambda c: c.slots.slot_discount),
    "qmgrminimumslots": (3, lambda c: c.slots.minimum_slots),
    "minimalbackofftime": (300, lambda c: c.minimal_backoff),
    "maximalbackofftime": (4000, lambda c: c.maximal_backoff),
    "qmgrratedelay": (0, lambda c: c.window.rate_delay),
    "qmgrdeadcachesize": (20000, lambda c: c.dead_cache_size),
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A tree with an empty control/ and QMAILHOME pointing at it."""
    (tmp_path / "control").mkdir()
    monkeypatch.setenv("QMAILHOME", str(tmp_path))
    return tmp_path


def put(home, name, data):
    """Write control/name."""
    (home / "control" / name).write_bytes(data)


def test_defaults_without_control_files(home):
    config = qmgrconf.read()
    assert config.scheduler == "qmail"
    for name, (default, value) in INTEGER_FILES.items():
        assert value(config) == default, name
    assert config.window.positive == qmgr.Feedback(1.0, "base")
    assert config.window.negative == qmgr.Feedback(1.0, "base")
    assert config.window.minimal_backoff == 300
    assert config == qmgrconf.QmgrConfig()


@pytest.mark.parametrize("data,scheduler", [
    (None, "qmail"), (b"", "qmail"), (b"qmail\n", "qmail"), (b"oqmgr\n", "oqmgr"), (b"qmgr", "qmgr"),
    (b"QMGR \n", "qmgr"), (b"postfix\n", "qmail"), (b"qmgr2\n", "qmail"), (b"\xff\n", "qmail"),
    (b"oqmgr\nqmgr\n", "oqmgr"),
])
def test_scheduler_choice(home, data, scheduler):
    if data is not None:
        put(home, "scheduler", data)
    assert qmgrconf.read_scheduler() == scheduler
    assert qmgrconf.read().scheduler == scheduler


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(name=st.sampled_from(sorted(set(INTEGER_FILES) - {"minimalbackofftime", "maximalbackofftime"})),
       number=st.integers(0, 10**6))
def test_each_integer_file_is_read(home, name, number):
    for old in (home / "control").iterdir():
        old.unlink()
    put(home, name, b"%d\n" % number)
    expected = number
    if name in ("qmgrinitialconcurrency", "qmgrrecipientlimit", "qmgrdeadcachesize"):
        expected = max(1, number)
    if name == "qmgrslotdiscount":
        expected = min(100, number)
    assert INTEGER_FILES[name][1](qmgrconf.read()) == expected


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(low=st.integers(0, 10**5), high=st.integers(0, 10**5))
def test_backoff_times(home, low, high):
    put(home, "minimalbackofftime", b"%d\n" % low)
    put(home, "maximalbackofftime", b"%d\n" % high)
    config = qmgrconf.read()
    assert config.minimal_backoff == low == config.window.minimal_backoff
    assert config.maximal_backoff == max(low, high)


@pytest.mark.parametrize("data", [b"", b"abc\n", b" 7\n", b"-3\n"])
def test_integer_without_leading_digits_is_the_default(home, data):
    put(home, "qmgrconcurrencylimit", data)
    assert qmgrconf.read().window.limit == 20


def test_leading_digits_as_qmail_reads_them(home):
    put(home, "qmgrconcurrencylimit", b"7 connections\n")
    put(home, "qmgrratedelay", b"2s\n")
    config = qmgrconf.read()
    assert config.window.limit == 7 and config.window.rate_delay == 2
    assert config.window.effective_limit() == 1


@pytest.mark.parametrize("data,feedback", [
    (b"1\n", qmgr.Feedback(1.0, "base")),
    (b"1/concurrency\n", qmgr.Feedback(1.0, "window")),
    (b"1/sqrt(concurrency)\n", qmgr.Feedback(1.0, "sqrt")),
    (b"0.5/concurrency\n", qmgr.Feedback(0.5, "window")),
    (b"1/window\n", qmgr.Feedback(1.0, "base")),
    (b"3\n", qmgr.Feedback(1.0, "base")),
    (b"\xff\n", qmgr.Feedback(1.0, "base")),
])
def test_feedback_files(home, data, feedback):
    put(home, "qmgrpositivefeedback", data)
    put(home, "qmgrnegativefeedback", data)
    config = qmgrconf.read()
    assert config.window.positive == feedback == config.window.negative


def test_read_values_make_a_working_queue(home):
    """The window policy read from control files drives a DestinationQueue as configured."""
    put(home, "qmgrinitialconcurrency", b"2\n")
    put(home, "qmgrconcurrencylimit", b"3\n")
    queue = qmgr.DestinationQueue("example.org", qmgrconf.read().window)
    queue.busy = 10
    assert queue.window == 2
    for _ in range(5):
        queue.positive_feedback()
    assert queue.window == 3
