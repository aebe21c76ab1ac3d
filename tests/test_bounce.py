"""qmail-send's bounces: bounce/N entries, single/double/triple bounces, VERP (qmail-send(8); qmail-send.c
addbounce, injectbounce, senderadd)."""

import calendar

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.send import bounce, verp
from pyqmail.lib.send.rewrite import Rewriter

CONTROLS = bounce.BounceControls(b"MAILER-DAEMON", b"test.example", b"postmaster@test.example")
NOW = calendar.timegm((1995, 9, 26, 4, 46, 54))
MESS = b"Received: (qmail 77 invoked by uid 1000); 26 Sep 1995 04:40:00 -0000\nSubject: hi\n\nbody\n"
ENTRY = b"<nobody@test.example>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"


@pytest.mark.parametrize("recip, report, expected", [
    (b"a@b", b"Sorry.\n", b"<a@b>:\nSorry.\n\n"),
    (b"a@b", b"Sorry.", b"<a@b>:\nSorry.\n\n"),                      # a final newline is added
    (b"a@b", b"", b"<a@b>:\n\n"),
    (b"a@b", b"one\n\ntwo\n", b"<a@b>:\none\n/two\n\n"),               # the blank line's newline becomes /
    (b"a@b", b"one\n\n\ntwo\n", b"<a@b>:\none\n//two\n\n"),
    (b"a@b", b"\nlead\n", b"<a@b>:\n/lead\n\n"),
    (b"a@b", b"end\n\n", b"<a@b>:\nend\n\n\n"),                       # the last byte is never scanned
    (b"a\nb@c", b"x\n", b"<a_b@c>:\nx\n\n"),
])
def test_entry_bytes(recip, report, expected):
    assert bounce.entry(recip, report) == expected


def test_entry_strips_the_virtualdomain_prepend():
    r = Rewriter(b"e", [b"l"], (), [b"virt.example:vprep"])
    assert bounce.entry(b"vprep-x@virt.example", b"no\n", r.strip_vdom_prepend) == b"<x@virt.example>:\nno\n\n"


@given(st.binary(max_size=20), st.binary(max_size=60))
def test_entry_properties(recip, report):
    text = bounce.entry(recip, report)
    head, _, rest = text.partition(b">:\n")
    assert head == b"<" + recip.replace(b"\n", b"_")
    assert text.endswith(b"\n\n")
    # no blank line survives inside an entry (qmail never scans the entry's last byte)
    assert b"\n\n" not in text[:-2]
    assert len(text) == len(b"<" + recip + b">:\n" + report) + 1 + (report[-1:] not in (b"\n", b""))
    assert rest.replace(b"/", b"\n")[:len(report)] == report.replace(b"/", b"\n")


def test_controls_defaults_and_me():
    table = {}
    c = bounce.controls_from(table.get, b"me.example")
    assert c == bounce.BounceControls(b"MAILER-DAEMON", b"me.example", b"postmaster@me.example")
    c = bounce.controls_from(table.get, None)
    assert c == bounce.BounceControls(b"MAILER-DAEMON", b"bouncehost", b"postmaster@doublebouncehost")
    table = {"bouncefrom": b"bounces", "bouncehost": b"bh.example", "doublebounceto": b"dbl",
             "doublebouncehost": b"dh.example"}
    c = bounce.controls_from(table.get, b"me.example")
    assert c == bounce.BounceControls(b"bounces", b"bh.example", b"dbl@dh.example")


@pytest.mark.parametrize("sender, expected", [
    (b"joe@a.example", ("single", b"", b"joe@a.example", b"joe@a.example")),
    (b"list-@l.example-@[]", ("single", b"", b"list-@l.example", b"list-@l.example")),
    (b"", ("double", b"#@[]", b"postmaster@test.example", b"")),
    (b"-@[]", ("double", b"#@[]", b"postmaster@test.example", b"")),   # VERP reduction leaves nothing
    (b"#@[]", ("triple", None, None, b"#@[]")),
])
def test_plan(sender, expected):
    assert tuple(bounce.plan(sender, CONTROLS)) == expected


def test_single_bounce_message_bytes():
    b = bounce.plan(b"joe@a.example", CONTROLS)
    assert bounce.message(b, CONTROLS, NOW, ENTRY, MESS) == (
        b"Date: 26 Sep 1995 04:46:54 -0000\n"
        b"From: MAILER-DAEMON@test.example\n"
        b"To: joe@a.example\n"
        b"Subject: failure notice\n"
        b"\n"
        b"Hi. This is the qmail-send program at test.example.\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\n"
        b"\n"
        b"<nobody@test.example>:\n"
        b"Sorry, no mailbox here by that name. (#5.1.1)\n"
        b"\n"
        b"--- Below this line is a copy of the message.\n"
        b"\n"
        b"Return-Path: <joe@a.example>\n"
        b"Received: (qmail 77 invoked by uid 1000); 26 Sep 1995 04:40:00 -0000\n"
        b"Subject: hi\n"
        b"\n"
        b"body\n")


def test_double_bounce_message_bytes():
    b = bounce.plan(b"", CONTROLS)
    assert bounce.message(b, CONTROLS, NOW + 86400 * 5, ENTRY, MESS) == (
        b"Date: 1 Oct 1995 04:46:54 -0000\n"
        b"From: MAILER-DAEMON@test.example\n"
        b"To: postmaster@test.example\n"
        b"Subject: failure notice\n"
        b"\n"
        b"Hi. This is the qmail-send program at test.example.\n"
        b"I tried to deliver a bounce message to this address, but the bounce bounced!\n"
        b"\n"
        b"<nobody@test.example>:\n"
        b"Sorry, no mailbox here by that name. (#5.1.1)\n"
        b"\n"
        b"--- Below this line is the original bounce.\n"
        b"\n"
        b"Return-Path: <>\n" + MESS)


def test_bounce_quotes_from_to_and_return_path():
    controls = bounce.BounceControls(b"mailer daemon", b"h.example", b"postmaster@h.example")
    b = bounce.plan(b'odd "box"@a.example', controls)
    text = bounce.message(b, controls, NOW, b"", b"")
    assert b'From: "mailer daemon"@h.example\n' in text
    assert b'To: "odd \\"box\\""@a.example\n' in text
    assert text.endswith(b'Return-Path: <"odd \\"box\\""@a.example>\n')
    assert b.recipient == b'odd "box"@a.example'  # the envelope keeps the raw address


def test_verp_bounce_goes_to_the_reduced_sender():
    b = bounce.plan(b"owner-@lists.example-@[]", CONTROLS)
    text = bounce.message(b, CONTROLS, NOW, ENTRY, MESS)
    assert b"To: owner-@lists.example\n" in text
    assert b"Return-Path: <owner-@lists.example>\n" in text


@pytest.mark.parametrize("sender, recip, expected", [
    (b"owner-@host.example-@[]", b"box@r.example", b"owner-box=r.example@host.example"),
    (b"owner-@host.example-@[]", b"nobox", b"owner-@host.example-@[]"),      # recipient without @
    (b"-@[]", b"box@r.example", b"-@[]"),                                      # no @ before the suffix
    (b"a@b@h-@[]", b"x@y@z", b"a@bx@y=z@h"),                                   # last @ on both sides
    (b"plain@host.example", b"box@r.example", b"plain@host.example"),
    (b"", b"box@r.example", b""),
])
def test_verp_delivery_sender(sender, recip, expected):
    assert verp.delivery_sender(sender, recip) == expected


ATOM = st.binary(min_size=0, max_size=8).filter(lambda b: b"@" not in b)


@given(ATOM, ATOM, ATOM, ATOM)
def test_verp_delivery_sender_property(pre, host, box, rhost):
    sender = pre + b"@" + host + b"-@[]"
    assert verp.delivery_sender(sender, box + b"@" + rhost) == pre + box + b"=" + rhost + b"@" + host
    assert verp.bounce_recipient(sender) == pre + b"@" + host


def test_bounce_header_lines_stay_one_line_whatever_the_sender_holds():
    """A sender with CR or LF (possible by QMQP or qmail-queue) writes `_` in the bounce's To: and Return-Path:
    (issue 17), so no header the sender chose appears; the envelope recipient keeps the raw address."""
    import email
    b = bounce.plan(b"a\rX-Evil: 1\nX-Evil: 2@x.example", CONTROLS)
    text = bounce.message(b, CONTROLS, NOW, ENTRY, MESS)
    assert b'To: "a\\_X-Evil: 1\\_X-Evil: 2"@x.example\n' in text  # quoted as qmail does, then made one line
    assert b'Return-Path: <"a\\_X-Evil: 1\\_X-Evil: 2"@x.example>\n' in text
    assert "X-Evil" not in email.message_from_bytes(text)
    assert b.recipient == b"a\rX-Evil: 1\nX-Evil: 2@x.example"
