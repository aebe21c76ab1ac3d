"""lib/util/netstring: exact encoding, strict lengths (qmail-qmqpd(8), *Strict netstrings*), bounded decoding, the
streaming Reader."""

import io

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.util.netstring import MAX_DIGITS, NetstringError, Reader, decode, encode, parse_length

BAD_LENGTHS = [b"", b"1_0", b" 10", b"10 ", b"+5", b"-5", b"01", b"00", b"0x1", b"1e3", b"\xd9\xa1",
               "\u0661".encode(), "\uff11".encode(), b"\xb2", b"1.0", b"12345678901", b"\t1"]


def reader(data, budget=None):
    """A Reader over bytes."""
    return Reader(io.BytesIO(data), budget)


def decode_all(data, limit=1 << 30):
    """Return the list of payloads of a concatenation of netstrings."""
    items = []
    while data:
        item, data = decode(data, limit)
        items.append(item)
    return items


@pytest.mark.parametrize("payload,wire", [
    (b"", b"0:,"), (b"hello world!", b"12:hello world!,"), (b"a,b:c", b"5:a,b:c,"),
    (b"3:hi\n,3:a@b,3:c@d,", b"18:3:hi\n,3:a@b,3:c@d,,"),  # a QMQP request, as qmail-qmqpc(8) builds it
])
def test_encode_exact(payload, wire):
    assert encode(payload) == wire


@given(st.binary(max_size=2000))
def test_round_trip(payload):
    assert decode(encode(payload)) == (payload, b"")
    assert reader(encode(payload)).read(len(payload)) == payload


@given(st.lists(st.binary(max_size=50), max_size=10))
def test_concatenation_round_trip(payloads):
    joined = b"".join(encode(p) for p in payloads)
    assert decode_all(joined) == payloads
    r = reader(joined)
    assert [r.read(50) for _ in payloads] == payloads


@given(st.binary(max_size=100), st.binary(max_size=30))
def test_decode_leaves_the_rest(payload, rest):
    assert decode(encode(payload) + rest) == (payload, rest)


@given(st.integers(0, 10 ** MAX_DIGITS - 1))
def test_parse_length_accepts_canonical_decimal(n):
    assert parse_length(b"%d" % n, 10 ** MAX_DIGITS) == n


@pytest.mark.parametrize("digits", BAD_LENGTHS)
def test_parse_length_refuses(digits):
    with pytest.raises(NetstringError) as e:
        parse_length(digits, 1 << 40)
    assert e.value.kind == "format"


@pytest.mark.parametrize("digits", BAD_LENGTHS[1:])
def test_decode_and_reader_refuse(digits):
    wire = digits + b":" + b"x" * 20 + b","
    with pytest.raises(NetstringError):
        decode(wire)
    with pytest.raises((NetstringError, EOFError)):
        reader(wire).read(1 << 30)


def test_length_over_limit_is_its_own_kind():
    with pytest.raises(NetstringError) as e:
        parse_length(b"101", 100)
    assert e.value.kind == "length"
    with pytest.raises(NetstringError) as e:
        decode(b"5:hello,", limit=4)
    assert e.value.kind == "length"
    with pytest.raises(NetstringError) as e:
        reader(b"200000001:").read(200000000)  # refused before any payload is read
    assert e.value.kind == "length"
    assert parse_length(b"100", 100) == 100


@given(st.binary(min_size=1, max_size=100), st.integers(1, 3))
def test_truncated_or_uncommaed_is_refused(payload, cut):
    wire = encode(payload)
    with pytest.raises(NetstringError):
        decode(wire[:-cut])
    with pytest.raises(NetstringError):
        decode(wire[:-1] + b";")
    with pytest.raises(NetstringError):
        reader(wire[:-1] + b";").read(len(payload))
    with pytest.raises(EOFError):
        reader(wire[:-cut]).read(len(payload))


@pytest.mark.parametrize("wire", [b"", b"abc", b"12345678901:x,", b":,"])
def test_decode_without_a_valid_length_field(wire):
    with pytest.raises(NetstringError):
        decode(wire)


@given(st.binary(max_size=40))
def test_decode_never_fails_otherwise(data):
    try:
        payload, rest = decode(data)
    except NetstringError:
        return
    assert encode(payload) + rest == data


@given(st.binary(max_size=40))
def test_reader_never_fails_otherwise(data):
    r = reader(data)
    try:
        payload = r.read(1 << 20)
    except (NetstringError, EOFError):
        return
    assert data.startswith(encode(payload))


def test_reader_reads_the_length_byte_by_byte_and_stops_at_the_first_bad_one():
    stream = io.BytesIO(b"1x:" + b"z" * 100)
    with pytest.raises(NetstringError):
        Reader(stream).read(1000)
    assert stream.tell() == 2  # it never read past the bad byte


def test_reader_refuses_leading_zero_before_reading_on():
    stream = io.BytesIO(b"05:hello,")
    with pytest.raises(NetstringError):
        Reader(stream).read(1000)
    assert stream.tell() == 2


def test_reader_refuses_overlong_length_field():
    with pytest.raises(NetstringError):
        reader(b"1" * (MAX_DIGITS + 1) + b":").read(10 ** 12)


@given(st.lists(st.binary(max_size=30), min_size=1, max_size=5))
def test_budget_is_charged_for_every_byte(payloads):
    wire = b"".join(encode(p) for p in payloads)
    r = reader(wire, budget=len(wire))
    assert [r.read(100) for _ in payloads] == payloads
    assert r.budget == 0
    short = reader(wire, budget=len(wire) - 1)
    with pytest.raises(NetstringError):
        for _ in payloads:
            short.read(100)


def test_skip_hands_chunks_to_sink():
    payload = bytes(range(256)) * 1000
    r = reader(encode(payload) + b"rest")
    got = []
    r.skip(r.read_length(len(payload)), got.append)
    r.read_comma()
    assert b"".join(got) == payload
    assert r.stream.read() == b"rest"
