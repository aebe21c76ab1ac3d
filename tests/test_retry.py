"""qmail-send's retry schedule and queue lifetime (qmail-send(8), passes and reports; qmail-send.c nextretry)."""

import math

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.send.retry import TOO_LONG, dying_report, is_dying, isqrt, next_retry


def on_time_schedule(channel, passes):
    """Return the first `passes` pass times (seconds after birth) when every pass starts on time."""
    times = [0]
    while len(times) < passes:
        times.append(next_retry(0, times[-1], channel))
    return times


@pytest.mark.parametrize("x, root", [(0, 0), (1, 1), (3, 1), (4, 2), (99, 9), (100, 10), (-5, 0),
                                     (65535 ** 2, 65535), (2 ** 32 - 1, 65535), (2 ** 40, 65535)])
def test_isqrt_examples(x, root):
    assert isqrt(x) == root


@given(st.integers(min_value=0, max_value=65535 ** 2 + 65535 * 2))
def test_isqrt_is_the_floor_square_root(x):
    y = isqrt(x)
    assert y * y <= x < (y + 1) * (y + 1)


@pytest.mark.parametrize("channel, expected", [
    ("local", [0, 100, 400, 900, 1600, 2500, 3600]),
    ("remote", [0, 400, 1600, 3600, 6400, 10000, 14400]),
])
def test_on_time_schedule_reference_values(channel, expected):
    assert on_time_schedule(channel, 7) == expected


@given(st.integers(min_value=0, max_value=2 ** 33), st.integers(min_value=0, max_value=300))
def test_on_time_passes_are_local_100k2_remote_400k2(birth, k):
    # a pass started exactly at its scheduled time schedules the next one at the next square
    assert next_retry(birth, birth + 100 * k * k, "local") == birth + 100 * (k + 1) ** 2
    assert next_retry(birth, birth + 400 * k * k, "remote") == birth + 400 * (k + 1) ** 2


@given(st.integers(min_value=0, max_value=2 ** 33), st.integers(min_value=0, max_value=10 ** 7),
       st.sampled_from(["local", "remote"]))
def test_next_retry_formula_and_lateness(birth, age, channel):
    skip = {"local": 10, "remote": 20}[channel]
    retry = next_retry(birth, birth + age, channel)
    assert retry == birth + (math.isqrt(age) + skip) ** 2
    assert retry > birth + age  # always in the future
    assert retry >= next_retry(birth, birth + max(age - 1, 0), channel)  # a later pass never retries sooner


@given(st.integers(min_value=1, max_value=10 ** 6), st.sampled_from(["local", "remote"]))
def test_birth_in_the_future_counts_as_age_zero(ahead, channel):
    skip = {"local": 10, "remote": 20}[channel]
    assert next_retry(1000 + ahead, 1000, channel) == 1000 + ahead + skip * skip


def test_dying_only_strictly_after_the_lifetime():
    assert not is_dying(1000, 1000 + 604800)
    assert is_dying(1000, 1000 + 604801)
    assert is_dying(0, 11, lifetime=10) and not is_dying(0, 10, lifetime=10)


@pytest.mark.parametrize("report, expected", [
    (b"Zconnect failed.\n", b"Dconnect failed.\n" + TOO_LONG),
    (b"Zno newline", b"Dno newline" + TOO_LONG),
    (b"Z", b"D" + TOO_LONG),
    (b"Kok\n", b"Kok\n"),
    (b"Dbad\n", b"Dbad\n"),
    (b"", b""),
])
def test_dying_report(report, expected):
    assert dying_report(report) == expected


def test_too_long_text_is_qmails():
    assert TOO_LONG == b"I'm not going to try again; this message has been in the queue too long.\n"
