"""qmail-qmqpd under the real tcpserver with real tcprules tables, fed by Postfix's qmqp-source."""

import re
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import ipv6_tcpserver, make_tree, need, program, qenv, queued, run_queue_program, tcpserver

pytestmark = pytest.mark.interop


def rules(world_tmp, text, tcprules="tcprules"):
    """Compile a tcprules table with the real tcprules; return its path."""
    need(tcprules)
    cdb, tmp = world_tmp / "qmqp.cdb", world_tmp / "qmqp.tmp"
    subprocess.run([tcprules, str(cdb), str(tmp)], input=text.encode(), check=True)
    return cdb


def serve(procs, tree, rules_cdb=None):
    """Run qmail-qmqpd under tcpserver on loopback, answering without the error delay; return the port."""
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    return tcpserver(procs, tree, [program("qmail-qmqpd")], rules_cdb=rules_cdb)  # its log goes to a file


def exchange(port, request):
    """Connect, send request, half-close; return everything the server sends."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        if request is not None:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data
            data += chunk


REFUSED = b"64:DError: unknown[127.0.0.1] is not authorized to use this service,"
RECEIVED = (rb"Received: \(qmail (\d+) invoked [^)]*\); [^\n]+ -0000\n"
            rb"Received: from unknown \(127\.0\.0\.1\)\n  by 0 with QMQP; \d+ \w{3} \d{4} [\d:]{8} -0000\n")
PAYLOAD = rb"From: <qs@example\.org>\nTo: <rcpt@example\.net>\nDate: [^\n]+\nMessage-Id: <\d+@[^\n]+>\n\n((?:X+\n)+)"


def test_qmqp_source_1000_messages_in_10_parallel_sessions_all_queued_intact(procs, tree, world_tmp):
    need("qmqp-source")
    port = serve(procs, tree, rules(world_tmp, '127.:allow,QMQPCLIENT=""\n:deny\n'))
    length = 700
    result = subprocess.run(["qmqp-source", "-s", "10", "-m", "1000", "-l", str(length), "-r", "2",
                             "-f", "qs@example.org", "-t", "rcpt@example.net", "127.0.0.1:%d" % port],
                            capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr
    messages = queued(tree)
    assert len(messages) == 1000
    for mess, todo in messages.values():
        head = re.match(RECEIVED, mess)
        assert head, mess[:300]
        payload = mess[head.end():]
        assert len(payload) == length
        m = re.fullmatch(PAYLOAD, payload)
        assert m, payload[:300]
        xs = [len(line) for line in m.group(1).splitlines()]
        assert xs[:-1] == list(range(1, len(xs)))  # qmqp-source's body: X, XX, XXX, ... cut at -l bytes
        assert re.fullmatch(rb"u\d+\0p%s\0Fqs@example\.org\0T0rcpt@example\.net\0T1rcpt@example\.net\0"
                            % head.group(1), todo), todo


def test_qmqpclient_from_tcprules_admits_despite_the_table(procs, tree, world_tmp):
    (tree / "control" / "qmqpclients").write_text("10.1.\n")
    subprocess.run([program("qmail-newqmqpclients")], env=qenv(tree), check=True)
    plain = serve(procs, tree)
    marked = serve(procs, tree, rules(world_tmp, '127.0.0.1:allow,QMQPCLIENT=""\n'))
    request = b"18:3:hi\n,3:a@b,3:c@d,,"
    assert exchange(plain, request) == REFUSED
    assert re.fullmatch(rb"\d+:Kok \d+ qp \d+,", exchange(marked, request))
    assert len(queued(tree)) == 1


def test_unauthorized_client_gets_d_before_sending_anything(procs, tree):
    (tree / "control" / "qmqpclients").write_text("# only the LAN\n10.1.\n!10.1.2.3\n")
    subprocess.run([program("qmail-newqmqpclients")], env=qenv(tree), check=True)
    port = serve(procs, tree)
    assert exchange(port, None) == REFUSED
    reply = exchange(port, b"18:3:hi\n,3:a@b,3:c@d,,")  # a client that sends at once still reads the reply
    assert reply == REFUSED
    assert queued(tree) == {}


def test_qmqp_source_refused_client_queues_nothing(procs, tree):
    need("qmqp-source")
    (tree / "control" / "qmqpclients").write_text("192.0.2.0/24\n")
    subprocess.run([program("qmail-newqmqpclients")], env=qenv(tree), check=True)
    port = serve(procs, tree)
    subprocess.run(["qmqp-source", "-s", "2", "-m", "10", "127.0.0.1:%d" % port], capture_output=True, timeout=120)
    assert queued(tree) == {}


def test_default_policy_through_tcpserver_admits_loopback(procs, tree):
    port = serve(procs, tree)
    assert re.fullmatch(rb"\d+:Kok \d+ qp \d+,", exchange(port, b"18:3:hi\n,3:a@b,3:c@d,,"))


def test_ipv6_under_ucspi_tcp_ipv6(procs, tree, world_tmp):
    """Debian's ucspi-tcp-ipv6 on ::1: its tcprules table with an IPv6 rule, qmail-qmqpc from a mini-qmail
    tree with [::1]:port in qmqpservers, and a raw client; the Received line names ::1."""
    server = ipv6_tcpserver()
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    # its own tcprules (0.88's cannot parse an IPv6 rule); qmqpclients does not list ::1: QMQPCLIENT admits
    (tree / "control" / "qmqpclients").write_text("10.9.9.9\n")
    subprocess.run([program("qmail-newqmqpclients")], env=qenv(tree), check=True)
    cdb = rules(world_tmp, '::1:allow,QMQPCLIENT=""\n:deny\n', str(Path(server).parent / "tcprules"))
    port = tcpserver(procs, tree, [program("qmail-qmqpd")], host="::1", rules_cdb=cdb, server=server,
                     options=["-v"])
    with socket.create_connection(("::1", port), timeout=20) as s:
        s.sendall(b"18:3:hi\n,3:a@b,3:c@d,,")
        assert re.match(rb"\d+:Kok ", s.recv(100))
    mini = make_tree(world_tmp / "mini", "--single-user", "--me", "mini.example", "--mini", "[::1]:%d" % port)
    p = run_queue_program("qmail-qmqpc", mini, b"Subject: six\n\nover ::1\n", b"Fs@mini.example\0Tr@x.example\0\0")
    assert p.returncode == 0, p.stderr_bytes
    messages = sorted(queued(tree).values())
    assert len(messages) == 2
    for mess, _ in messages:
        assert re.match(rb"Received: \(qmail \d+ invoked [^)]*\); [^\n]+\n"
                        rb"Received: from unknown \(::1\)\n  by 0 with QMQP; ", mess), mess[:200]
    assert sorted(todo.split(b"\0")[2:] for _, todo in messages) == [
        [b"Fa@b", b"Tc@d", b""], [b"Fs@mini.example", b"Tr@x.example", b""]]
    assert b"\n\nover ::1\n" in messages[1][0] or b"\n\nover ::1\n" in messages[0][0]
    log = (tree / ("tcpserver-%d.log" % port)).read_text()
    assert "tcpserver: ok " in log and ":::1:%d " % port in log  # ucspi-tcp-ipv6's own log line
