"""qmail-remote against Postfix's smtp-sink on loopback: reports byte for byte, the bytes stored, the tcpto table."""

import os
import socket
import subprocess
import time

import pytest
from hypothesis import given, settings, strategies as st

from conftest import free_port, need, program, qenv, wait_port

ROOT = os.geteuid() == 0
SINK_IP = "127.0.0.2"
ERR5 = b"Remote host said: 500 5.3.0 Error: command failed\n"
ERR4 = b"Remote host said: 450 4.3.0 Error: command failed\n"
OK = b"K127.0.0.2 accepted message.\nRemote host said: 250 2.0.0 Ok\n\0"
NOCONN = b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n\0"


def start_sink(procs, world_tmp, options=(), host=SINK_IP, port=None):
    """Run smtp-sink on a free port of host, dumping each message to its own file; return (port, dump dir)."""
    need("smtp-sink")
    dump = world_tmp / ("dump-%d" % time.monotonic_ns())
    dump.mkdir()
    os.chmod(dump, 0o777)
    port = port or free_port(host)
    user = ["-u", "nobody"] if ROOT else []
    address = ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)
    procs.start(["smtp-sink", *user, "-d", str(dump) + "/m.", *options, address, "10"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(host, port)
    return port, dump


def route(tree, line):
    """Write control/smtproutes."""
    (tree / "control" / "smtproutes").write_bytes(line + b"\n")


def remote(tree, world_tmp, argv, message=b"Subject: x\n\nbody\n", env=None):
    """Run the installed qmail-remote with the message in a file on fd 0; return (exit code, stdout)."""
    msg = world_tmp / "message"
    msg.write_bytes(message)
    with open(msg, "rb") as f:
        p = subprocess.run([program("qmail-remote"), *argv], stdin=f, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=qenv(tree, **(env or {})), timeout=60)
    assert p.stderr == b""
    return p.returncode, p.stdout


def dumped(dump, count=1, wait=5.0):
    """Return the messages smtp-sink stored, as (generated headers, message) pairs."""
    deadline = time.time() + wait
    while len(os.listdir(dump)) < count and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # the file is complete once the final reply was sent; give it a moment to be closed
    out = []
    for name in sorted(os.listdir(dump)):
        data = (dump / name).read_bytes()
        head, _, rest = data.partition(b"\nReceived: ")
        rest = rest.split(b"\n", 3)[3]  # the three lines of smtp-sink's Received header
        assert rest.endswith(b"\n")
        out.append((head + b"\n", rest[:-1]))  # minus the empty line smtp-sink adds
    return out


@pytest.fixture
def sink(procs, tree, world_tmp):
    """An accepting smtp-sink, routed to for every domain."""
    port, dump = start_sink(procs, world_tmp)
    route(tree, b":[%s]:%d" % (SINK_IP.encode(), port))
    return dump


def test_delivery_reports_and_bytes(tree, world_tmp, sink):
    code, out = remote(tree, world_tmp, ["example.com", "a@b.example", "c@example.com", "d@example.com"],
                       b"Subject: hi\n\n.dot\nline\n")
    assert (code, out) == (0, b"r\0r\0" + OK)
    [(head, body)] = dumped(sink)
    assert body == b"Subject: hi\n\n.dot\nline\n"
    assert b"X-Mail-Args: <a@b.example>" in head
    assert b"X-Rcpt-Args: <c@example.com>\nX-Rcpt-Args: <d@example.com>\n" in head
    assert b"X-Helo-Args: test.example\n" in head


def test_quoting_and_empty_sender(tree, world_tmp, sink):
    code, out = remote(tree, world_tmp, ["example.com", "", "a b@example.com", "x..y@example.com"])
    assert out == b"r\0r\0" + OK
    [(head, _)] = dumped(sink)
    assert b'X-Mail-Args: <>\nX-Rcpt-Args: <"a b"@example.com>\nX-Rcpt-Args: <"x..y"@example.com>\n' in head


def test_helohost_overrides_me(tree, world_tmp, sink):
    (tree / "control" / "helohost").write_bytes(b"helo.example \t\nignored\n")
    remote(tree, world_tmp, ["example.com", "a@b", "c@example.com"])
    [(head, _)] = dumped(sink)
    assert b"X-Helo-Args: helo.example\n" in head


@pytest.mark.parametrize("options, out", [
    (["-f", "RCPT"], b"h127.0.0.2 does not like recipient.\n" + ERR5 + b"\0" +
     b"h127.0.0.2 does not like recipient.\n" + ERR5 + b"\0DGiving up on 127.0.0.2.\n\0"),
    (["-r", "RCPT"], b"s127.0.0.2 does not like recipient.\n" + ERR4 + b"\0" +
     b"s127.0.0.2 does not like recipient.\n" + ERR4 + b"\0DGiving up on 127.0.0.2.\n\0"),
    (["-f", "MAIL"], b"DConnected to 127.0.0.2 but sender was rejected.\n" + ERR5 + b"\0"),
    (["-r", "MAIL"], b"ZConnected to 127.0.0.2 but sender was rejected.\n" + ERR4 + b"\0"),
    (["-f", "DATA"], b"r\0r\0D127.0.0.2 failed on DATA command.\n" + ERR5 + b"\0"),
    (["-r", "DATA"], b"r\0r\0Z127.0.0.2 failed on DATA command.\n" + ERR4 + b"\0"),
    (["-f", "."], b"r\0r\0D127.0.0.2 failed after I sent the message.\n" + ERR5 + b"\0"),
    (["-r", "."], b"r\0r\0Z127.0.0.2 failed after I sent the message.\n" + ERR4 + b"\0"),
    (["-f", "CONNECT"], b"ZConnected to 127.0.0.2 but greeting failed.\n" + ERR5 + b"\0"),
    (["-f", "EHLO,HELO"], b"ZConnected to 127.0.0.2 but my name was rejected.\n" + ERR5 + b"\0"),
    (["-f", "EHLO"], b"r\0r\0" + OK),  # HELO after a refused EHLO
    (["-e"], b"r\0r\0" + OK),  # no ESMTP at all
    (["-q", "."], b"r\0r\0ZConnected to 127.0.0.2 but connection died. Possible duplicate! (#4.4.2)\n\0"),
    (["-q", "MAIL"], b"ZConnected to 127.0.0.2 but connection died. (#4.4.2)\n\0"),
    (["-Q", "RCPT"], b"s127.0.0.2 does not like recipient.\nRemote host said: 421 4.0.0 Server closing connection\n\0"
     b"ZConnected to 127.0.0.2 but connection died. (#4.4.2)\n\0"),
])
def test_refusals(procs, tree, world_tmp, options, out):
    port, dump = start_sink(procs, world_tmp, options)
    route(tree, b"example.com:[127.0.0.2]:%d" % port)
    code, got = remote(tree, world_tmp, ["example.com", "a@b.example", "c@example.com", "d@example.com"])
    assert (code, got) == (0, out)


def test_recipient_with_line_break_is_not_sent(procs, tree, world_tmp):
    """A recipient with CR LF in it would end RCPT early and smuggle a command: it is refused, the rest go."""
    port, dump = start_sink(procs, world_tmp)
    route(tree, b":[127.0.0.2]:%d" % port)
    code, got = remote(tree, world_tmp, ["example.com", "a@b", "c\r\nRSET@example.com", "d@example.com"])
    assert got == b"hSorry, an address with a CR or LF in it can't be sent in SMTP. (#5.1.3)\n\0r\0" + OK
    [(head, _)] = dumped(dump)
    assert b"RSET" not in head


def test_sender_with_line_break_is_refused_before_connecting(tree, world_tmp, sink):
    code, got = remote(tree, world_tmp, ["example.com", "a\n@b", "c@example.com"])
    assert got == b"DSorry, a sender address with a CR or LF in it can't be sent in SMTP. (#5.1.7)\n\0"
    assert os.listdir(sink) == []


def test_usage_and_controls(tree, world_tmp):
    assert remote(tree, world_tmp, ["a", "b"]) == (0, b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0")
    (tree / "control" / "me").unlink()
    assert remote(tree, world_tmp, ["a", "b", "c@a"]) == (0, b"ZUnable to read control files. (#4.3.0)\n\0")
    assert remote(tree, world_tmp, ["a", "b", "c@a"], env={"QMAILHOME": str(world_tmp / "none")}) == (
        0, b"ZUnable to switch to home directory. (#4.3.0)\n\0")


def test_connection_refused(tree, world_tmp):
    route(tree, b":[127.0.0.2]:%d" % free_port("127.0.0.2"))
    assert remote(tree, world_tmp, ["example.com", "a@b", "c@example.com"]) == (0, NOCONN)


def test_literal_host_that_is_me_is_ambiguous(tree, world_tmp):
    code, out = remote(tree, world_tmp, ["[127.0.0.1]", "a@b", "c@[127.0.0.1]"])
    assert out.startswith(b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n")


def test_partial_last_line_is_completed(tree, world_tmp, sink):
    assert remote(tree, world_tmp, ["x", "a@b", "c@x"], b"Subject: x\n\nno newline")[1] == b"r\0" + OK
    assert dumped(sink)[0][1] == b"Subject: x\n\nno newline\n"


def test_size_and_8bitmime(procs, tree, world_tmp, sink):
    message = b"Subject: x\n\n\xe9t\xe9\n"
    remote(tree, world_tmp, ["x", "a@b", "c@x"], message)
    [(head, body)] = dumped(sink)
    assert b"X-Mail-Args: <a@b> BODY=8BITMIME\n" in head
    assert body == message


MESSAGE = st.lists(st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\n.", b"\r.", b".\r\n", b"a", b"\xff", b"\0", b" ",
                                    b"\r\n.\r\n", b"\n.\n", b"\n.\r\n", b"MAIL FROM:<x@y>\r\n"]),
                   max_size=40).map(b"".join)


def expected(message):
    """What the receiving side must store: every line ending as one line break, a last line completed."""
    text = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return text + b"\n" if text and not text.endswith(b"\n") else text


def test_transparency_and_smuggling_through_smtp_sink(tree, world_tmp, sink):
    """Any message: smtp-sink stores exactly one message, equal to the message with line ends normalized."""
    seen = []

    @settings(max_examples=40, deadline=None, database=None)
    @given(MESSAGE)
    def check(message):
        for name in os.listdir(sink):
            os.unlink(sink / name)
        code, out = remote(tree, world_tmp, ["x", "a@b", "c@x"], message)
        assert out == b"r\0" + OK
        stored = dumped(sink)
        assert len(stored) == 1
        assert stored[0][1] == expected(message)
        seen.append(message)

    check()
    assert seen


def fill_backlog(host):
    """Return a listening socket whose accept queue is full: further SYNs are dropped, connects time out."""
    server = socket.socket()
    server.bind((host, 0))
    server.listen(0)
    clients = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(server.getsockname())
        clients.append(c)
    import select  # the first one connected (writable) fills the queue of a listen(0): the rest wait in SYN_SENT
    assert select.select([], clients[:1], [], 30)[1], "the backlog never filled"
    return server, clients


def tcpto_table(tree):
    """Return the tcpto file's bytes."""
    return (tree / "queue" / "lock" / "tcpto").read_bytes()


def test_connect_timeout_is_recorded_and_printed(tree, world_tmp):
    server, clients = fill_backlog("127.0.0.9")
    (tree / "control" / "timeoutconnect").write_bytes(b"1\n")
    route(tree, b":[127.0.0.9]:%d" % server.getsockname()[1])
    start = time.time()
    assert remote(tree, world_tmp, ["x", "a@b", "c@x"]) == (0, NOCONN)
    assert 0.9 < time.time() - start < 10
    table = tcpto_table(tree)
    assert table[:5] == bytes([127, 0, 0, 9, 1]) and abs(int.from_bytes(table[8:12], "little") - start) < 3
    assert table[16:] == bytes(1008)
    out = subprocess.run([program("qmail-tcpto")], env=qenv(tree), stdout=subprocess.PIPE, check=True).stdout
    assert out in (b"127.0.0.9 timed out %d seconds ago; # recent timeouts: 1\n" % s for s in (0, 1, 2, 3))
    remote(tree, world_tmp, ["x", "a@b", "c@x"])
    assert tcpto_table(tree)[4] == 1  # a second timeout within 120 s does not count
    subprocess.run([program("qmail-tcpok")], env=qenv(tree), check=True)
    assert tcpto_table(tree) == bytes(1024)
    assert subprocess.run([program("qmail-tcpto")], env=qenv(tree), stdout=subprocess.PIPE).stdout == b""
    server.close()
    for c in clients:
        c.close()


def write_record(tree, ip, count, when):
    """Put one record at the start of the tcpto table."""
    path = tree / "queue" / "lock" / "tcpto"
    data = bytearray(path.read_bytes())
    data[:16] = bytes(ip) + bytes([count, 0, 0, 0]) + int(when).to_bytes(4, "little") + bytes(4)
    path.write_bytes(bytes(data))


def test_recent_timeouts_are_skipped_until_qmail_tcpok(tree, world_tmp, sink):
    write_record(tree, [127, 0, 0, 2], 2, time.time() - 10)
    assert remote(tree, world_tmp, ["x", "a@b", "c@x"]) == (0, NOCONN)
    assert os.listdir(sink) == []
    subprocess.run([program("qmail-tcpok")], env=qenv(tree), check=True)
    assert remote(tree, world_tmp, ["x", "a@b", "c@x"]) == (0, b"r\0" + OK)


def test_old_timeouts_are_tried_and_a_success_clears_the_count(tree, world_tmp, sink):
    write_record(tree, [127, 0, 0, 2], 5, time.time() - 97 * 64)
    assert remote(tree, world_tmp, ["x", "a@b", "c@x"]) == (0, b"r\0" + OK)
    assert tcpto_table(tree)[:5] == bytes([127, 0, 0, 2, 0])


def test_refused_connection_clears_the_count(tree, world_tmp):
    write_record(tree, [127, 0, 0, 2], 3, time.time() - 97 * 64)
    route(tree, b":[127.0.0.2]:%d" % free_port("127.0.0.2"))
    assert remote(tree, world_tmp, ["x", "a@b", "c@x"]) == (0, NOCONN)
    assert tcpto_table(tree)[4] == 0


def test_qmail_tcpto_and_tcpok_errors(tree):
    (tree / "queue" / "lock" / "tcpto").unlink()
    p = subprocess.run([program("qmail-tcpto")], env=qenv(tree), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert (p.returncode, p.stdout) == (111, b"fatal: unable to open tcpto: file does not exist\n")
    p = subprocess.run([program("qmail-tcpok")], env=qenv(tree), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 111
    assert p.stderr == b"qmail-tcpok: fatal: unable to write %s/queue/lock/tcpto: file does not exist\n" % (
        str(tree).encode())


def silent_or_chatty_server(payload):
    """A listener on 127.0.0.7 that accepts one connection, sends payload (maybe nothing) and holds it open."""
    import threading
    server = socket.socket()
    server.bind(("127.0.0.7", 0))
    server.listen(1)
    held = []

    def serve():
        conn, _ = server.accept()
        held.append(conn)
        try:
            conn.sendall(payload)
        except OSError:
            pass
    threading.Thread(target=serve, daemon=True).start()
    return server, held


@pytest.mark.parametrize("payload", [b"", b"220-" + b"x" * 70000, b"220-x\r\n" * 300 + b"220 x\r\n"])
def test_silent_and_endless_servers_count_as_dropped(tree, world_tmp, payload):
    """A server that never greets (timeoutremote) or greets without end (our reply bounds): the connection died;
    it connected, so nothing goes into the timeout table."""
    server, held = silent_or_chatty_server(payload)
    (tree / "control" / "timeoutremote").write_bytes(b"1\n")
    route(tree, b":[127.0.0.7]:%d" % server.getsockname()[1])
    start = time.time()
    assert remote(tree, world_tmp, ["x", "a@b", "c@x"]) == (
        0, b"ZConnected to 127.0.0.7 but connection died. (#4.4.2)\n\0")
    assert time.time() - start < 10
    assert tcpto_table(tree) == bytes(1024)
    server.close()
    for c in held:
        c.close()
