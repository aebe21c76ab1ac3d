"""qmail-remote's MX and address lookups against dnsmasq on a loopback address (control/dnsservers; no real DNS)."""

import os
import socket
import time

import pytest

from conftest import free_port, need
from test_qmail_remote import NOCONN, dumped, remote, route, start_sink

DNS_IP = "127.0.0.53"


def free_port_on(*hosts):
    """Return a TCP port free on every host."""
    while True:
        port = free_port(hosts[0])
        ok = True
        for h in hosts[1:]:
            with socket.socket() as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
        if ok:
            return port


def udp_port(host):
    """Return a UDP port free on host."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def dns(procs, tree):
    """Start dnsmasq with the given records on a loopback address; point qmail-remote at it."""
    need("dnsmasq")

    def start(*records):
        port = udp_port(DNS_IP)
        user = ["--user=nobody"] if os.geteuid() == 0 else []
        procs.start(["dnsmasq", "-k", "-C", "/dev/null", "--pid-file=", "-p", str(port), "--listen-address", DNS_IP,
                     "--bind-interfaces", "--no-resolv", "--no-hosts", "--local=/test/", *user, *records])
        (tree / "control" / "dnsservers").write_bytes(b"%s:%d\n" % (DNS_IP.encode(), port))
        deadline = time.time() + 5
        while time.time() < deadline:  # wait until it answers
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.2)
                s.sendto(bytes.fromhex("1234010000010000000000000474657374000001" "0001"), (DNS_IP, port))
                try:
                    s.recv(512)
                    return port
                except OSError:
                    continue
        raise TimeoutError("dnsmasq did not answer")
    return start


def two_sinks(procs, world_tmp, tree, *domains):
    """Start smtp-sinks on 127.0.0.2 and 127.0.0.3 at one port; route the domains' MX deliveries to that port."""
    port = free_port_on("127.0.0.2", "127.0.0.3")
    dumps = [start_sink(procs, world_tmp, host=h, port=port)[1] for h in ("127.0.0.2", "127.0.0.3")]
    # an empty relay: MX lookup as usual, on this port
    (tree / "control" / "smtproutes").write_bytes(b"".join(d + b"::%d\n" % port for d in domains))
    return dumps


def test_mx_preference_order_and_fallback(procs, tree, world_tmp, dns):
    dns("--mx-host=mx.test,mx1.mx.test,10", "--mx-host=mx.test,mx2.mx.test,20",
        "--host-record=mx1.mx.test,127.0.0.2", "--host-record=mx2.mx.test,127.0.0.3")
    first, second = two_sinks(procs, world_tmp, tree, b"mx.test")
    assert remote(tree, world_tmp, ["mx.test", "a@b", "c@mx.test"])[1] == (
        b"r\0K127.0.0.2 accepted message.\nRemote host said: 250 2.0.0 Ok\n\0")
    assert len(dumped(first)) == 1 and os.listdir(second) == []
    procs.stop(procs.procs[-2])  # the best MX goes away: the second is used
    assert remote(tree, world_tmp, ["mx.test", "a@b", "c@mx.test"])[1] == (
        b"r\0K127.0.0.3 accepted message.\nRemote host said: 250 2.0.0 Ok\n\0")


def test_equal_preferences_are_tried_in_random_order(procs, tree, world_tmp, dns):
    dns("--mx-host=eq.test,m1.eq.test,10", "--mx-host=eq.test,m2.eq.test,10",
        "--host-record=m1.eq.test,127.0.0.2", "--host-record=m2.eq.test,127.0.0.3")
    dumps = two_sinks(procs, world_tmp, tree, b"eq.test")
    for _ in range(16):
        remote(tree, world_tmp, ["eq.test", "a@b", "c@eq.test"])
    time.sleep(0.3)
    counts = [len(os.listdir(d)) for d in dumps]
    assert sum(counts) == 16 and min(counts) > 0, counts


def test_no_mx_uses_the_address_record(procs, tree, world_tmp, dns):
    dns("--host-record=a.test,127.0.0.2")
    two_sinks(procs, world_tmp, tree, b"a.test")
    assert remote(tree, world_tmp, ["a.test", "a@b", "c@a.test"])[1].startswith(b"r\0K127.0.0.2 accepted")


def test_dns_failures(procs, tree, world_tmp, dns):
    dns("--mx-host=nomx.test,gone.nomx.test,10")
    assert remote(tree, world_tmp, ["nx.test", "a@b", "c@nx.test"])[1] == (
        b"DSorry, I couldn't find any host named nx.test. (#5.1.2)\n\0")
    # dnsmasq has no upstream server for other names: it refuses, a temporary failure
    assert remote(tree, world_tmp, ["elsewhere.example", "a@b", "c@elsewhere.example"])[1] == (
        b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n\0")
    assert remote(tree, world_tmp, ["nomx.test", "a@b", "c@nomx.test"])[1] == (
        b"DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n\0")


def test_an_mx_that_is_me(procs, tree, world_tmp, dns):
    dns("--mx-host=me.test,self.me.test,5", "--mx-host=me.test,other.me.test,10",
        "--mx-host=backup.test,other.me.test,10", "--mx-host=backup.test,self.me.test,20",
        "--host-record=self.me.test,127.0.0.1", "--host-record=other.me.test,127.0.0.2")
    two_sinks(procs, world_tmp, tree, b"me.test", b"backup.test")
    out = remote(tree, world_tmp, ["me.test", "a@b", "c@me.test"])[1]
    assert out.startswith(b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n")
    assert remote(tree, world_tmp, ["backup.test", "a@b", "c@backup.test"])[1].startswith(b"r\0K127.0.0.2 ")


def test_relay_name_resolved_by_address_incl_ipv6(procs, tree, world_tmp, dns):
    """A route's relay is looked up by A/AAAA only (no MX, no "is me" check): ::1 through AAAA."""
    dns("--host-record=relay6.test,::1", "--mx-host=relay6.test,nowhere.test,10")
    port, dump = start_sink(procs, world_tmp, host="::1")
    route(tree, b"v6.example:relay6.test:%d" % port)
    assert remote(tree, world_tmp, ["v6.example", "a@b", "c@v6.example"])[1] == (
        b"r\0K::1 accepted message.\nRemote host said: 250 2.0.0 Ok\n\0")
    assert b"X-Client-Addr: ipv6:::1" in dumped(dump)[0][0]


def test_ipv6_literal_route(procs, tree, world_tmp):
    port, dump = start_sink(procs, world_tmp, host="::1")
    route(tree, b":[IPv6:::1]:%d" % port)
    assert remote(tree, world_tmp, ["x.example", "a@b", "c@x.example"])[1].startswith(b"r\0K::1 accepted")
    route(tree, b":[::1]:%d" % free_port("::1"))
    assert remote(tree, world_tmp, ["x.example", "a@b", "c@x.example"]) == (0, NOCONN)
