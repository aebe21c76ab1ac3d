"""lib/qmqp/qmqpservers: which control/qmqpservers lines are servers, and with what port."""

import ipaddress

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.qmqp.qmqpservers import QMQP_PORT, parse, parse_line

ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: "%d.%d.%d.%d" % t)
ipv6 = st.integers(0, 2 ** 128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
ports = st.integers(1, 65535)
blanks = st.text(" \t", max_size=3)


@pytest.mark.parametrize("line,server", [
    (b"1.2.3.4", ("1.2.3.4", 628)),
    (b"1.2.3.4:6628", ("1.2.3.4", 6628)),
    (b"::1", ("::1", 628)),
    (b"[::1]", ("::1", 628)),
    (b"[::1]:6628", ("::1", 6628)),
    (b"[2001:db8::5]:65535", ("2001:db8::5", 65535)),
    (b"::ffff:10.0.0.1", ("::ffff:10.0.0.1", 628)),
    (b"010.0.0.1", ("10.0.0.1", 628)),  # qmail's ip_scan reads octets as decimal
    (b"10.0.0.1 primary hub", ("10.0.0.1", 628)),  # qmail ignores what follows the address
    (b"10.0.0.1\t# comment", ("10.0.0.1", 628)),
    (b"  10.0.0.1", ("10.0.0.1", 628)),
])
def test_addresses(line, server):
    assert parse_line(line) == server


@pytest.mark.parametrize("line", [
    b"", b"hub.example.org", b"localhost", b"1.2.3", b"1.2.3.4.5", b"1.2.3.256", b"1..2.3", b"1.2.3.4x",
    b"1.2.3.4:", b"1.2.3.4:0", b"1.2.3.4:65536", b"1.2.3.4:06628", b"1.2.3.4:+1", b"1.2.3.4:1:2",
    b"[::1", b"[::1]x", b"[::1]:", b"[::1]:0", b"[1.2.3.4]", b"[]", b"::1::2", b"fe80::1%eth0", b":::",
    b"\xd9\xa1.2.3.4", b"1.2.3.\xd9\xa1", b"[::\xff]", b"\x00", b"# 1.2.3.4", b"\xef\xbc\x91.2.3.4",
])
def test_not_addresses(line):
    assert parse_line(line) is None


@given(ipv4, blanks, blanks)
def test_ipv4_round_trip(address, before, after):
    assert parse_line((before + address + after).encode()) == (address, QMQP_PORT)


@given(ipv4, ports)
def test_ipv4_with_port(address, port):
    assert parse_line(b"%s:%d" % (address.encode(), port)) == (address, port)


@given(ipv6, ports)
def test_ipv6_bracketed_with_port(address, port):
    assert parse_line(b"[%s]:%d" % (address.encode(), port)) == (address, port)


@given(ipv6)
def test_ipv6_bare_and_bracketed_use_628(address):
    assert parse_line(address.encode()) == (address, QMQP_PORT)
    assert parse_line(b"[%s]" % address.encode()) == (address, QMQP_PORT)


@given(st.binary(max_size=80))
def test_any_line_is_an_address_or_none(line):
    server = parse_line(line)
    if server is not None:
        host, port = server
        ipaddress.ip_address(host)  # a literal address, never a name to resolve
        assert 1 <= port <= 65535


names = st.text("ghijklmnopqrstuvwxyz.-# \t", max_size=20)  # no digits, no colon: never an address


@given(st.lists(st.one_of(ipv4.map(lambda a: (a, True)), names.map(lambda t: (t, False))), max_size=10))
def test_file_keeps_order_and_skips_junk(lines):
    data = "".join(text + "\n" for text, _ in lines).encode()
    assert parse(data) == [(text, QMQP_PORT) for text, is_address in lines if is_address]


def test_file_comments_blank_lines_and_crlf():
    data = b"# hubs\n\n10.0.0.1\r\n  \n#10.0.0.2\n[::1]:6628 \t\nhub.example\n10.0.0.3:7000\n"
    assert parse(data) == [("10.0.0.1", 628), ("::1", 6628), ("10.0.0.3", 7000)]
