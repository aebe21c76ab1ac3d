"""qmail-send's log lines, byte for byte (qmail-send(8), LOG; qmail-send.c, qsutil.c)."""

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.send import sendlog as L


@pytest.mark.parametrize("text, expected", [
    (b"did 0+0+1/\n", b"did_0+0+1//"),
    (b"100%", b"100_"),
    (b"\x7f\x80\xff\t\r", b"_____"),
    (b"!~", b"!~"),
    (b"cut\0here", b"cut"),                 # a C string ends at its NUL
    (b"", b""),
])
def test_logsafe(text, expected):
    assert L.logsafe(text) == expected


@given(st.binary(max_size=80))
def test_logsafe_properties(text):
    out = L.logsafe(text)
    head = text.split(b"\0")[0]
    assert len(out) == len(head)
    assert all(33 <= c <= 126 and c != ord("%") for c in out)
    for a, b in zip(head, out):
        assert b == a or (a == 10 and b == ord("/")) or b == ord("_")


def test_status():
    assert L.status(0, 10, 0, 20) == b"status: local 0/10 remote 0/20\n"
    assert L.status(3, 10, 17, 20, exitasap=True) == b"status: local 3/10 remote 17/20 exitasap\n"
    assert L.exiting() == b"status: exiting\n"


def test_message_lines():
    assert L.new_msg(28) == b"new msg 28\n"
    assert L.info_msg(28, 1234, b"joe@a.example", 4711, 1000) == \
        b"info msg 28: bytes 1234 from <joe@a.example> qp 4711 uid 1000\n"
    assert L.info_msg(28, 0, b"", 1, 0) == b"info msg 28: bytes 0 from <> qp 1 uid 0\n"
    assert L.info_msg(5, 1, b"a b%c\n", 2, 3) == b"info msg 5: bytes 1 from <a_b_c/> qp 2 uid 3\n"
    assert L.end_msg(28) == b"end msg 28\n"
    assert L.bounce_msg(28, 4712) == b"bounce msg 28 qp 4712\n"
    assert L.triple_bounce(28) == b"triple bounce: discarding bounce/28\n"


def test_delivery_lines():
    assert L.starting_delivery(1, 28, "local", b"test.example-joe@test.example") == \
        b"starting delivery 1: msg 28 to local test.example-joe@test.example\n"
    assert L.starting_delivery(2, 28, "remote", b"x y@z") == b"starting delivery 2: msg 28 to remote x_y@z\n"
    assert L.delivery_result(1, b"Kdid 0+0+1/\n") == b"delivery 1: success: did_0+0+1//\n"
    assert L.delivery_result(2, b"Zconnected but greeting failed./") == \
        b"delivery 2: deferral: connected_but_greeting_failed./\n"
    assert L.delivery_result(3, b"DSorry, no mailbox here by that name. (#5.1.1)\n") == \
        b"delivery 3: failure: Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/\n"
    assert L.delivery_result(4, b"K") == b"delivery 4: success: \n"
    for mangled in (b"Xwhat", b"", b"\0K", b"kok"):
        assert L.delivery_result(5, mangled) == b"delivery 5: report mangled, will defer\n"


def test_cannot_start_and_alerts():
    assert [L.cannot_start(k) for k in L.CANNOT_START] == [
        b"alert: cannot start: unable to switch to home directory\n",
        b"alert: cannot start: unable to read controls\n",
        b"alert: cannot start: unable to switch to queue directory\n",
        b"alert: cannot start: unable to open mutex\n",
        b"alert: cannot start: qmail-send is already running\n",
        b"alert: cannot start: hath the daemon spawn no fire?\n",
    ]
    assert L.alert("lost_clean") == b"alert: oh no! lost qmail-clean connection! dying...\n"
    assert L.alert("lost_spawn") == b"alert: oh no! lost spawn connection! dying...\n"
    assert L.alert("nomem") == b"alert: out of memory, sleeping...\n"
    assert L.alert("bounce_append") == b"alert: unable to append to bounce message; HELP! sleeping...\n"
    assert L.alert("reread_home") == b"alert: unable to reread controls: unable to switch to home directory\n"
    assert L.alert("reread_locals") == b"alert: unable to reread control/locals\n"
    assert L.alert("reread_virtualdomains") == b"alert: unable to reread control/virtualdomains\n"
    assert L.alert("back_to_queue") == b"alert: unable to switch back to queue directory; HELP! sleeping...\n"
    assert L.unable_to_opendir("todo") == b"alert: unable to opendir todo, sleeping...\n"


@pytest.mark.parametrize("what, fn, expected", [
    ("fsync", L.split_fn("info", 28), b"warning: trouble fsyncing info/5/28\n"),
    ("mark", L.split_fn("remote", 46), b"warning: trouble marking remote/0/46; message will be delivered twice!\n"),
    ("open_later", L.split_fn("local", 1), b"warning: trouble opening local/1/1; will try again later\n"),
    ("read", L.flat_fn("todo", 28), b"warning: trouble reading todo/28\n"),
    ("read_later", L.split_fn("local", 28), b"warning: trouble reading local/5/28; will try again later\n"),
    ("write", L.split_fn("info", 28), b"warning: trouble writing to info/5/28\n"),
    ("create", L.split_fn("local", 28), b"warning: unable to create local/5/28\n"),
    ("open", L.flat_fn("todo", 28), b"warning: unable to open todo/28\n"),
    ("stat", L.split_fn("mess", 28), b"warning: unable to stat mess/5/28\n"),
    ("stat", L.flat_fn("bounce", 28), b"warning: unable to stat bounce/28\n"),
    ("stat_later", L.split_fn("info", 28), b"warning: unable to stat info/5/28; will try again later\n"),
    ("unlink", L.flat_fn("bounce", 28), b"warning: unable to unlink bounce/28\n"),
    ("unlink_later", L.split_fn("info", 28), b"warning: unable to unlink info/5/28; will try again later\n"),
    ("utime", L.split_fn("remote", 28), b"warning: unable to utime remote/5/28; message will be retried too soon\n"),
    ("unknown_todo", L.flat_fn("todo", 28), b"warning: unknown record type in todo/28\n"),
    ("unknown_chan", L.split_fn("local", 28), b"warning: unknown record type in local/5/28!\n"),
    ("clean", L.flat_fn("foop", 28), b"warning: qmail-clean unable to clean up foop/28\n"),
])
def test_warnings_naming_a_file(what, fn, expected):
    assert L.warning(what, fn) == expected


def test_fixed_warnings():
    assert L.fixed_warning("select") == b"warning: trouble in select\n"
    assert L.fixed_warning("report_range") == b"warning: internal error: delivery report out of range\n"
    assert L.fixed_warning("inject") == b"warning: trouble injecting bounce message, will try later\n"
    assert L.fixed_warning("start_qq") == b"warning: unable to start qmail-queue, will try later\n"


@given(st.integers(min_value=0, max_value=2 ** 40))
def test_split_names_use_split_23(n):
    assert L.split_fn("info", n) == b"info/%d/%d" % (n % 23, n)
    assert L.flat_fn("todo", n) == b"todo/%d" % n
