"""The spawn wire protocol, the lspawn/rspawn report mappings and qmail-clean's commands (qmail-lspawn(8),
qmail-rspawn(8), qmail-clean(8))."""

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.spawn import spawnproto as sp

no_nul = st.binary(max_size=300).map(lambda b: b.replace(b"\0", b"."))
requests = st.tuples(st.integers(0, 255), no_nul, no_nul, no_nul)


def exited(code):
    """Return the wait status of a child that exited with code."""
    return code << 8


def chunked(data, cuts):
    """Split data at the given offsets."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


@given(st.lists(requests, max_size=8), st.lists(st.integers(0, 10000), max_size=20))
def test_reader_returns_every_request_whatever_the_chunking(reqs, cuts):
    stream = b"".join(sp.encode_request(*r) for r in reqs)
    reader = sp.RequestReader()
    got = [req for piece in chunked(stream, cuts) for req in reader.feed(piece)]
    assert got == [sp.Request(*r, False) for r in reqs]


@given(st.integers(3, 50), st.lists(st.integers(0, 500), max_size=10))
def test_reader_bounds_a_field_and_recovers_at_the_next_request(bound, cuts):
    stream = sp.encode_request(7, b"1/2", b"s" * (bound + 1), b"r@x") + sp.encode_request(8, b"3", b"", b"a@b")
    reader = sp.RequestReader(field_max=bound)
    got = [req for piece in chunked(stream, cuts) for req in reader.feed(piece)]
    assert [(r.delnum, r.overflow) for r in got] == [(7, True), (8, False)]
    assert len(got[0].sender) <= bound
    assert sp.request_error(got[0], 120, {}) == b"Zqmail-spawn out of memory. (#4.3.0)\n"


def test_reader_waits_for_the_third_nul():
    reader = sp.RequestReader()
    assert reader.feed(b"\x05" + b"1/1\0sender\0rcpt@x") == []
    assert reader.feed(b"\0") == [sp.Request(5, b"1/1", b"sender", b"rcpt@x", False)]


@pytest.mark.parametrize("req, in_use, text", [
    ((120, b"1/1", b"", b"a@b"), {}, b"ZInternal error: delnum too big. (#4.3.5)\n"),
    ((255, b"x", b"", b"a"), {}, b"ZInternal error: delnum too big. (#4.3.5)\n"),
    ((3, b"1/1", b"", b"a@b"), {3: None}, b"ZInternal error: delnum in use. (#4.3.5)\n"),
    ((0, b"1/a", b"", b"a@b"), {}, b"DInternal error: messid has nonnumerics. (#5.3.5)\n"),
    ((0, b"/12", b"", b"a@b"), {}, b"DInternal error: messid has nonnumerics. (#5.3.5)\n"),
    ((0, b"../1", b"", b"a@b"), {}, b"DInternal error: messid has nonnumerics. (#5.3.5)\n"),
    ((0, b"1" * 100, b"", b"a@b"), {}, b"DInternal error: messid too long. (#5.3.5)\n"),
    ((0, b"", b"", b"a@b"), {}, b"DInternal error: messid too short. (#5.3.5)\n"),
    ((0, b"1/1", b"", b"nohost"), {}, b"DSorry, address must include host name. (#5.1.3)\n"),
    ((0, b"1" * 99, b"", b"a@b"), {}, None),
    ((119, b"12/34//5", b"", b"@"), {1: None}, None),
])
def test_request_errors_in_spawn_c_order(req, in_use, text):
    assert sp.request_error(sp.Request(*req, False), 120, in_use) == text


@given(st.text("0123456789/", min_size=1, max_size=98).filter(lambda s: s[0] != "/"))
def test_digits_and_inner_slashes_pass(messid):
    assert sp.request_error(sp.Request(0, messid.encode(), b"", b"a@b", False), 120, {}) is None


@given(st.binary(max_size=8000), st.lists(st.integers(0, 8000), max_size=30))
def test_output_truncation_keeps_the_start_and_is_bounded(data, cuts):
    out = bytearray()
    for piece in chunked(data, cuts):
        sp.append_output(out, piece)
        assert len(out) <= sp.LOCAL_TRUNC
    expect = data if len(data) <= 3000 else data[:2966] + b"\nError report too long, sorry.\n"
    assert bytes(out) == expect


@pytest.mark.parametrize("code, text", [
    (117, b"ZTrouble reading users/cdb in qmail-lspawn.\n"), (119, b"ZOut of memory in qmail-lspawn.\n"),
    (118, b"ZTemporary failure in qmail-lspawn.\n"), (116, b"ZUnable to find alias user!\n"),
    (113, b"ZNot allowed to perform deliveries as root.\n"), (112, b"ZInternal qmail-lspawn bug.\n"),
    (115, b"ZNFS failure in qmail-local.\n"), (126, b"DUnable to run qmail-local.\n"),
    (120, b"ZUnable to run qmail-local.\n"), (121, b"ZUnable to run qmail-getpw.\n"),
    (111, b"Zout\n"), (71, b"Zout\n"), (74, b"Zout\n"), (75, b"Zout\n"), (0, b"Kout\n"),
    (100, b"Dout\n"), (1, b"Dout\n"), (99, b"Dout\n"), (255, b"Dout\n"),
])
def test_local_report_table(code, text):
    assert sp.local_report(exited(code), b"out\n\0ignored after NUL") == text


def test_local_report_crash_ignores_output():
    assert sp.local_report(9, b"anything") == b"Zqmail-local crashed.\n"


@given(st.binary(max_size=200))
def test_local_report_is_a_letter_and_output_up_to_nul(output):
    rep = sp.local_report(exited(0), output)
    assert rep == b"K" + output.split(b"\0")[0]


def test_remote_report_spec_example():
    out = b"h1.2.3.4 does not like recipient.\nRemote host said: 550 no\n\0DGiving up on 1.2.3.4.\n\0"
    assert sp.remote_report(0, out) == (
        b"D1.2.3.4 does not like recipient.\nRemote host said: 550 no\nGiving up on 1.2.3.4.\n")


@pytest.mark.parametrize("out, rep", [
    (b"r\0K1.2.3.4 accepted message.\n\0", b"K1.2.3.4 accepted message.\n"),
    (b"s1.2.3.4 does not like recipient.\n\0DGiving up on 1.2.3.4.\n\0",
     b"Z1.2.3.4 does not like recipient.\nGiving up on 1.2.3.4.\n"),
    (b"r\0ZConnected to 1.2.3.4 but connection died.\n\0", b"ZConnected to 1.2.3.4 but connection died.\n"),
    (b"r\0DGiving up.\n\0", b"DGiving up.\n"),
    (b"h550 no.\n\0KAccepted.\n\0", b"D550 no.\n"),  # a message result better than the letter adds nothing
    (b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n\0",
     b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n"),
    (b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0",
     b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n"),
    (b"no nul at all", b"D"),
])
def test_remote_report_letters(out, rep):
    assert sp.remote_report(0, out) == rep


@pytest.mark.parametrize("wstat, out, rep", [
    (9, b"r\0K\0", b"Zqmail-remote crashed.\n"), (exited(111), b"", b"ZUnable to run qmail-remote.\n"),
    (exited(100), b"", b"DUnable to run qmail-remote.\n"), (exited(1), b"K\0", b"DUnable to run qmail-remote.\n"),
    (exited(0), b"", b"Zqmail-remote produced no output.\n"),
])
def test_remote_report_exit_codes(wstat, out, rep):
    assert sp.remote_report(wstat, out) == rep


@given(st.sampled_from(b"rhs"), no_nul, st.sampled_from(b"KZD"), no_nul)
def test_remote_letter_follows_recipient_then_message(rletter, rtext, mletter, mtext):
    out = bytes([rletter]) + rtext + b"\0" + bytes([mletter]) + mtext + b"\0"
    rep = sp.remote_report(0, out)
    expect = {ord("s"): b"Z", ord("h"): b"D"}.get(rletter, bytes([mletter]))
    assert rep[:1] == expect
    assert rep[1:].startswith(rtext)
    order = b"DZK"
    if order.index(bytes([mletter])) <= order.index(expect):
        assert rep[1:] == rtext + mtext
    else:
        assert rep[1:] == rtext


@pytest.mark.parametrize("line, cmd", [
    (b"foop/123", ("foop", 123)), (b"todo/9", ("todo", 9)), (b"todo/", None), (b"foop/12a", None),
    (b"todo123", None), (b"mess/123", None), (b"foop/" + b"1" * 94, ("foop", int("1" * 94))),
    (b"foop/" + b"1" * 95, None), (b"foo/1", None), (b"", None), (b"todo/+1", None),
])
def test_clean_commands(line, cmd):
    assert sp.clean_command(line) == cmd


@given(st.binary(max_size=120))
def test_clean_command_accepts_only_its_two_forms(line):
    cmd = sp.clean_command(line)
    if cmd is not None:
        assert line == cmd[0].encode() + b"/" + str(cmd[1]).encode() or line[5:].lstrip(b"0") != line[5:]
        assert 7 <= len(line) + 1 <= 100


@given(st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\0", b"")), max_size=30))
def test_clean_reads_nul_ended_commands_with_a_bound(lines):
    import tempfile
    from pyqmail.commands.qmail_clean import LINE_MAX, batches
    with tempfile.TemporaryFile() as f:
        f.write(b"".join(line + b"\0" for line in lines))
        f.seek(0)
        got = [line for batch in batches(f.fileno()) for line in batch]
    assert got == [line[:LINE_MAX + 1] for line in lines]
    assert [sp.clean_command(g) for g in got] == [sp.clean_command(line) for line in lines]
