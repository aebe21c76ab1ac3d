"""Issue 17, control characters in envelope addresses beyond qmail-smtpd: qmail-qmtpd answers D for a recipient (or,
for the sender, every recipient) holding a CR or LF; qmail-inject and sendmail refuse an envelope address holding a
CR, LF or NUL from the arguments, -f, the header or the environment, with exit 100 and nothing queued or printed."""

import io

import pytest
from hypothesis import example, given, settings, strategies as st

from conftest import queued
from pyqmail.lib.qmtp import qmtp
from pyqmail.lib.inject.injecthdr import visible
from pyqmail.lib.util.netstring import Reader
from test_qmail_inject import inject, only_message
from test_qmail_qmtpd import K, RCPTHOSTS_D, control, package, session
from test_qmqpd import assert_nothing_queued
from test_sendmail import sendmail

CTL_RCPT = b"Dsorry, that recipient address contains a control character (#5.1.3)"
CTL_SENDER = b"Dsorry, that sender address contains a control character (#5.1.7)"

# ---- qmail-qmtpd ----


def test_qmtp_recipient_with_cr_or_lf_gets_its_own_d_and_the_others_are_queued(procs, tree):
    control(tree, rcpthosts="test.example")
    rcpts = [b"a@test.example", b"b\r@test.example", b"c\nDelivered-To: x@test.example", b"d\r\n@other.example",
             b"e@test.example"]
    out, code, log = session(procs, tree, package([b"Subject: c", b"", b"x", b""], b"s@x.example", rcpts))
    assert code == 0 and K.fullmatch(out[0])
    assert out == [out[0], CTL_RCPT, CTL_RCPT, RCPTHOSTS_D, out[0]]  # rcpthosts wins, as over a NUL in qmail
    [(_, todo)] = queued(tree).values()
    assert todo.endswith(b"\0Fs@x.example\0Ta@test.example\0Te@test.example\0")


@pytest.mark.parametrize("sender", [b"s\r@x.example", b"s@x.example\n", b"s\r\nX-Injected: yes"])
def test_qmtp_sender_with_cr_or_lf_refuses_the_message_for_every_recipient(procs, tree, sender):
    control(tree, rcpthosts="test.example")
    out, code, log = session(procs, tree, package([b"x"], sender, [b"a@test.example", b"b@other.example",
                                                                    b"c@test.example"]))
    assert (out, code) == ([CTL_SENDER, RCPTHOSTS_D, CTL_SENDER], 0)
    assert "not queued (%s) qp " % CTL_SENDER.decode() in log
    assert_nothing_queued(tree)


def test_qmtp_package_after_a_refused_one_is_queued(procs, tree):
    control(tree, rcpthosts=None)
    data = package([b"1"], b"a\rb", [b"r@x"]) + package([b"2"], b"s@x", [b"r\n@x", b"t@x"])
    out, code, _ = session(procs, tree, data)
    assert out[:2] == [CTL_SENDER, CTL_RCPT] and K.fullmatch(out[2]) and code == 0
    [(_, todo)] = queued(tree).values()
    assert todo.endswith(b"\0Fs@x\0Tt@x\0")


ADDRESS = st.lists(st.sampled_from([b"a", b"@", b"\r", b"\n", b"\0", b"\xff", b","]), max_size=12).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(ADDRESS, st.lists(ADDRESS, max_size=4), st.booleans())
@example(b"\r", [b"\n", b"\0\r"], False)
def test_qmtp_sender_and_recipient_verdicts(sender, rcpts, crlf):
    reader = Reader(io.BytesIO(package([b"m"], sender, rcpts, crlf)))
    p = qmtp.read_package(reader, lambda crlf: None)
    assert p.sender == sender and p.recipients == rcpts
    if b"\0" in sender:
        assert p.sender_refusal == qmtp.BAD_SENDER  # qmail's text
    elif b"\r" in sender or b"\n" in sender:
        assert p.sender_refusal == qmtp.CONTROL_SENDER
    else:
        assert p.sender_refusal == "" and p.sender_ok
    assert p.sender_ok == (p.sender_refusal == "")
    for r in rcpts:
        verdict = qmtp.recipient_verdict(r)
        assert verdict == (qmtp.HAS_NUL if b"\0" in r else qmtp.HAS_CONTROL if b"\r" in r or b"\n" in r else "")
        assert (verdict == "") == (not any(c in r for c in b"\r\n\0"))
    too_long = qmtp.read_package(Reader(io.BytesIO(package([b"m"], b"\r" * 1000, []))), lambda crlf: None)
    assert too_long.sender_refusal == qmtp.BAD_SENDER  # 1000 bytes: qmail's text, the bytes are never read


# ---- qmail-inject and sendmail ----

FATAL = b"qmail-inject: fatal: address contains a control character: "


@pytest.mark.parametrize("args, message, env, shown", [
    (["a\rb@x.example"], b"\n", {}, b"a\\rb@x.example"),
    (["a\nb@x.example"], b"\n", {}, b"a\\nb@x.example"),
    (["-f", "s\n@x.example", "t@x.example"], b"\n", {}, b"s\\n@x.example"),
    (["-fs\r@x.example", "t@x.example"], b"\n", {}, b"s\\r@x.example"),
    ([], b'To: "a\rb"@x.example\n\n', {}, b"a\\rb@x.example"),
    ([], b'To: ok@x.example,\n "a\n b"@x.example\n\n', {}, b"a\\n b@x.example"),
    (["-h"], b"Cc: a\\\rb@x.example\n\n", {}, b"a\\rb@x.example"),
    (["-H", "t@x.example"], b"Bcc: a\0b@x.example\n\n", {}, b"a\\0b@x.example"),
    ([], b"Resent-To: x\0@x.example\nTo: t@x.example\n\n", {}, b"x\\0@x.example"),
    (["t@x.example"], b'Return-Path: <"r\rp"@x.example>\n\n', {}, b"r\\rp@x.example"),
    (["t@x.example"], b"\n", {"QMAILSUSER": "bounce\nX-Injected: yes"}, b"bounce\\nX-Injected: yes@test.example"),
    (["-n", "t\r@x.example"], b"\n", {}, b"t\\r@x.example"),
])
def test_inject_refuses_control_characters_in_every_envelope_address(tree, args, message, env, shown):
    p = inject(tree, message, *args, **env)
    assert (p.returncode, p.stderr, p.stdout) == (100, FATAL + shown + b"\n", b"")
    assert queued(tree) == {}


def test_inject_takes_a_header_with_a_cr_when_the_arguments_are_the_envelope(tree):
    """With -a the header fields are not the envelope: they are kept (rewritten), the message is queued."""
    p = inject(tree, b'To: "a\rb"@x.example\n\n', "-a", "-f", "", "t@x.example")
    assert p.returncode == 0 and FATAL not in p.stderr
    assert only_message(tree)[1:] == (b"", [b"t@x.example"])
    p = inject(tree, b"\n", "-f", "", "t\r@x.example")
    assert p.returncode == 100  # and the same message's arguments are checked


@pytest.mark.parametrize("args, message, shown", [
    (["-f", "s\n@x.example", "t@x.example"], b"\n", b"s\\n@x.example"),
    (["t\r@x.example"], b"\n", b"t\\r@x.example"),
    (["-t"], b"To: a\0b@x.example\n\n", b"a\\0b@x.example"),
])
def test_sendmail_gets_qmail_injects_refusal(tree, args, message, shown):
    p = sendmail(tree, message, *args)
    assert (p.returncode, p.stderr) == (100, FATAL + shown + b"\n")
    assert queued(tree) == {}


@given(st.binary(max_size=40))
@example(b"a\\rb\r\n\0")
def test_the_refused_address_is_shown_on_one_line(address):
    shown = visible(address)
    assert not any(c in shown for c in b"\r\n\0")
    assert len(shown) == len(address) + sum(address.count(c) for c in (b"\r", b"\n", b"\0"))
    if b"\\" not in address:  # then it reads back unambiguously
        assert shown.replace(b"\\r", b"\r").replace(b"\\n", b"\n").replace(b"\\0", b"\0") == address
