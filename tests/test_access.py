"""lib/config/access.py patterns and lookups, and qmail-newqmqpclients against tinycdb's `cdb`."""

import ipaddress
import subprocess

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.config import access
from conftest import need, program, qenv

ipv4 = st.integers(min_value=0, max_value=2 ** 32 - 1).map(lambda n: ipaddress.IPv4Address(n))
ipv6 = st.integers(min_value=0, max_value=2 ** 128 - 1).map(lambda n: ipaddress.IPv6Address(n)).filter(
    lambda a: a.ipv4_mapped is None)


def table(*lines):
    """Compile pattern lines into an in-memory table's get function."""
    return dict(access.compile_patterns(enumerate(lines, 1))).get


@pytest.mark.parametrize("line, expected", [
    (b"1.2.3.4", (b"+", 4, 0x01020304, 32)),
    (b"!1.2.3.4", (b"-", 4, 0x01020304, 32)),
    (b" ! 10.0.0.0/8 ", (b"-", 4, 10 << 24, 8)),
    (b"10.1.", (b"+", 4, 0x0A010000, 16)),
    (b"10.", (b"+", 4, 0x0A000000, 8)),
    (b"192.168.7.", (b"+", 4, 0xC0A80700, 24)),
    (b"::1", (b"+", 6, 1, 128)),
    (b"2001:DB8::/32", (b"+", 6, 0x20010DB8 << 96, 32)),
    (b"::ffff:10.2.3.4", (b"+", 4, 0x0A020304, 32)),
    (b"0.0.0.0/0", (b"+", 4, 0, 0)),
])
def test_parse_pattern(line, expected):
    assert access.parse_pattern(line) == expected


@pytest.mark.parametrize("line", [
    b"host.example", b"10.1", b"1.2.3.4.", b"1.2.3.4.5", b"01.2.3.4", b"256.1.1.1", b"1.2.3.4/33",
    b"1.2.3.4/24", b"1.2.3.0/+24", b"1.2.3.0/ 24", b"::1/129", b"2001:db8::1/32", b"1.2.3.0/", b"1..3.4",
    b":::", b"::ffff:10.0.0.0/104", b"\xff", b"1_0.1.2.3", b"", b"!",
])
def test_bad_patterns_are_refused(line):
    with pytest.raises(access.PatternError):
        access.parse_pattern(line)


def test_most_specific_pattern_wins_whatever_the_order():
    for lines in ([b"10.", b"!10.1.", b"10.1.2.3"], [b"10.1.2.3", b"!10.1.", b"10."]):
        get = table(*lines)
        assert access.lookup(get, b"10.1.2.3") == access.ALLOW
        assert access.lookup(get, b"10.1.2.4") == access.DENY
        assert access.lookup(get, b"10.2.0.1") == access.ALLOW
        assert access.lookup(get, b"11.0.0.1") is None
        assert access.lookup(get, b"::1") is None
        assert access.lookup(get, b"unknown") is None


def test_conflicting_duplicates_are_refused_with_the_line_number():
    with pytest.raises(access.PatternError, match="line 2"):
        table(b"10.1.", b"!10.1.0.0/16")
    assert access.lookup(table(b"10.1.", b"10.1.0.0/16"), b"10.1.9.9") == access.ALLOW


def test_lookup_costs_one_get_per_prefix_length_in_use():
    data = dict(access.compile_patterns(enumerate([b"10.%d.%d.%d" % (i // 65536, i // 256 % 256, i % 256)
                                                   for i in range(2000)] + [b"192.168."], 1)))
    calls = []
    access.lookup(lambda k: calls.append(k) or data.get(k), b"172.16.0.1")
    assert len(calls) == 4  # #format, #lengths4, /32, /16


@given(ipv4, st.integers(min_value=0, max_value=32), ipv4)
def test_ipv4_cidr_matches_like_ipaddress(net_address, bits, address):
    network = ipaddress.ip_network("%s/%d" % (net_address, bits), strict=False)
    get = table(str(network).encode())
    expected = access.ALLOW if address in network else None
    assert access.lookup(get, str(address).encode()) == expected
    assert access.lookup(get, b"::ffff:" + str(address).encode()) == expected


@given(ipv6, st.integers(min_value=0, max_value=128), ipv6)
def test_ipv6_cidr_matches_like_ipaddress(net_address, bits, address):
    network = ipaddress.ip_network("%s/%d" % (net_address, bits), strict=False)
    get = table(str(network).encode())
    expected = access.ALLOW if address in network else None
    assert access.lookup(get, str(address).encode()) == expected
    assert access.lookup(get, address.exploded.upper().encode()) == expected


@given(ipv6, st.integers(min_value=0, max_value=127))
def test_ipv6_negated_host_inside_allowed_network(address, bits):
    network = ipaddress.ip_network("%s/%d" % (address, bits), strict=False)
    get = table(str(network).encode(), b"!" + str(address).encode())
    assert access.lookup(get, str(address).encode()) == access.DENY


@given(ipv4, st.integers(min_value=1, max_value=3))
def test_tcprules_prefix_equals_cidr(address, octets):
    prefix = ".".join(str(address).split(".")[:octets]).encode() + b"."
    cidr = str(ipaddress.ip_network("%s/%d" % (address, 8 * octets), strict=False)).encode()
    assert access.parse_pattern(prefix) == access.parse_pattern(cidr)


@given(st.binary(max_size=50))
def test_parse_pattern_only_raises_pattern_error(line):
    try:
        access.parse_pattern(line)
    except access.PatternError:
        pass


@given(st.binary(max_size=50))
def test_lookup_of_garbage_address_is_no_match(address):
    assert access.lookup(table(b"0.0.0.0/0", b"::/0"), address) in (None, access.ALLOW)


def test_loopback():
    for ip in (b"127.0.0.1", b"127.255.0.9", b"::1", b"::ffff:127.0.0.1", b"0:0::1"):
        assert access.is_loopback(ip)
    for ip in (b"128.0.0.1", b"126.255.255.255", b"::2", b"unknown", b"", b"10.0.0.1", b"::"):
        assert not access.is_loopback(ip)


def test_table_without_format_key_fails_closed():
    with pytest.raises(access.TableError):
        access.lookup({b"10.0.0.0/8": b"+"}.get, b"10.0.0.1")
    with pytest.raises(access.TableError):
        access.lookup({b"#format": access.FORMAT, b"#lengths4": b"x"}.get, b"10.0.0.1")
    with pytest.raises(access.TableError):
        access.lookup({b"#format": access.FORMAT, b"#lengths4": b"8", b"10.0.0.0/8": b"?"}.get, b"10.0.0.1")


def test_debug_peer_list_skips_bad_lines():
    assert access.in_list(b"10.1.2.3", [b"nonsense", b"10.1."])
    assert not access.in_list(b"10.2.2.3", [b"nonsense", b"10.1."])


def newqmqpclients(tree, text):
    """Write control/qmqpclients and run qmail-newqmqpclients; return the completed process."""
    (tree / "control" / "qmqpclients").write_bytes(text)
    return subprocess.run([program("qmail-newqmqpclients")], env=qenv(tree), capture_output=True)


SOURCE = b"# QMQP clients\n10.1.\n!10.1.2.3\n\n::1  \n2001:db8::/32\n127.0.0.0/8\t\n"


def test_newqmqpclients_builds_a_cdb_tinycdb_reads(tree):
    need("cdb")
    result = newqmqpclients(tree, SOURCE)
    assert result.returncode == 0, result.stderr
    cdb = str(tree / "control" / "qmqpclients.cdb")
    dump = subprocess.run(["cdb", "-d", cdb], capture_output=True, check=True).stdout
    assert dump.decode().splitlines() == [
        "+7,21:#format->pyqmail-qmqpclients 1", "+9,7:#lengths4->32,16,8", "+9,6:#lengths6->128,32",
        "+11,1:10.1.0.0/16->+", "+11,1:10.1.2.3/32->-", "+11,1:127.0.0.0/8->+", "+13,1:2001:db8::/32->+",
        "+7,1:::1/128->+", ""]  # tinycdb ends its dump with an empty line
    for key, value in ((b"10.1.2.3/32", b"-"), (b"::1/128", b"+"), (b"#lengths6", b"128,32")):
        assert subprocess.run(["cdb", "-q", cdb, key], capture_output=True, check=True).stdout == value
    assert subprocess.run(["cdb", "-q", cdb, b"10.1.2.4/32"], capture_output=True).returncode == 100
    assert not (tree / "control" / "qmqpclients.tmp").exists()
    assert access.authorize(b"10.1.2.4", False, cdb) == (True, "qmqpclients")
    assert access.authorize(b"10.1.2.3", False, cdb) == (False, "qmqpclients")
    assert access.authorize(b"10.7.0.1", False, cdb) == (False, "qmqpclients")


def test_newqmqpclients_bad_line_keeps_the_old_table(tree):
    assert newqmqpclients(tree, b"10.1.\n").returncode == 0
    before = (tree / "control" / "qmqpclients.cdb").read_bytes()
    result = newqmqpclients(tree, b"10.1.\nmail.example.com\n")
    assert result.returncode == 111
    assert result.stderr == b"qmail-newqmqpclients: fatal: control/qmqpclients: line 2: " \
                            b"not an IP address: mail.example.com\n"
    assert (tree / "control" / "qmqpclients.cdb").read_bytes() == before


def test_newqmqpclients_without_source_exits_111(tree):
    result = subprocess.run([program("qmail-newqmqpclients")], env=qenv(tree), capture_output=True)
    assert result.returncode == 111 and b"unable to read control/qmqpclients" in result.stderr
    assert not (tree / "control" / "qmqpclients.cdb").exists()


def test_newqmqpclients_unwritable_temp_exits_111(tree):
    (tree / "control" / "qmqpclients").write_bytes(b"10.\n")
    (tree / "control" / "qmqpclients.tmp").mkdir()  # fails for root too
    result = subprocess.run([program("qmail-newqmqpclients")], env=qenv(tree), capture_output=True)
    assert result.returncode == 111 and b"unable to write control/qmqpclients.tmp" in result.stderr
    assert not (tree / "control" / "qmqpclients.cdb").exists()


def test_authorize_without_table(world_tmp):
    missing = str(world_tmp / "none.cdb")
    assert access.authorize(b"127.0.0.1", False, missing) == (True, "loopback default")
    assert access.authorize(b"::1", False, missing) == (True, "loopback default")
    assert access.authorize(b"10.0.0.1", False, missing) == (False, "loopback default")
    assert access.authorize(b"10.0.0.1", True, missing) == (True, "QMQPCLIENT set")


@pytest.mark.parametrize("content", [b"", b"garbage", b"\0" * 2048])
def test_corrupt_table_fails_closed(world_tmp, content):
    bad = world_tmp / "bad.cdb"
    bad.write_bytes(content)
    with pytest.raises(access.TableError):
        access.authorize(b"127.0.0.1", False, str(bad))
