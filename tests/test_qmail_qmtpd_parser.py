"""The QMTP package reader (lib/qmtp/qmtp): properties over any input and any way of cutting it into reads."""

import io

import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from conftest import queued
from pyqmail.lib.qmtp import qmtp
from pyqmail.lib.util.netstring import Reader, encode
from test_qmail_qmtpd import package, session

tricky_st = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\0", b"\xff", b",", b":", b"1"]), max_size=30).map(b"".join)
line_st = st.one_of(st.binary(max_size=30), tricky_st).map(lambda b: b.replace(b"\n", b""))
lines_st = st.lists(line_st, min_size=1, max_size=6)
address_st = st.binary(max_size=20)
package_st = st.tuples(lines_st, address_st, st.lists(address_st, max_size=4), st.booleans())


class Chunked:
    """A stream that hands out data in the given read sizes (then one byte at a time), recording requests."""

    def __init__(self, data, sizes):
        self.data = data
        self.pos = 0
        self.sizes = list(sizes)
        self.largest_request = 0

    def read(self, n):
        """Return at most n bytes, cut where the test says."""
        self.largest_request = max(self.largest_request, n)
        size = self.sizes.pop(0) if self.sizes else 1
        data = self.data[self.pos:self.pos + min(n, max(size, 1))]
        self.pos += len(data)
        return data


def parse(stream, relayclient_len=0):
    """Read packages from stream until the end or an error; return a comparable summary."""
    reader = Reader(stream)
    out = []
    while True:
        parts = []
        try:
            p = qmtp.read_package(reader, lambda crlf: parts.append, relayclient_len)
        except qmtp.PackageError as e:
            return out, (e.kind, e.where)
        if p is None:
            return out, None
        out.append((b"".join(parts), p.crlf, p.length, p.sender, p.sender_ok, p.recipients, p.overflow))


@given(st.lists(package_st, max_size=4))
def test_round_trip_in_both_encodings(packages):
    data = b"".join(package(*p) for p in packages)
    got, end = parse(io.BytesIO(data))
    assert end is None
    assert [(m, crlf, s, r) for m, crlf, _, s, _, r, _ in got] == [
        (b"\n".join(lines), crlf, sender, rcpts) for lines, sender, rcpts, crlf in packages]
    assert all(length == len(m) for m, _, length, *_ in got)


@settings(max_examples=300)
@given(st.lists(package_st, max_size=3), st.binary(max_size=40), st.lists(st.integers(1, 70), max_size=200))
def test_any_split_of_the_input_gives_the_same_result(packages, junk, sizes):
    data = b"".join(package(*p) for p in packages) + junk
    whole = parse(io.BytesIO(data))
    stream = Chunked(data, sizes)
    assert parse(stream) == whole
    assert stream.largest_request <= 65536
    assert parse(Chunked(data, [])) == whole  # one byte per read: every CRLF is cut in two


@settings(max_examples=500)
@given(st.binary(max_size=200))
@example(b"199999999:\n")
@example(b"3:\nab,0:,199999999:3:abc,")
@example(b"3:\rab,1000000000:")
@example(b"0:,0:,0:,")
def test_arbitrary_bytes_end_cleanly_or_with_a_clear_d_reply(data):
    stream = Chunked(data, [])
    got, end = parse(stream)
    assert stream.largest_request <= 65536  # a stated length never becomes one big read
    if end is not None:
        kind, where = end
        assert kind in ("format", "length", "encoding", "eof") and where in (qmtp.MESSAGE, qmtp.SENDER, qmtp.RECIPIENTS)
        text = qmtp.PackageError(kind, where).reply()
        assert text.startswith("D") and text.count("#") == 1 and text.endswith(")")


@given(st.lists(package_st, min_size=1, max_size=2), st.data())
def test_every_truncation_is_a_lost_connection_or_a_package_boundary(packages, data):
    encoded = [package(*p) for p in packages]
    stream = b"".join(encoded)
    cut = data.draw(st.integers(0, len(stream) - 1))
    got, end = parse(io.BytesIO(stream[:cut]))
    boundaries = [sum(len(e) for e in encoded[:i]) for i in range(len(encoded) + 1)]
    if cut in boundaries:
        assert end is None and len(got) == boundaries.index(cut)
    else:
        assert end[0] == "eof" and len(got) == max(i for i, b in enumerate(boundaries) if b <= cut)


@given(st.one_of(st.binary(max_size=300), tricky_st), st.lists(st.integers(1, 20), max_size=50))
def test_crlf_decoding_is_qmails_whatever_the_cuts(message, sizes):
    out = []
    decoder = qmtp.CrlfDecoder(out.append)
    pos = 0
    for size in sizes + [len(message)]:
        decoder(message[pos:pos + size])
        pos += size
    decoder.close()
    assert b"".join(out) == message.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("before", [65534, 65535, 65536, 2 * 65536 - 1])
def test_crlf_cut_by_the_read_size(before):
    lines = [b"a" * before, b"b\r", b"", b"c"]
    got, end = parse(io.BytesIO(package(lines, b"", [b"r"], crlf=True)))
    assert end is None and got[0][0] == b"\n".join(lines)


def test_addresses_qmail_refuses_are_marked_not_kept():
    data = package([b"x"], b"s" * 1000, [b"a" * 999, b"b" * 1000, b"c\0d", b"d" * 994]) + package([b"y"], b"n\0", [])
    got, end = parse(io.BytesIO(data), relayclient_len=6)
    assert end is None
    (_, _, _, sender, ok, rcpts, _), (_, _, _, sender2, ok2, rcpts2, _) = got
    assert (sender, ok) == (b"", False) and (sender2, ok2) == (b"n\0", False) and rcpts2 == []
    assert rcpts == [None, None, b"c\0d", None]  # 999 + 6 and 994 + 6 reach 1000 with RELAYCLIENT


def test_recipients_past_the_envelope_bound_are_counted_not_kept():
    got, end = parse(io.BytesIO(package([b"x"], b"", [b"r@x"] * 300000)))
    (_, _, _, _, _, rcpts, overflow), = got
    assert end is None and len(rcpts) + overflow == 300000
    assert len(rcpts) == qmtp.ENVELOPE_MAX // 6 + (qmtp.ENVELOPE_MAX % 6 > 0)


def encode_message(message, crlf=False):
    """Return the QMTP encoding of an LF-terminated message: encoding #1 (CRLF) or #2 (LF)."""
    if crlf:
        return b"\r" + message.replace(b"\n", b"\r\n")
    return b"\n" + message


def encode_package(message, sender, recipients, crlf=False):
    """Return the package bytes a QMTP client sends."""
    return (encode(encode_message(message, crlf)) + encode(sender)
            + encode(b"".join(encode(r) for r in recipients)))


def test_encoding_of_the_spec():
    assert encode_package(b"a\nb", b"s", [b"r"], crlf=True) == b"5:\ra\r\nb,1:s,4:1:r,,"
    assert encode_package(b"a\nb", b"s", [b"r"]) == package([b"a", b"b"], b"s", [b"r"])
    assert qmtp.reply("Kok 838640135 qp 1390") == b"21:Kok 838640135 qp 1390,"


# ---- the same property through the installed program: a broken package gets one D and queues nothing ----

@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(package_st, min_size=1, max_size=2), st.data())
def test_corrupted_stream_through_the_program(procs, tree, packages, data):
    (tree / "control" / "rcpthosts").unlink(missing_ok=True)
    packages = [(lines, s, rcpts or [b"r"], crlf) for lines, s, rcpts, crlf in packages]
    stream = bytearray(b"".join(package(*p) for p in packages))
    pos = data.draw(st.integers(0, len(stream) - 1))
    stream[pos:pos + 1] = data.draw(st.sampled_from([b"x", b":", b",", b"", b"99"]))
    stream = bytes(stream)
    expected, end = parse(io.BytesIO(stream))
    assume(end is not None and end[0] != "eof")
    before = len(queued(tree))
    out, code, _ = session(procs, tree, stream)
    answered = sum(len(r) for *_, r, _ in expected)
    assert len(out) == answered + 1 and out[-1] == qmtp.PackageError(*end).reply().encode()
    assert all(r.startswith((b"K", b"D")) for r in out[:-1])
    assert code == (111 if end[0] == "length" else 100)
    queued_now = len(queued(tree)) - before
    assert queued_now == sum(1 for m, _, _, _, ok, r, _ in expected if ok and any(x is not None and b"\0" not in x for x in r))
