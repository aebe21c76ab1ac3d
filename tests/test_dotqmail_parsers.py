"""Property and example tests for the pure parts of qmail-local and the helpers."""

import os
import re
import tempfile

from hypothesis import given, strategies as st

from pyqmail.lib.config import dotqmail
from pyqmail.lib.local import biff, msgfd
from pyqmail.lib.rfc822 import addrlist, headerbody
from pyqmail.lib.local.delivery_env import dtline, myctime, rpline, ufline
from pyqmail.lib.local.mbox import FROM_, FromQuoter
from pyqmail.lib.rfc822.quote import quote, quote2, quote_need
from pyqmail.lib.local.maildir import unique_name

ext_bytes = st.binary(max_size=40) | st.text("abAB.-:/xdefault", max_size=30).map(str.encode)


@given(ext_bytes)
def test_safe_ext(ext):
    safe = dotqmail.safe_ext(ext)
    assert len(safe) == len(ext) and b"." not in safe
    assert not re.search(rb"[A-Z]", safe)
    assert dotqmail.safe_ext(safe) == safe
    for a, b in zip(ext, safe):
        assert b == a or (a == ord(".") and b == ord(":")) or (65 <= a <= 90 and b == a + 32)


@given(st.sampled_from([b"", b"-"]), ext_bytes)
def test_candidates_order(dash, ext):
    names = dotqmail.candidates(dash, ext)
    safe = dotqmail.safe_ext(ext)
    assert names[0][0] == b".qmail" + dash + safe
    assert names[-1] == (b".qmail" + dash + b"default", ext)
    cut_points = [len(n) - len(b".qmail" + dash + b"default") for n, _ in names[1:]]
    assert cut_points == sorted(cut_points, reverse=True)
    for (name, default), i in zip(names[1:], cut_points):
        assert name == b".qmail" + dash + safe[:i] + b"default" and default == ext[i:]
        assert i == 0 or safe[i - 1:i] == b"-"
    for name, _ in names:
        assert name.startswith(b".qmail") and b".." not in name[1:]


def test_candidates_examples():
    assert [n for n, _ in dotqmail.candidates(b"-", b"a-b-c")] == [
        b".qmail-a-b-c", b".qmail-a-b-default", b".qmail-a-default", b".qmail-default"]
    assert [n for n, _ in dotqmail.candidates(b"-", b"a-")] == [
        b".qmail-a-", b".qmail-a-default", b".qmail-default"]
    assert dotqmail.candidates(b"", b"") == [(b".qmail", None), (b".qmaildefault", b"")]
    assert dotqmail.candidates(b"-", b"x-Default")[0] == (b".qmail-x-default", b"Default")


line_text = st.text(alphabet="./|&#+ \t\rab@-\0list", max_size=20).map(str.encode)


@given(st.lists(line_text, max_size=8), st.booleans())
def test_parse_lines(lines, final_newline):
    text = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    parsed = dotqmail.parse(text)
    expected = text.split(b"\n") if not text.endswith(b"\n") else text.split(b"\n")[:-1]
    assert len(parsed) == len(expected)
    for n, ((kind, value, shown), raw) in enumerate(zip(parsed, expected)):
        line = raw.rstrip(b" \t\r")
        assert b"\0" not in value or kind in (dotqmail.COMMENT, dotqmail.PLUS, dotqmail.LIST)
        if kind == dotqmail.FIRST_BLANK:
            assert n == 0
        if kind == dotqmail.MAILDIR:
            assert line.endswith(b"/") and line[:1] in b"./"
        if kind == dotqmail.PROGRAM:
            assert line.startswith(b"|") and shown == line[1:]
        if kind == dotqmail.FORWARD:
            assert line[:1] not in (b"#", b".", b"/", b"|", b"+", b"", b"\0")


def test_classify_examples():
    assert dotqmail.parse(b"./Maildir/\n./Mbox \t\n|cmd x \n&a@b\nc@d\n+list\n+x\n#c\n\n") == [
        ("maildir", b"./Maildir/", b"./Maildir/"), ("mbox", b"./Mbox", b"./Mbox"),
        ("program", b"cmd x", b"cmd x"), ("forward", b"a@b", b"a@b"), ("forward", b"c@d", b"c@d"),
        ("+list", b"+list", b"+list"), ("plus", b"+x", b"+x"), ("comment", b"#c", b"#c"), ("blank", b"", b"")]


def test_a_crlf_dot_qmail_means_what_its_lf_twin_means():
    # qmail kept the CR: `./Maildir/<CR>` was an mbox named CR inside the Maildir, logged as a success
    lf = b"./Maildir/\n|cmd x\n&a@b\n./Mbox\n"
    assert dotqmail.parse(lf.replace(b"\n", b"\r\n")) == dotqmail.parse(lf)
    assert dotqmail.parse(b"./Maildir/ \t\r\n")[0][:2] == ("maildir", b"./Maildir/")
    assert dotqmail.parse(b"\n")[0][0] == dotqmail.FIRST_BLANK


@given(st.binary(max_size=30))
def test_ext_and_host_parts(value):
    e2, e3, e4 = dotqmail.ext_parts(value)
    assert value.endswith(e2) and e2.endswith(e3) and e3.endswith(e4)
    h2, h3, h4 = dotqmail.host_parts(value)
    assert value.startswith(h2) and h2.startswith(h3) and h3.startswith(h4)
    assert h2 == (value.rsplit(b".", 1)[0] if b"." in value else value)


def test_ext_host_examples():
    assert dotqmail.ext_parts(b"a-b-c-d-e") == (b"b-c-d-e", b"c-d-e", b"d-e")
    assert dotqmail.ext_parts(b"a") == (b"", b"", b"")
    assert dotqmail.host_parts(b"a.b.c.d.e") == (b"a.b.c.d", b"a.b.c", b"a.b")
    assert dotqmail.host_parts(b"nodot") == (b"nodot",) * 3


def test_new_sender():
    args = (b"joe-list", b"example.com")
    assert dotqmail.new_sender(b"s@x", *args, True, False) == b"joe-list-owner@example.com"
    assert dotqmail.new_sender(b"s@x", *args, True, True) == b"joe-list-owner-@example.com-@[]"
    assert dotqmail.new_sender(b"", *args, True, True) == b""
    assert dotqmail.new_sender(b"#@[]", *args, True, True) == b"#@[]"
    assert dotqmail.new_sender(b"s@x", *args, False, False) == b"s@x"


def unquote(q):
    """Invert quote() for the tests."""
    if not q.startswith(b'"'):
        return q
    return re.sub(rb"\\(.)", rb"\1", q[1:-1], flags=re.S)


@given(st.binary(max_size=30))
def test_quote_round_trip(box):
    q = quote(box)
    assert unquote(q) == box
    assert (q == box) == (not quote_need(box))


def test_quote_examples():
    assert quote2(b"") == b""
    assert quote2(b"joe@x") == b"joe@x"
    assert quote2(b"a b@c@d") == b'"a b@c"@d'
    assert quote2(b".x@y") == b'".x"@y' and quote2(b"a..b@y") == b'"a..b"@y'
    assert quote2(b'q"\\@y') == b'"q\\"\\\\"@y'
    assert rpline(b"a\nb@c") == b'Return-Path: <"a\\_b"@c>\n'
    assert dtline(b"j\no", b"h") == b"Delivered-To: j_o@h\n"


def test_myctime_and_ufline():
    assert myctime(0) == b"Thu Jan 01 00:00:00 1970\n"
    assert myctime(1000000000) == b"Sun Sep 09 01:46:40 2001\n"
    assert ufline(b"", 0) == b"From MAILER-DAEMON Thu Jan 01 00:00:00 1970\n"
    assert ufline(b"a b\tc\nd", 0).startswith(b"From a-b-c-d ")


def gfrom(line):
    """Return True if line is a From_ line after skipping any number of leading `>` (qmail's gfrom)."""
    return line.lstrip(b">").startswith(FROM_)


def quote_lines(data):
    """Return data with one more `>` before every From_ line, and a final `\\n` if the last line is partial."""
    quoter = FromQuoter()
    return b"".join(quoter.feed(data)) + quoter.finish()


def reference_quote(data):
    """Line-by-line >From quoting as qmail-local's mailfile does it."""
    out = []
    for line in data.splitlines(keepends=True):
        out.append((b">" if gfrom(line) else b"") + line)
    if data and not data.endswith(b"\n"):
        out.append(b"\n")
    return b"".join(out)


message_bytes = st.lists(st.sampled_from([b">", b"From ", b"From", b"F", b"\n", b"x", b" ", b"rom "]),
                         max_size=30).map(b"".join)


@given(message_bytes, st.lists(st.integers(1, 7), max_size=10))
def test_streaming_from_quoting_matches_reference(data, cuts):
    quoter = FromQuoter()
    out, pos = [], 0
    for size in cuts + [len(data)]:
        out.extend(quoter.feed(data[pos:pos + size]))
        pos += size
    assert b"".join(out) + quoter.finish() == reference_quote(data)


def test_gfrom_examples():
    assert gfrom(b"From x") and gfrom(b">>From ") and not gfrom(b"From") and not gfrom(b" From x")
    assert quote_lines(b"From a\n>From b\nFromage\nx") == b">From a\n>>From b\nFromage\nx\n"


def reference_loop(data, wanted):
    """qmail's bouncexf over a whole message in memory."""
    for line in data.split(b"\n")[:-1]:
        line += b"\n"
        if len(line) <= 1:
            return False
        if line == wanted:
            return True
    return False


@given(st.lists(st.sampled_from([b"D: x\n", b"\n", b"D: x", b"a\n", b"D: xx\n", b" D: x\n"]), max_size=8))
def test_header_loop_scan(parts):
    data = b"".join(parts)
    fd, path = tempfile.mkstemp()
    os.write(fd, data)
    try:
        assert msgfd.header_has_line(fd, b"D: x\n") == reference_loop(data, b"D: x\n")
    finally:
        os.close(fd)
        os.unlink(path)


def test_maildir_unique_name():
    assert unique_name(1.25, 42, "a/b:c", "0f") == "1.M250000P42R0f.a\\057b\\072c"


@given(st.lists(st.from_regex(rb"\A[a-z]{1,5}@[a-z]{1,5}\.com\Z"), min_size=1, max_size=4))
def test_addrlist_finds_every_address(addrs):
    forms = [b"Name <%s>" % addrs[0]] + [b"%s (comment)" % a for a in addrs[1:]]
    assert addrlist.addresses(b", ".join(forms)) == addrs


def test_addrlist_examples():
    assert addrlist.addresses(b'"a b"@c, group: d@e, <@r1,@r2:f@g>;, (x) h@i') == [
        b"a b@c", b"d@e", b"f@g", b"h@i"]
    assert addrlist.addresses(b"Joe \"Q\" <j.o.e@[1.2.3.4]>") == [b"j.o.e@[1.2.3.4]"]


@given(st.binary(max_size=200))
def test_addrlist_never_crashes(value):
    for a in addrlist.addresses(value):
        assert isinstance(a, bytes) and a


def test_header_split():
    parts = list(headerbody.split(iter([b"A: 1\n", b" 2\n", b"Subject:  hi\n", b"\n", b"body\n"])))
    assert parts == [("field", b"A: 1\n 2\n"), ("field", b"Subject:  hi\n"), ("body", b"body\n")]
    assert headerbody.field_value_start(b"Subject: \t hi\n") == 11
    assert list(headerbody.split(iter([b"no header line\n"]))) == [("body", b"no header line\n")]


def test_biff_notice_and_utmp():
    text = biff.preview([("field", b"Subject: hi\n"), ("body", b"x" * 100)])
    assert text == b"    hi\n" + b"x" * 71
    assert biff.notice(b"joe", b"a\x01@b", text) == (
        b"\r\n\a*** TO <joe> FROM <a_@b>\r\n    hi/" + b"x" * 71 + b"\r\n")

    def record(kind, line, user):
        rec = bytearray(biff.RECORD)
        rec[0:2] = kind.to_bytes(2, "little")
        rec[8:8 + len(line)] = line
        rec[44:44 + len(user)] = user
        return bytes(rec)
    utmp = b"".join([record(7, b"pts/1", b"joe"), record(7, b"tty1", b"ann"), record(8, b"tty2", b"joe"),
                     record(7, b"../etc", b"joe"), record(7, b"/dev/x", b"joe"), record(7, b"tty3", b"joe")])
    assert biff.tty_lines(utmp, b"joe") == [b"pts/1", b"tty3"]
