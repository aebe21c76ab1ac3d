"""qmail-qmqpd transcripts: the installed program on a socketpair (or a real loopback socket), real queue."""

import re
import socket
import subprocess
import time

import pytest

from conftest import program, qenv, queued
from pyqmail.lib.qmqp.qmqp import encode_request

HI = encode_request(b"hi\n", b"a@b", [b"c@d"])
K_REPLY = re.compile(rb"^(\d+):(Kok (\d+) qp (\d+)),$")


@pytest.fixture
def qtree(tree):
    """A tree whose qmail-qmqpd answers without the error delay."""
    control(tree, qmqpderrordelay=0)
    return tree


def control(tree, **files):
    """Write control files (name=value)."""
    for name, value in files.items():
        (tree / "control" / name).write_text("%s\n" % value)


def read_all(sock, timeout=20):
    """Read until the peer closes."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def start(procs, tree, conn, stderr=subprocess.PIPE, **env):
    """Start qmail-qmqpd with conn as fds 0 and 1; env given as TCPREMOTEIP=... etc."""
    env.setdefault("TCPREMOTEIP", "127.0.0.1")
    environ = qenv(tree, **{k: v for k, v in env.items() if v is not None})
    for k in [k for k, v in env.items() if v is None]:
        environ.pop(k, None)
    return procs.start([program("qmail-qmqpd")], stdin=conn, stdout=conn, stderr=stderr, env=environ)


def session(procs, tree, request, **env):
    """Send a whole request over a socketpair; return (reply, exit code, log)."""
    ours, theirs = socket.socketpair()
    p = start(procs, tree, theirs, **env)
    theirs.close()
    with ours:
        try:
            ours.sendall(request)
            ours.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may have answered and closed early
        reply = read_all(ours)
    log = p.stderr.read().decode()
    return reply, p.wait(20), log


def assert_nothing_queued(tree):
    """No message made it into the queue, and none is half-made."""
    q = tree / "queue"
    assert queued(tree) == {}
    assert [f for d in ("intd", "pid") for f in (q / d).iterdir()] == []
    assert [f for f in (q / "mess").rglob("*") if f.is_file()] == []


def test_queues_and_replies_like_qmail(procs, qtree):
    before = int(time.time())
    reply, code, log = session(procs, qtree, HI, TCPLOCALIP="10.0.0.9", TCPREMOTEHOST="bad host\n.example",
                               TCPREMOTEINFO="id[1]")
    m = K_REPLY.match(reply)
    assert m and int(m.group(1)) == len(m.group(2)) and code == 0
    assert before <= int(m.group(3)) <= time.time() + 1
    qp = int(m.group(4))
    [(mess, todo)] = queued(qtree).values()
    assert re.fullmatch(rb"Received: \(qmail %d invoked [^)]*\); \d+ \w{3} \d{4} \d\d:\d\d:\d\d -0000\n"
                        rb"Received: from bad\?host\?\.example \(id\[1\]@127\.0\.0\.1\)\n"
                        rb"  by 10\.0\.0\.9 with QMQP; \d+ \w{3} \d{4} \d\d:\d\d:\d\d -0000\n"
                        rb"hi\n" % qp, mess), mess
    assert re.fullmatch(rb"u\d+\0p%d\0Fa@b\0Tc@d\0" % qp, todo)
    assert "connect from bad?host?.example[127.0.0.1]" in log
    assert "queued qp %d size 3 rcpts 1 from" % qp in log


def test_unknown_local_and_remote_host_defaults(procs, qtree):
    session(procs, qtree, HI, TCPLOCALIP=None, TCPLOCALHOST=None)
    [(mess, _)] = queued(qtree).values()
    assert b"\nReceived: from unknown (127.0.0.1)\n  by unknown with QMQP; " in mess
    session(procs, qtree, HI, TCPLOCALHOST="mx.example", TCPLOCALIP="10.0.0.9")
    assert any(b"  by mx.example with QMQP; " in m for m, _ in queued(qtree).values())


def test_no_reply_before_the_last_byte(procs, qtree):
    ours, theirs = socket.socketpair()
    p = start(procs, qtree, theirs)
    theirs.close()
    with ours:
        ours.sendall(HI[:-1])
        ours.settimeout(1.0)
        with pytest.raises(socket.timeout):
            ours.recv(100)
        ours.sendall(HI[-1:])
        assert K_REPLY.match(read_all(ours))
    assert p.wait(20) == 0


def test_many_recipients_and_a_big_message(procs, qtree):
    message = b"Subject: big\n\n" + b"".join(b"line %06d \xff\x00\r\n" % i for i in range(100000))
    recipients = [b"r%d@example.com" % i for i in range(500)]
    reply, code, _ = session(procs, qtree, encode_request(message, b"", recipients))
    assert K_REPLY.match(reply) and code == 0
    [(mess, todo)] = queued(qtree).values()
    assert mess.endswith(b" with QMQP; " + mess.split(b" with QMQP; ")[1].split(b"\n")[0] + b"\n" + message)
    assert todo.split(b"\0")[2:-1] == [b"F"] + [b"T" + r for r in recipients]


@pytest.mark.parametrize("sender, recipients", [
    (b"a" * 1000, [b"c@d"]), (b"a@b", [b"c@d", b"x" * 5000]), (b"a\0b", [b"c@d"]), (b"a@b", [b"c\0d"])])
def test_addresses_qmail_refuses(procs, qtree, sender, recipients):
    reply, code, log = session(procs, qtree, encode_request(b"hi\n", sender, recipients))
    assert reply == b"51:Dsorry, I can't accept addresses like that (#5.1.3),"
    assert code == 0
    assert_nothing_queued(qtree)


@pytest.mark.parametrize("request_bytes, where", [
    (b"1_8:3:hi\n,3:a@b,3:c@d,,", "receiving QMQP packet header"),
    (b" 18:3:hi\n,3:a@b,3:c@d,,", "receiving QMQP packet header"),
    (b"+18:3:hi\n,3:a@b,3:c@d,,", "receiving QMQP packet header"),
    (b"018:3:hi\n,3:a@b,3:c@d,,", "receiving QMQP packet header"),
    (b"18:+3:hi\n,3:a@b,3:c@d,,", "receiving message content"),
    (b"18:3:hi\n;3:a@b,3:c@d,,", "receiving message content"),
    (b"18:3:hi\n,3:a@b,3:c@d,;", "receiving QMQP packet trailer"),
    (b"17:3:hi\n,3:a@b,3:c@d,,", "receiving recipient address"),
    (b"GET / HTTP/1.0\r\n\r\n", "receiving QMQP packet header"),
])
def test_malformed_requests_get_postfix_d_reply(procs, qtree, request_bytes, where):
    reply, code, log = session(procs, qtree, request_bytes)
    text = b"Dnetstring format error while " + where.encode()
    assert reply == b"%d:%s," % (len(text), text)
    assert code == 0
    assert text.decode() in log
    assert_nothing_queued(qtree)


@pytest.mark.parametrize("cut", [5, 40000, 300000, -12, -1])
def test_client_disconnecting_mid_request_queues_nothing(procs, qtree, cut):
    request = encode_request(b"x" * 300000 + b"\n", b"a@b", [b"c@d", b"e@f"])
    reply, code, log = session(procs, qtree, request[:cut])
    assert reply == b"" and code == 0
    assert "lost connection from unknown[127.0.0.1] while receiving" in log
    assert_nothing_queued(qtree)


def test_zero_recipients_are_queued_as_qmail_does(procs, qtree):
    reply, _, _ = session(procs, qtree, b"12:3:hi\n,3:a@b,,")
    assert reply.split(b":", 1)[1].startswith(b"Kok ")
    [(mess, todo)] = queued(qtree).values()
    assert todo.endswith(b"\0Fa@b\0") and mess.endswith(b"\nhi\n")


def test_message_size_limit_reads_to_the_end_then_refuses(procs, qtree):
    control(qtree, qmqpdmaxbytes=10)
    ours, theirs = socket.socketpair()
    p = start(procs, qtree, theirs)
    theirs.close()
    request = encode_request(b"0123456789X", b"a@b", [b"c@d"])
    with ours:
        ours.sendall(request[:-1])
        ours.settimeout(1.0)
        with pytest.raises(socket.timeout):
            ours.recv(100)
        ours.sendall(request[-1:])
        assert read_all(ours) == b"25:DError: message too large,"
    assert p.wait(20) == 0
    reply, _, _ = session(procs, qtree, encode_request(b"0123456789", b"a@b", [b"c@d"]))
    assert K_REPLY.match(reply)


def test_absurd_request_length_is_refused_at_once(procs, qtree):
    control(qtree, qmqpdmaxbytes=10)
    reply, code, _ = session(procs, qtree, b"1000011:")
    assert reply == b"25:DError: message too large," and code == 0
    assert_nothing_queued(qtree)


def hops(n):
    """A message with n Received/Delivered-To lines in its header and more in its body."""
    header = b"".join(b"Received: hop %d\n" % i if i % 2 else b"Delivered-To: x%d@y\n" % i for i in range(n))
    return encode_request(header + b"Subject: x\n\n" + b"Received: in the body\n" * 100, b"a@b", [b"c@d"])


def test_hop_limit_default_50(procs, qtree):
    reply, _, _ = session(procs, qtree, hops(50))
    assert reply == b"21:DError: too many hops,"
    assert_nothing_queued(qtree)
    reply, _, _ = session(procs, qtree, hops(49))
    assert K_REPLY.match(reply)


def test_hop_limit_control(procs, qtree):
    control(qtree, qmqpdmaxhops=3)
    assert session(procs, qtree, hops(3))[0] == b"21:DError: too many hops,"
    assert K_REPLY.match(session(procs, qtree, hops(2))[0])


def test_soft_bounce_turns_d_into_z(procs, qtree):
    control(qtree, qmqpdsoftbounce=1)
    reply, _, _ = session(procs, qtree, encode_request(b"hi\n", b"a\0b", [b"c@d"]))
    assert reply == b"51:Zsorry, I can't accept addresses like that (#5.1.3),"
    reply, _, _ = session(procs, qtree, HI, TCPREMOTEIP="10.0.0.1")
    assert reply == b"63:ZError: unknown[10.0.0.1] is not authorized to use this service,"


def test_error_delay_before_negative_replies(procs, tree):
    control(tree, qmqpderrordelay=2)
    t0 = time.monotonic()
    reply, _, _ = session(procs, tree, HI, TCPREMOTEIP="10.0.0.1")
    assert reply.startswith(b"63:DError") and time.monotonic() - t0 >= 2


def qq_script(tmp, text):
    """Write a fake qmail-queue ($QMAILQUEUE) from shell text and return its path."""
    path = tmp / "fake-qq"
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("script, reply", [
    ("cat >/dev/null; exit 31", "Dmail server permanently rejected message (#5.3.0)"),
    ("exec 0<&-; exit 53", "Zqq write error or disk full (#4.3.0)"),
    ("cat >/dev/null; printf 'Dno thanks (#5.7.1)' >&6; exit 82", "Dno thanks (#5.7.1)"),
    ("kill -9 $$", "Zqq crashed (#4.3.0)"),
])
def test_qmail_queue_failures_are_reported_with_qmails_texts(procs, qtree, world_tmp, script, reply):
    got, code, log = session(procs, qtree, HI, QMAILQUEUE=qq_script(world_tmp, script))
    assert got == b"%d:%s," % (len(reply), reply.encode()) and code == 0
    assert "qmail-queue failed for unknown[127.0.0.1]: " + reply in log


def test_refused_client_gets_d_before_sending_anything(procs, qtree):
    ours, theirs = socket.socketpair()
    p = start(procs, qtree, theirs, TCPREMOTEIP="192.0.2.7")
    theirs.close()
    with ours:
        assert read_all(ours, timeout=10) == b"64:DError: unknown[192.0.2.7] is not authorized to use this service,"
    assert p.wait(10) == 0
    assert "refused unknown[192.0.2.7]: not authorized (loopback default)" in p.stderr.read().decode()


def test_qmqpclient_from_tcprules_admits_any_address(procs, qtree):
    assert K_REPLY.match(session(procs, qtree, HI, TCPREMOTEIP="192.0.2.7", QMQPCLIENT="")[0])
    assert session(procs, qtree, HI, TCPREMOTEIP="192.0.2.7")[0].startswith(b"64:DError: unknown[192.0.2.7] is")


def newqmqpclients(tree, text):
    """Compile control/qmqpclients with the real qmail-newqmqpclients."""
    (tree / "control" / "qmqpclients").write_text(text)
    subprocess.run([program("qmail-newqmqpclients")], env=qenv(tree), check=True)


@pytest.mark.parametrize("ip, allowed", [
    ("10.1.2.3", True), ("10.1.9.9", False), ("10.2.0.1", False), ("127.0.0.1", False),
    ("2001:db8:0:1::5", True), ("2001:db9::1", False), ("::1", True), ("::ffff:10.1.2.3", True), ("unknown", False)])
def test_qmqpclients_table(procs, qtree, ip, allowed):
    newqmqpclients(qtree, "# clients\n10.1.2.3\n!10.1.9.\n10.1.\n2001:db8::/32\n::1\n")
    reply = session(procs, qtree, HI, TCPREMOTEIP=ip)[0]
    assert bool(K_REPLY.match(reply)) == allowed, reply


def test_default_allows_loopback_only_ipv6_too(procs, qtree):
    assert K_REPLY.match(session(procs, qtree, HI, TCPREMOTEIP="::1")[0])
    assert K_REPLY.match(session(procs, qtree, HI, TCPREMOTEIP="127.9.9.9")[0])
    assert session(procs, qtree, HI, TCPREMOTEIP="2001:db8::1")[0] == \
        b"66:DError: unknown[2001:db8::1] is not authorized to use this service,"


@pytest.mark.parametrize("content", [b"junk", b""])
def test_corrupt_table_fails_closed_with_z(procs, qtree, content):
    (qtree / "control" / "qmqpclients.cdb").write_bytes(content)
    reply, code, log = session(procs, qtree, b"")
    assert reply == b"34:ZError: server configuration error," and code == 0
    assert "refused unknown[127.0.0.1]: cannot read" in log


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_peer_from_getpeername_without_tcp_environment(procs, qtree, host):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname()[:2])
        conn, _ = listener.accept()
        with client:
            p = start(procs, qtree, conn, TCPREMOTEIP=None, TCPLOCALIP=None, REMOTE_ADDR="192.0.2.1")
            conn.close()
            client.sendall(HI)
            assert K_REPLY.match(read_all(client))
    assert "connect from unknown[%s]" % host in p.stderr.read().decode()
    [(mess, _)] = queued(qtree).values()
    assert b"Received: from unknown (%s)\n  by %s with QMQP" % (host.encode(), host.encode()) in mess


def test_stderr_on_the_client_socket_never_reaches_the_client(procs, qtree):
    control(qtree, qmqpddebugpeers="0.0.0.0/0")
    for env, expected in (({"TCPREMOTEIP": "192.0.2.7"}, rb"64:DError: unknown\[192.0.2.7\] is not authorized"
                           rb" to use this service,"), ({}, K_REPLY.pattern[1:-1])):
        ours, theirs = socket.socketpair()
        p = start(procs, qtree, theirs, stderr=theirs, **env)
        theirs.close()
        with ours:
            ours.sendall(HI)
            assert re.fullmatch(expected, read_all(ours))
        assert p.wait(10) == 0


def test_per_read_timeout(procs, qtree):
    control(qtree, qmqpdtimeout=1)
    ours, theirs = socket.socketpair()
    p = start(procs, qtree, theirs)
    theirs.close()
    with ours:
        ours.sendall(HI[:6])
        assert read_all(ours) == b""
    assert p.wait(10) == 111
    assert "timeout from unknown[127.0.0.1] while receiving message content" in p.stderr.read().decode()
    assert_nothing_queued(qtree)


def test_session_deadline(procs, qtree):
    control(qtree, qmqpddeadline=2)
    ours, theirs = socket.socketpair()
    p = start(procs, qtree, theirs)
    theirs.close()
    t0 = time.monotonic()
    with ours:
        try:
            for byte in HI[:-1]:
                ours.send(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass
        assert read_all(ours) == b""
    assert p.wait(10) == 111 and 2 <= time.monotonic() - t0 < 8
    assert "session deadline reached for unknown[127.0.0.1]" in p.stderr.read().decode()
    assert_nothing_queued(qtree)


def test_debug_peer_and_port_logging(procs, qtree):
    control(qtree, qmqpddebugpeers="127.", qmqpdclientportlogging=1)
    _, _, log = session(procs, qtree, HI, TCPREMOTEPORT="4321")
    assert "connect from unknown[127.0.0.1]:4321" in log
    assert "debug: sender <a@b>, 1 recipients: <c@d>" in log
    _, _, log = session(procs, qtree, HI, TCPREMOTEIP="::1")
    assert "debug:" not in log
    assert all(len(line) < 200 for line in log.splitlines())


def test_closed_stderr_logs_to_syslog_and_still_replies(procs, qtree):
    import os
    ours, theirs = socket.socketpair()
    p = procs.start([program("qmail-qmqpd")], stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL,
                    env=qenv(qtree, TCPREMOTEIP="127.0.0.1"), preexec_fn=lambda: os.close(2))
    theirs.close()
    with ours:
        ours.sendall(HI)
        assert K_REPLY.match(read_all(ours))
    assert p.wait(10) == 0
    assert len(queued(qtree)) == 1
