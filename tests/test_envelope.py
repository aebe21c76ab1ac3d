"""lib/queue/envelope: qmail-queue's F/T envelope (qmail-queue(8)) and the queue's u/p/F/T files."""

import io

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.queue.envelope import ADDR_MAX, EnvelopeError, decode, encode, read, todo_parts

address = st.binary(max_size=60).map(lambda b: b.replace(b"\0", b""))
recipients = st.lists(address, max_size=8)


def todo_record(uid, pid, sender, recipients):
    """Return the bytes qmail-queue writes to intd/N: u, p, F, T records, no final empty record."""
    return b"".join(todo_parts(uid, pid, sender, recipients))


def parse_todo(data):
    """Split a todo/N or intd/N file into a list of (type byte, value) records."""
    return [(r[:1], r[1:]) for r in data.split(b"\0")[:-1] if r]


class Trickle:
    """A stream that hands out at most `step` bytes per read, like a pipe written in pieces."""

    def __init__(self, data, step):
        self.data, self.step = data, step

    def read(self, n):
        """Return the next few bytes."""
        chunk, self.data = self.data[:min(n, self.step)], self.data[min(n, self.step):]
        return chunk


def code_of(data, via_read=True):
    """Return the exit code read() (or decode()) gives for data, or 0."""
    try:
        read(io.BytesIO(data)) if via_read else decode(data)
    except EnvelopeError as e:
        return e.code
    return 0


def test_encode_exact():
    assert encode(b"a@b", [b"c@d", b"e@f"]) == b"Fa@b\0Tc@d\0Te@f\0\0"
    assert encode(b"", []) == b"F\0\0"


@given(address, recipients, st.integers(1, 50))
def test_round_trip(sender, rcpts, step):
    wire = encode(sender, rcpts)
    assert decode(wire) == (sender, rcpts)
    assert read(io.BytesIO(wire)) == (sender, rcpts)
    assert read(Trickle(wire, step)) == (sender, rcpts)


@given(address, recipients, st.binary(max_size=30))
def test_read_stops_at_the_empty_record(sender, rcpts, after):
    stream = io.BytesIO(encode(sender, rcpts) + after)
    assert read(stream) == (sender, rcpts)


@pytest.mark.parametrize("via_read", [True, False])
def test_address_limit_exact(via_read):
    """ADDR is 1003 including the NUL: a 1002-byte address fits, a 1003-byte one is exit 11."""
    assert ADDR_MAX == 1003
    longest, too_long = b"a" * 1002, b"a" * 1003
    assert code_of(encode(longest, [longest]), via_read) == 0
    assert code_of(encode(too_long, []), via_read) == 11
    assert code_of(encode(b"", [longest, too_long]), via_read) == 11


def test_overlong_address_refused_without_waiting_for_its_nul():
    stream = io.BytesIO(b"F" + b"a" * 100000)
    with pytest.raises(EnvelopeError) as e:
        read(stream)
    assert e.value.code == 11
    assert stream.tell() < 10000  # bounded: it did not slurp the whole address


@pytest.mark.parametrize("data", [b"Xa@b\0\0", b"X", b"Xa@b", b"\0", b"T\0\0", b"X" + b"a" * 5000])
def test_first_byte_not_f_is_91(data):
    """qmail-queue checks the F before reading the address, so even an endless bad record is 91."""
    assert code_of(data) == 91


@pytest.mark.parametrize("data", [b"Fa@b\0Xc@d\0\0", b"Fa@b\0F\0\0", b"Fa@b\0X", b"Fa@b\0X" + b"c" * 5000])
def test_record_after_f_not_t_is_91(data):
    assert code_of(data) == 91


@pytest.mark.parametrize("data", [b"", b"F", b"Fa@b", b"Fa@b\0", b"Fa@b\0Tc@d", b"Fa@b\0Tc@d\0"])
def test_missing_final_nul_is_54(data):
    assert code_of(data) == 54


@pytest.mark.parametrize("data", [b"Fa@b\0", b"Fa@b\0Tc@d\0", b"Fa@b"])
def test_decode_missing_final_nul_is_54(data):
    assert code_of(data, via_read=False) == 54


@pytest.mark.parametrize("data", [b"Xa@b\0\0", b"\0", b"Fa@b\0Xc\0\0"])
def test_decode_bad_records_are_91(data):
    assert code_of(data, via_read=False) == 91


@given(st.binary(max_size=60))
def test_arbitrary_input_gives_an_envelope_or_a_qmail_code(data):
    try:
        sender, rcpts = read(io.BytesIO(data))
    except EnvelopeError as e:
        assert e.code in (11, 54, 91)
        return
    assert data.startswith(encode(sender, rcpts))


def test_todo_record_exact():
    assert todo_record(1000, 4242, b"a@b", [b"c@d", b"e@f"]) == b"u1000\0p4242\0Fa@b\0Tc@d\0Te@f\0"


@given(st.integers(0, 2 ** 32), st.integers(1, 2 ** 22), address, recipients)
def test_todo_round_trip(uid, pid, sender, rcpts):
    records = parse_todo(todo_record(uid, pid, sender, rcpts))
    expected = [(b"u", b"%d" % uid), (b"p", b"%d" % pid), (b"F", sender)] + [(b"T", r) for r in rcpts]
    assert [r for r in records] == [r for r in expected if r[0] + r[1]]
