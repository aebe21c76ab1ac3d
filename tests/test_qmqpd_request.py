"""lib/qmqp/qmqp.py (request reading), lib/queue/received.py and lib/tcpserver/tcpenv.py: unit and property tests."""

import io
import os
import socket

import pytest
from hypothesis import given, settings, strategies as st

from pyqmail.lib.qmqp import qmqp
from pyqmail.lib.queue import received
from pyqmail.lib.tcpserver import tcpenv
from pyqmail.lib.util.netstring import encode

addresses = st.binary(min_size=0, max_size=60).filter(lambda a: b"\0" not in a)


def parse_request(data, maxbytes=qmqp.HARD_MAX, maxrcpt=qmqp.ENVELOPE_MAX):
    """Parse a complete request held in bytes; return (message, request)."""
    parts = []
    request = qmqp.read_request(io.BytesIO(data), maxbytes, lambda length: parts.append, maxrcpt)
    return b"".join(parts), request


def test_example_from_the_spec():
    message, request = parse_request(b"18:3:hi\n,3:a@b,3:c@d,,")
    assert (message, request.sender, request.recipients) == (b"hi\n", b"a@b", [b"c@d"])
    assert request.refusal() == ""


@given(st.binary(max_size=3000), addresses, st.lists(addresses, min_size=1, max_size=8))
def test_round_trip(message, sender, recipients):
    got, request = parse_request(qmqp.encode_request(message, sender, recipients))
    assert (got, request.sender, request.recipients) == (message, sender, recipients)
    assert request.length == len(message)
    assert request.refusal() == ""


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_other_errors(data):
    try:
        parse_request(data)
    except qmqp.RequestError as e:
        assert e.kind in ("format", "length", "eof")
        assert e.reply().startswith("D")


@given(st.binary(min_size=1, max_size=200), addresses, addresses)
def test_every_truncation_is_eof(message, sender, recipient):
    data = qmqp.encode_request(message, sender, [recipient])
    for cut in range(len(data)):
        with pytest.raises(qmqp.RequestError) as e:
            parse_request(data[:cut])
        assert e.value.kind == "eof"


@pytest.mark.parametrize("bad", [b"1_8", b" 18", b"+18", b"018", b"18 ", b"0x12", b"\xd9\xa1\xd9\xa8", b""])
def test_outer_length_must_be_plain_digits(bad):
    with pytest.raises(qmqp.RequestError) as e:
        parse_request(bad + b":3:hi\n,3:a@b,3:c@d,,")
    assert e.value.kind == "format"
    assert e.value.reply() == "Dnetstring format error while receiving QMQP packet header"


@pytest.mark.parametrize("data, where", [
    (b"18:3:hi\n;3:a@b,3:c@d,,", qmqp.CONTENT),
    (b"18:3:hi\n,3:a@b;3:c@d,,", qmqp.SENDER),
    (b"18:3:hi\n,3:a@b,3:c@d;,", qmqp.RECIPIENT),
    (b"18:3:hi\n,3:a@b,3:c@d,;", qmqp.TRAILER),
    (b"18:3:hi\n,3:a@b,+3:c@d,", qmqp.RECIPIENT),
    (b"10:3:hi\n,3:a@b,,", qmqp.SENDER),  # the sender overruns the outer netstring
    (b"8:9:hi\n,,", qmqp.CONTENT),  # the message claims more than the request holds
])
def test_format_errors_say_where(data, where):
    with pytest.raises(qmqp.RequestError) as e:
        parse_request(data)
    assert (e.value.kind, e.value.where) == ("format", where)
    assert e.value.reply() == "Dnetstring format error while " + where


def test_outer_length_over_the_limit_is_refused_before_reading_on():
    data = b"%d:" % (100 + qmqp.ENVELOPE_MAX + 1)
    with pytest.raises(qmqp.RequestError) as e:
        qmqp.read_request(io.BytesIO(data), 100, None)
    assert e.value.reply() == "DError: message too large"


def test_message_over_maxbytes_is_read_and_discarded():
    begun = []
    request = qmqp.read_request(io.BytesIO(qmqp.encode_request(b"x" * 101, b"a@b", [b"c@d"])), 100, begun.append)
    assert begun == [] and request.too_large and request.recipients == [b"c@d"]
    assert request.refusal() == "DError: message too large"


@pytest.mark.parametrize("sender, recipients", [
    (b"a" * 1000, [b"c@d"]), (b"a@b", [b"c@d", b"x" * 1000]), (b"a\0b", [b"c@d"]), (b"a@b", [b"c\0d"])])
def test_addresses_qmail_refuses(sender, recipients):
    _, request = parse_request(qmqp.encode_request(b"hi\n", sender, recipients))
    assert request.refusal() == "Dsorry, I can't accept addresses like that (#5.1.3)"


def test_address_of_999_bytes_is_fine():
    _, request = parse_request(qmqp.encode_request(b"hi\n", b"a" * 999, [b"b" * 999]))
    assert request.refusal() == ""


def test_no_recipients_is_accepted_as_qmail_does():
    _, request = parse_request(encode(encode(b"hi\n") + encode(b"a@b")))
    assert request.refusal() == "" and request.recipients == []


def test_recipient_bytes_are_bounded():
    many = [b"r%07d@example.com" % i for i in range(qmqp.ENVELOPE_MAX // 20 + 10)]
    _, request = parse_request(qmqp.encode_request(b"hi\n", b"a@b", many))
    assert request.too_many_recipients
    assert len(request.recipients) < len(many)
    assert request.refusal() == "DError: too many recipients"


def test_reply_is_a_netstring():
    assert qmqp.reply("Kok 1 qp 2") == b"10:Kok 1 qp 2,"


HEADER = b"Received: a\nDelivered-To: b\nreceived:c\nX: y\n Received: continuation\nRECEIVED: d\n\nReceived: body\n"


@given(st.lists(st.integers(min_value=0, max_value=len(HEADER)), max_size=10))
def test_hop_count_does_not_depend_on_chunking(cuts):
    counter = qmqp.HopCounter()
    edges = [0] + sorted(cuts) + [len(HEADER)]
    for a, b in zip(edges, edges[1:]):
        counter.feed(HEADER[a:b])
    assert counter.count == 4


def test_hop_count_with_crlf_header_end():
    counter = qmqp.HopCounter()
    counter.feed(b"Received: a\r\n\r\nReceived: b\r\n")
    assert counter.count == 1


def test_safeput():
    assert received.safeput(b"a b\n[1.2.3.4]_x@y%z+/=:-\xff") == b"a?b?[1.2.3.4]?x@y%z+/=:-?"


@given(st.binary(max_size=100))
def test_safeput_output_is_safe(value):
    out = received.safeput(value)
    assert len(out) == len(value) and all(c in received.SAFE or c == ord("?") for c in out)


def test_received_line_qmqp():
    line = received.received(b"QMQP", b"mx.example", b"10.0.0.1", b"unknown", None, now=811484814)
    assert line == (b"Received: from unknown (10.0.0.1)\n  by mx.example with QMQP; 19 Sep 1995 04:26:54 -0000\n")
    line = received.received(b"QMQP", b"l", b"::1", b"evil host\n", b"id ent", now=0)
    assert line == b"Received: from evil?host? (id?ent@::1)\n  by l with QMQP; 1 Jan 1970 00:00:00 -0000\n"


def test_peer_from_environment_wins():
    p = tcpenv.peer({b"TCPREMOTEIP": b"10.1.2.3", b"TCPREMOTEPORT": b"5", b"REMOTE_ADDR": b"10.9.9.9"}, fd=-1)
    assert (p.remoteip, p.remoteport, p.name(), p.name(True)) == (b"10.1.2.3", b"5", "unknown[10.1.2.3]",
                                                                 "unknown[10.1.2.3]:5")


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_peer_from_getpeername(family, host):
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname()[:2])
        conn, _ = listener.accept()
        with client, conn:
            p = tcpenv.peer({b"REMOTE_ADDR": b"10.9.9.9"}, fd=conn.fileno())
            assert p.remoteip == host.encode() and int(p.remoteport) == client.getsockname()[1]
            assert p.localip == host.encode()
            conn.getpeername()  # the descriptor is still ours and open


def test_peer_from_remote_addr_when_fd_is_no_socket():
    r, w = os.pipe()
    p = tcpenv.peer({b"REMOTE_ADDR": b"::ffff:10.9.9.9", b"REMOTE_PORT": b"7"}, fd=r)
    os.close(r), os.close(w)
    assert (p.remoteip, p.remoteport) == (b"10.9.9.9", b"7")
    assert tcpenv.peer({}, fd=-1).name() == "unknown[unknown]"


@settings(max_examples=50)
@given(st.binary(max_size=40))
def test_peer_name_is_bytes_safe(host):
    assert isinstance(tcpenv.peer({b"TCPREMOTEIP": b"1.2.3.4", b"TCPREMOTEHOST": host}, fd=-1).name(), str)


def outcome(stream, maxbytes):
    """What read_request makes of a stream: the message, sender, recipients and refusal, or the error."""
    parts = []
    try:
        request = qmqp.read_request(stream, maxbytes, lambda length: parts.append)
    except qmqp.RequestError as e:
        return ("error", e.kind, e.where, b"".join(parts))
    return (b"".join(parts), request.sender, request.recipients, request.refusal(), request.length)


def mutated(wire, edits):
    """wire with each (position, byte) of edits put in place, the position taken modulo its length."""
    data = bytearray(wire)
    for position, byte in edits:
        if data:
            data[position % len(data)] = byte
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), addresses, st.lists(addresses, max_size=4),
       st.lists(st.tuples(st.integers(0, 10 ** 6), st.sampled_from(b"0123456789:,x\0")), max_size=3),
       st.integers(0, 40), st.integers(1, 23), st.sampled_from([0, 5, 100, 10 ** 6]))
def test_a_timed_input_gives_what_reading_byte_by_byte_gives(message, sender, recipients, edits, cut, chunk,
                                                             maxbytes):
    # TimedInput hands read_length the bytes it holds, so a length field is parsed in one go; the
    # outcome must be the byte-by-byte reading's, errors and where they happen included, whatever
    # the chunks the socket delivers (CHUNK-sized reads split the fields anywhere)
    from pyqmail.lib.util import timedio
    wire = mutated(qmqp.encode_request(message, sender, recipients), edits)
    wire = wire[:len(wire) - cut] if cut < 10 else wire
    expected = outcome(io.BytesIO(wire), maxbytes)
    r, w = os.pipe()
    try:
        os.write(w, wire)
        os.close(w)
        w = -1
        saved, timedio.CHUNK = timedio.CHUNK, chunk
        try:
            got = outcome(timedio.TimedInput(r, 5), maxbytes)
        finally:
            timedio.CHUNK = saved
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert got == expected
