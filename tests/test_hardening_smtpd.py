"""Issue 17, hardening of qmail-smtpd: an envelope address holding a CR is refused in every form (qmail-local would
write it raw into Delivered-To), and a command line over the 4096-byte bound gets 500 at once and ends the session,
whether or not its LF ever comes; DATA lines are not bounded that way."""

import os
import re
import select
import socket
import subprocess
import time

import pytest
from hypothesis import example, given, settings, strategies as st

from conftest import program, qenv, queued
from pyqmail.lib.smtpd import smtpcmd, smtpio
from pyqmail.lib.rfc822.quote import has_control
from test_qmail_smtpd import GREETING, MSG, OK, control, messages, smtpd, trickle
from test_qmail_smtpd_data import addrparse


def envelopes(tree):
    """Return [(message without our two-line Received, sender, recipients)] of the queue."""
    return [(mess.split(b"\n", 2)[2], sender, rcpts) for mess, sender, rcpts in messages(tree)]

LONGLINE = b"500 command line too long (#5.5.2)\r\n"
CTL_MAIL = b"553 sorry, that sender address contains a control character (#5.1.7)\r\n"
CTL_RCPT = b"553 sorry, that recipient address contains a control character (#5.1.3)\r\n"

# every way qmail's addrparse lets a CR into the address: bare, quoted, backslash-escaped, unbracketed,
# after a source route, and a CR before the CRLF of an unbracketed address
CR_FORMS = [b"<a\rb@x.example>", b'<"a\rb"@x.example>', b"<a\\\rb@x.example>", b"a\rb@x.example",
            b'"a\rb"@x.example', b"a\\\rb@x.example", b"<@r.example:a\rb@x.example>", b"<a@x.example\r>",
            b"a@x.example\r", b' <"x y\r"@x.example> SIZE=10']


@pytest.mark.parametrize("form", CR_FORMS)
def test_a_cr_in_the_sender_is_refused_and_the_session_goes_on(tree, form):
    code, out = smtpd(tree, b"MAIL FROM:" + form + b"\r\nRCPT TO:<c@test.example>\r\n" + MSG % b"x" + b"QUIT\r\n")
    assert code == 0
    assert out.startswith(GREETING + CTL_MAIL + b"503 MAIL first (#5.5.1)\r\n" + OK + OK + b"354 go ahead\r\n250 ok ")
    assert out.endswith(b"\r\n221 test.example\r\n")
    assert envelopes(tree) == [(b"x\n", b"a@b.example", [b"c@test.example"])]


@pytest.mark.parametrize("form", CR_FORMS)
def test_a_cr_in_a_recipient_is_refused_and_the_others_are_kept(tree, form):
    code, out = smtpd(tree, b"MAIL FROM:<a@b.example>\r\nRCPT TO:" + form + b"\r\nRCPT TO:<c@test.example>\r\n"
                      b"DATA\r\nx\r\n.\r\n")
    assert out.startswith(GREETING + OK + CTL_RCPT + OK + b"354 go ahead\r\n250 ok ")
    assert envelopes(tree) == [(b"x\n", b"a@b.example", [b"c@test.example"])]


def test_a_refused_mail_leaves_an_earlier_transaction_as_qmails_555_does(tree):
    code, out = smtpd(tree, b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@test.example>\r\nMAIL FROM:<e\rvil@x>\r\n"
                      b"DATA\r\nx\r\n.\r\n")
    assert out.startswith(GREETING + OK + OK + CTL_MAIL + b"354 go ahead\r\n250 ok ")
    [(_, todo)] = queued(tree).values()
    assert todo.endswith(b"\0Fa@b.example\0Tc@test.example\0") and b"\r" not in todo


def test_no_control_character_ever_reaches_the_queue(tree):
    """A NUL ends the command as in qmail, an LF ends the line: neither can be in an address; a CR is refused."""
    script = (b"MAIL FROM:<a\0\r\nb@b.example>\r\nRCPT TO:<c@test.example>\r\nRCPT TO:<d\0x>\r\nRCPT TO:<e\nf>\r\n"
              b"RCPT TO:<g\rh@test.example>\r\nDATA\r\nx\r\n.\r\n")
    code, out = smtpd(tree, script)
    assert CTL_RCPT in out
    [(_, todo)] = queued(tree).values()
    fields = todo.split(b"\0")
    assert not any(b"\r" in f or b"\n" in f for f in fields)
    assert [f for f in fields if f[:1] in (b"F", b"T")] == [b"Fa", b"Tc@test.example", b"Td", b"Te"]


ARG = st.lists(st.sampled_from([b"<", b">", b":", b" ", b"@", b'"', b"\\", b"a", b"b.c", b"\r", b"\0", b"\xe9",
                                b"SIZE=1"]), max_size=25).map(b"".join)


@settings(max_examples=2000, deadline=None)
@given(ARG)
@example(b"<a\\\rb>")
@example(b':"\r"')
@example(b"<a\r\0b>\r")
def test_the_refusal_is_exactly_a_cr_in_what_qmails_addrparse_would_store(arg):
    line = b"MAIL FROM" + arg  # a command line as readline gives it: never an LF
    verb, command_arg = smtpcmd.split_command(line)
    address, _ = smtpcmd.parse_address(command_arg)
    c = (line[:-1] if line.endswith(b"\r") else line).split(b"\0", 1)[0]  # qmail: CR stripped, C string
    expected = addrparse(c.split(b" ", 1)[1].lstrip(b" ") if b" " in c else b"")
    assert address == expected
    assert has_control(address) == (b"\r" in expected)
    assert b"\0" not in address and b"\n" not in address


# ---- the command-line bound ----


def test_a_line_of_4096_bytes_passes_and_4097_ends_the_session_at_once(tree):
    ok = b"NOOP " + b"x" * (4096 - 6) + b"\r\n"  # 4096 bytes before the LF, the CR included
    over = b"NOOP " + b"x" * (4096 - 5) + b"\r\n"
    assert smtpd(tree, ok + b"QUIT\r\n") == (0, GREETING + OK + b"221 test.example\r\n")
    assert smtpd(tree, ok + over + b"NOOP\r\nQUIT\r\n") == (1, GREETING + OK + LONGLINE)


def read_until_eof(sock, deadline):
    """Read from sock until EOF or the deadline; return (bytes, True if EOF came)."""
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = sock.recv(65536)
        if not chunk:
            return data, True
        data += chunk
    return data, False


@pytest.mark.parametrize("before", [b"", b"EHLO x\r\nMAIL FROM:<a@b.example>\r\n"])
def test_a_line_without_lf_gets_500_at_once_not_after_timeoutsmtpd(tree, before):
    control(tree, timeoutsmtpd=60)
    ours, theirs = socket.socketpair()
    p = subprocess.Popen([program("qmail-smtpd")], stdin=theirs, stdout=theirs, env=qenv(tree))
    theirs.close()
    try:
        ours.sendall(before + b"RCPT TO:<" + b"y" * 5000)  # no LF, and the client stays connected
        data, eof = read_until_eof(ours, time.monotonic() + 15)
        assert data.endswith(LONGLINE) and eof, data[-200:]
        assert p.wait(15) == 1
    finally:
        ours.close()
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_client_trickling_a_line_without_lf_is_cut_off_at_the_bound(tree):
    code, elapsed, data = trickle(tree, b"HELO x\r\n", b"z" * 400, 0.05)  # about 8 KB/s, never an LF
    assert code == 1 and elapsed < 10
    assert data == GREETING + b"250 test.example\r\n" + LONGLINE


def test_long_data_lines_are_not_command_lines(tree):
    body = b"Subject: long\r\n\r\n" + b"d" * 300000 + b"\r\n" + b"e" * 70000 + b"\r\nend"
    code, out = smtpd(tree, MSG % body + b"NOOP " + b"n" * 5000 + b"\r\nQUIT\r\n")
    assert code == 1
    assert re.fullmatch(GREETING + OK + OK + rb"354 go ahead\r\n250 ok \d+ qp \d+\r\n" + re.escape(LONGLINE), out), out
    [(stored, _, _)] = envelopes(tree)
    assert stored == b"Subject: long\n\n" + b"d" * 300000 + b"\n" + b"e" * 70000 + b"\nend\n"


# ---- SmtpIO.readline against a reference, any input, any way of cutting it into reads ----


class Scripted(smtpio.SmtpIO):
    """SmtpIO whose reads come from a list of chunks (then the client is gone)."""

    def __init__(self, chunks):
        self.fd_pair = os.pipe()
        super().__init__(self.fd_pair[0], self.fd_pair[1])
        self.chunks = list(chunks)
        self.read_count = 0

    def _recv(self):
        """Return the next chunk; Gone at the end."""
        if not self.chunks:
            raise smtpio.Gone()
        self.read_count += 1
        return self.chunks.pop(0)

    def close(self):
        """Close the pipe polled by SmtpIO."""
        for fd in self.fd_pair:
            os.close(fd)


def expected_lines(data, limit):
    """What readline must give for data: each line, then "long" for the first one over limit, or "gone"."""
    out = []
    *lines, last = data.split(b"\n")
    for line in lines:
        if len(line) > limit:
            return out + ["long"]
        out.append(line)
    return out + ["long" if len(last) > limit else "gone"]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"\0", b"xxxxxxx", b"y" * 20]), max_size=30),
       st.lists(st.integers(1, 40), max_size=20), st.sampled_from([1, 8, 16]))
@example([b"y" * 20, b"\n"], [17, 4], 16)
def test_readline_gives_each_line_and_refuses_one_over_the_bound_without_waiting_for_its_lf(atoms, sizes, limit):
    data = b"".join(atoms)
    chunks, pos = [], 0
    for size in sizes + [len(data)]:
        if pos < len(data):
            chunks.append(data[pos:pos + size])
            pos += size
    io = Scripted(chunks)
    saved, smtpio.LINE_LIMIT = smtpio.LINE_LIMIT, limit
    got = []
    try:
        while True:
            try:
                got.append(io.readline())
            except smtpio.LineTooLong:
                got.append("long")
                break
            except smtpio.Gone:
                got.append("gone")
                break
    finally:
        smtpio.LINE_LIMIT = saved
        io.close()
    assert got == expected_lines(data, limit)
    if got[-1] == "long":  # no read past the one that crossed the bound, LF or not
        start = sum(len(line) + 1 for line in got[:-1])
        crossing = next(i for i in range(len(chunks) + 1) if sum(map(len, chunks[:i])) > start + limit)
        assert io.read_count <= crossing
