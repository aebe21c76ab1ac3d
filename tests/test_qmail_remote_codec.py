"""qmail-remote's pure parts: DATA transparency, reply parsing, smtproutes, the tcpto table (properties)."""

import pytest
from hypothesis import given, settings, strategies as st

from pyqmail.lib.remote import remoteroute, smtpclient, tcpto
from pyqmail.lib.remote.smtpclient import DataEncoder

# bytes that matter to transparency, mixed with others
MESSAGE = st.lists(st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\n.", b"\r.", b"a", b"\0", b"\xff", b" "]),
                   max_size=60).map(b"".join) | st.binary(max_size=300)


def encode_message(data):
    """Return the whole DATA stream (after the DATA command) for a message."""
    e = DataEncoder()
    return e.feed(data) + e.end()


def parse_reply(data):
    """Return (Reply, leftover) for bytes holding a whole reply, or None if incomplete."""
    return smtpclient.ReplyParser().feed(data)


def normalized(message):
    """The message as every line-ending style becomes CRLF, with a last line completed."""
    text = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    return text.replace(b"\n", b"\r\n")


def server_reads(wire):
    """What an RFC 5321 server takes as the message: lines up to the first `.` line, dots unstuffed.
    Returns (message, bytes after the end of data)."""
    lines = []
    pos = 0
    while True:
        end = wire.index(b"\r\n", pos)
        line = wire[pos:end]
        pos = end + 2
        if line == b".":
            return b"".join(lines), wire[pos:]
        lines.append((line[1:] if line.startswith(b".") else line) + b"\r\n")


@given(MESSAGE)
def test_server_reads_exactly_the_normalized_message_and_nothing_after(message):
    wire = encode_message(message)
    body, after = server_reads(wire)
    assert body == normalized(message)
    assert after == b""


@given(MESSAGE)
def test_wire_has_no_bare_cr_or_lf(message):
    wire = encode_message(message)
    assert wire.count(b"\r") == wire.count(b"\r\n") == wire.count(b"\n")


@given(MESSAGE, st.lists(st.integers(0, 300), max_size=8))
def test_chunking_does_not_change_the_wire(message, cuts):
    e = DataEncoder()
    out = b""
    pos = 0
    for cut in sorted(cuts):
        out += e.feed(message[pos:cut])
        pos = max(pos, cut)
    out += e.feed(message[pos:]) + e.end()
    assert out == encode_message(message)


@pytest.mark.parametrize("message, wire", [
    (b"", b".\r\n"),
    (b".\n", b"..\r\n.\r\n"),
    (b"a\n.\n", b"a\r\n..\r\n.\r\n"),
    (b"a\r.\r\n", b"a\r\n..\r\n.\r\n"),  # notqmail sends "a\r\n.\r\n" here: the end of data
    (b"a\n.\r\nMAIL FROM:<x>\n", b"a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"),
    (b"x\r\n", b"x\r\n.\r\n"),
    (b"x", b"x\r\n.\r\n"),
    (b"x\r", b"x\r\n.\r\n"),
])
def test_examples(message, wire):
    assert encode_message(message) == wire


@pytest.mark.parametrize("data, code, text", [
    (b"250 ok\r\n", 250, b"250 ok\n"),
    (b"550-first\r\n550 second\r\n", 550, b"550-first\n550 second\n"),
    (b"421\n", 421, b"421\n"),
    (b"xyz hello\r\n", 400, b"xyz hello\n"),
    (b"25\r\n", 400, b"25\n"),
])
def test_reply_parsing(data, code, text):
    reply, rest = parse_reply(data + b"250 next\r\n")
    assert (reply.code, reply.text, rest) == (code, text, b"250 next\r\n")


def test_reply_incomplete_and_bounds():
    assert parse_reply(b"250-a\r\n250 b") is None
    with pytest.raises(smtpclient.ReplyTooLong):
        parse_reply(b"250-x\r\n" * (smtpclient.REPLY_LINES_MAX + 1))
    with pytest.raises(smtpclient.ReplyTooLong):
        parse_reply(b"2" * (smtpclient.REPLY_BYTES_MAX + 1))
    reply, _ = parse_reply(b"250-" + b"x" * 6000 + b"\r\n250 y\r\n")
    assert len(reply.text) == smtpclient.SMTPTEXT_MAX


@given(st.binary(max_size=400), st.integers(1, 50))
def test_reply_parser_any_bytes_any_chunks(data, size):
    """Any bytes fed in any chunks: a reply or None, never another exception; same result as all at once."""
    p = smtpclient.ReplyParser()
    result = None
    for i in range(0, len(data), size):
        result = p.feed(data[i:i + size])
        if result is not None:
            break
    whole = parse_reply(data)
    if whole is None:
        assert result is None
    else:
        assert (result[0].code, result[0].text) == (whole[0].code, whole[0].text)


def test_ehlo_keywords_and_remote_said():
    reply, _ = parse_reply(b"250-mx\r\n250-SIZE 1000\r\n250-auth plain LOGIN\r\n250 STARTTLS\r\n")
    assert smtpclient.ehlo_keywords(reply) == {b"SIZE": [b"1000"], b"AUTH": [b"plain", b"LOGIN"], b"STARTTLS": []}
    assert smtpclient.remote_said(b"550 a\0b\n") == b"Remote host said: 550 a?b\n"
    assert smtpclient.remote_said(b"") == b""


# qmail's constmap: of duplicate keys the last wins, and a line without a colon (here after a NUL) is no route
ROUTES = remoteroute.parse_routes([b"example.com:first", b"Example.COM:relay.example:2525",
                                   b".sub.example.com:[10.0.0.1]", b"other.example", b"a.sub.example.com:",
                                   b"v6.example:[IPv6:::1]:26", b":default.example"])


@pytest.mark.parametrize("host, relay, port", [
    (b"example.com", b"relay.example", 2525),
    (b"EXAMPLE.com", b"relay.example", 2525),
    (b"x.sub.example.com", b"[10.0.0.1]", 25),
    (b"a.sub.example.com", None, 25),
    (b"v6.example", b"[IPv6:::1]", 26),
    (b"other.example", b"default.example", 25),  # its colon-less line is not a route: the default applies
])
def test_smtproutes_lookup(host, relay, port):
    r = remoteroute.find_route(ROUTES, host)
    assert (r.relay, r.port) == (relay, port)


def test_no_default_route_means_mx():
    assert remoteroute.find_route(remoteroute.parse_routes([b"a.example:b"]), b"c.example").relay is None


@pytest.mark.parametrize("text, ip", [
    (b"[127.0.0.1]", "127.0.0.1"), (b"127.0.0.1", "127.0.0.1"), (b"[IPv6:::1]", "::1"), (b"[::1]", "::1"),
    (b"::1", None), (b"relay.example", None), (b"[300.1.1.1]", None), (b"[\xff]", None),
])
def test_literal_ip(text, ip):
    assert remoteroute.literal_ip(text) == ip


@given(st.lists(st.binary(max_size=30), max_size=10), st.binary(max_size=30))
def test_route_lookup_never_fails(lines, host):
    r = remoteroute.find_route(remoteroute.parse_routes(lines), host)
    assert 0 <= r.port <= 65535


IP = bytes([10, 0, 0, 1])


def test_tcpto_first_timeout_then_count_then_skip():
    table = bytearray(1024)
    i, rec = tcpto.update(table, IP, True, 1000)
    assert (i, rec[:5], int.from_bytes(rec[8:12], "little")) == (0, IP + b"\1", 1000)
    table[:16] = rec
    assert tcpto.update(table, IP, True, 1100) is None  # within 120 s of the last: not counted
    i, rec = tcpto.update(table, IP, True, 1120)
    table[:16] = rec
    assert rec[4] == 2
    assert tcpto.should_skip(table, IP, 1120 + 60 * 64 - 1, 0) == (True, True)
    assert tcpto.should_skip(table, IP, 1120 + 60 * 64, 0) == (False, True)
    assert tcpto.should_skip(table, IP, 1120 + 60 * 64, 31) == (True, True)
    i, rec = tcpto.update(table, IP, False, 2000)
    assert rec[4] == 0 and rec[:4] == IP
    assert tcpto.report_lines(table, 1130) == b"10.0.0.1 timed out 10 seconds ago; # recent timeouts: 2\n"


def test_tcpto_full_table_replaces_the_oldest_weighted_by_count():
    table = bytearray()
    for n in range(64):
        table += tcpto.record(bytes([10, 0, 1, n]), 1 if n != 7 else 3, 5000 + n)
    i, rec = tcpto.update(table, IP, True, 9000)
    assert i == 0  # 5000 + 1024 is the smallest `when + count * 1024`
    assert tcpto.update(bytearray(), IP, True, 9000) is None  # an empty table records nothing (qmail)


@given(st.binary(max_size=1024), st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_tcpto_update_any_table(table, timed_out, now):
    change = tcpto.update(table, IP, timed_out, now)
    if change is not None:
        i, rec = change
        assert len(rec) == 16 and 0 <= i < len(table) // 16
    tcpto.report_lines(table, now)


@settings(max_examples=50)
@given(st.binary(max_size=40))
def test_outsafe(data):
    out = smtpclient.outsafe(data)
    assert len(out) == len(data) and all(33 <= c <= 126 for c in out)


@pytest.mark.parametrize("line, fields", [
    (b"[127.0.0.1]:joe:pa:ss", (b"[127.0.0.1]", b"joe", b"pa:ss")),
    (b"[::1]:joe:pw", (b"[::1]", b"joe", b"pw")),
    (b"Smart.Example:u:", (b"smart.example", b"u", b"")),
    (b"smart.example:u", None), (b"smart.example::pw", None), (b"[::1]joe:pw", None), (b"nocolon", None),
])
def test_remoteauth_lines(line, fields):
    from pyqmail.lib.remote.remoteconf import parse_auth_line
    assert parse_auth_line(line) == fields


@given(st.binary(max_size=10).filter(lambda r: b":" not in r and not r.startswith(b"[")),
       st.binary(min_size=1, max_size=10).filter(lambda u: b":" not in u), st.binary(max_size=10))
def test_remoteauth_round_trip(relay, user, password):
    from pyqmail.lib.remote.remoteconf import parse_auth_line
    assert parse_auth_line(relay + b":" + user + b":" + password) == (relay.lower(), user, password)


@pytest.mark.parametrize("lines, servers", [
    ([b"127.0.0.53"], [("127.0.0.53", 53)]), ([b"127.0.0.53:5353"], [("127.0.0.53", 5353)]),
    ([b"[::1]:5353", b"[::1]", b"::1"], [("::1", 5353), ("::1", 53), ("::1", 53)]),
    ([b"name.example", b"1.2.3.4:x"], [("1.2.3.4", 0)]),
])
def test_dnsservers_lines(lines, servers):
    from pyqmail.lib.remote.dnsmx import server_list
    assert server_list(lines) == servers


@given(st.lists(st.binary(max_size=30), max_size=5))
def test_dnsservers_any_lines(lines):
    from pyqmail.lib.remote.dnsmx import server_list
    for ip, port in server_list(lines):
        assert 0 <= port <= 65535 and ip


@given(st.binary(max_size=40))
def test_parse_relay_any_value(value):
    relay, port = remoteroute.parse_relay(value)
    assert 0 <= port <= 65535
    assert relay is None or relay in value
