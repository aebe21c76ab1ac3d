"""Property tests of qmail-qctl's control requests and the channel-file record scan (lib/queue/qadmin)."""

from hypothesis import given, strategies as st

from pyqmail.lib.queue import qadmin
from pyqmail.lib.util import netstring

ids = st.none() | st.lists(st.integers(0, 2**40), max_size=20)
addresses = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b)


@given(st.sampled_from(qadmin.VERBS), ids, st.booleans(), st.none() | st.lists(addresses, min_size=1, max_size=5))
def test_request_round_trip(verb, idlist, bounce, rcpts):
    if verb != "delete":
        rcpts = None
    r = qadmin.Request(verb, idlist, rcpts, bounce)
    payload, rest = netstring.decode(qadmin.encode_request(r))
    assert rest == b""
    assert qadmin.decode_request(payload) == r


@given(st.binary(max_size=200))
def test_decode_request_never_crashes(payload):
    try:
        r = qadmin.decode_request(payload)
    except qadmin.BadRequest:
        return
    assert r.verb in qadmin.VERBS
    assert r.recipients is None or r.verb == "delete"


@given(st.text(max_size=25))
def test_parse_id(word):
    n = qadmin.parse_id(word)
    digits = word[1:] if word.startswith("#") else word
    if n is None:
        assert not (digits.isascii() and digits.isdigit() and 0 < len(digits) <= 20)
    else:
        assert n == int(digits)


@given(st.lists(st.tuples(st.sampled_from([b"T", b"D", b"X"]), addresses), max_size=10), st.binary(max_size=10))
def test_positions_are_the_complete_t_records(recs, tail):
    data = b"".join(k + a + b"\0" for k, a in recs) + tail.replace(b"\0", b"")
    found = qadmin.recipient_positions(data, None)
    assert [a for _, a in found] == [a for k, a in recs if k == b"T"]
    for pos, a in found:
        assert data[pos:pos + 1] == b"T" and data[pos + 1:pos + 1 + len(a) + 1] == a + b"\0"


def test_exit_code():
    assert qadmin.exit_code(b"K#1: held\n") == 0
    assert qadmin.exit_code(b"K#1: held\nD#2: no such message in the queue\n") == 100
    assert qadmin.exit_code(b"D#2: x\nZ#3: y\n") == 111
    assert qadmin.exit_code(b"") == 111
