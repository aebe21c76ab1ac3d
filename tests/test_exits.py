"""lib/util/exits: qmail-queue's exit codes (qmail-queue(8), qmail-qmqpc(8)) and qmail.c's result strings,
transcribed."""

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.util import exits
from pyqmail.lib.util.exits import qq_text

# qmail.c's qmail_close, one row per code, copied from it rather than from lib/util/exits.py
SPEC = {
    11: "Denvelope address too long for qq (#5.1.3)",
    115: "Denvelope address too long for qq (#5.1.3)",
    31: "Dmail server permanently rejected message (#5.3.0)",
    51: "Zqq out of memory (#4.3.0)",
    52: "Zqq timeout (#4.3.0)",
    53: "Zqq write error or disk full (#4.3.0)",
    54: "Zqq read error (#4.3.0)",
    55: "Zqq unable to read configuration (#4.3.0)",
    56: "Zqq trouble making network connection (#4.3.0)",
    61: "Zqq trouble in home directory (#4.3.0)",
    62: "Zqq trouble creating files in queue (#4.3.0)",
    63: "Zqq trouble creating files in queue (#4.3.0)",
    64: "Zqq trouble creating files in queue (#4.3.0)",
    65: "Zqq trouble creating files in queue (#4.3.0)",
    66: "Zqq trouble creating files in queue (#4.3.0)",
    71: "Zmail server temporarily rejected message (#4.3.0)",
    72: "Zconnection to mail server timed out (#4.4.1)",
    73: "Zconnection to mail server rejected (#4.4.1)",
    74: "Zcommunication with mail server failed (#4.4.2)",
    81: "Zqq internal bug (#4.3.0)",
    91: "Zqq internal bug (#4.3.0)",
    120: "Zunable to exec qq (#4.3.0)",
}


@pytest.mark.parametrize("code,text", sorted(SPEC.items()))
def test_table_matches_qmail_c(code, text):
    assert qq_text(code) == text


def test_success_is_empty():
    assert qq_text(0) == ""


@given(st.integers(1, 255).filter(lambda c: c not in SPEC and c != 82))
def test_other_codes(code):
    expected = "Dqq permanent problem (#5.3.0)" if 11 <= code <= 40 else "Zqq temporary problem (#4.3.0)"
    assert qq_text(code) == expected


def test_other_permanent_range_edges():
    assert qq_text(10) == "Zqq temporary problem (#4.3.0)"
    assert qq_text(12) == "Dqq permanent problem (#5.3.0)"
    assert qq_text(40) == "Dqq permanent problem (#5.3.0)"
    assert qq_text(41) == "Zqq temporary problem (#4.3.0)"
    assert qq_text(75) == "Zqq temporary problem (#4.3.0)"  # there is no 75 in qmail-queue's table


@pytest.mark.parametrize("custom,text", [
    (b"Dno such user (#5.1.1)", "Dno such user (#5.1.1)"),
    (b"Zgreylisted, try later (#4.7.1)", "Zgreylisted, try later (#4.7.1)"),
    (b"Dabc", "Dabc"),
    (b"D" + b"x" * 300, "D" + "x" * 254),  # at most 255 bytes
])
def test_custom_error_string_on_82(custom, text):
    assert qq_text(82, custom) == text


@pytest.mark.parametrize("custom", [b"", b"D", b"Dx", b"Kok fine", b"xDno", b"5.1.1 no"])
def test_custom_error_needs_more_than_two_bytes_starting_d_or_z(custom):
    assert qq_text(82, custom) == "Zqq temporary problem (#4.3.0)"


@given(st.binary(max_size=300))
def test_custom_result_is_always_a_d_or_z_string(custom):
    text = qq_text(82, custom)
    assert text[:1] in ("D", "Z") and len(text) <= 255


@pytest.mark.parametrize("name,code", [
    ("QUEUED", 0), ("ADDR_TOO_LONG", 11), ("PERM_REFUSED", 31), ("NOMEM", 51), ("TIMEOUT", 52),
    ("WRITE_ERROR", 53), ("READ_ERROR", 54), ("CONFIG", 55), ("NETWORK", 56), ("HOME", 61), ("QUEUE_DIR", 62),
    ("QUEUE_PID", 63), ("QUEUE_MESS", 64), ("QUEUE_INTD", 65), ("QUEUE_TODO", 66), ("TEMP_REFUSED", 71),
    ("CONN_TIMEOUT", 72), ("CONN_REJECTED", 73), ("CONN_FAILED", 74), ("BUG", 81), ("CUSTOM", 82),
    ("ENVELOPE_FORMAT", 91), ("EXEC_FAILED", 120),
])
def test_exit_code_names(name, code):
    assert getattr(exits, name) == code


def test_fixed_strings():
    assert exits.QQ_CRASHED == "Zqq crashed (#4.3.0)"
    assert exits.QQ_WAITPID_SURPRISE == "Zqq waitpid surprise (#4.3.0)"
    assert exits.CUSTOM_MAX == 255
