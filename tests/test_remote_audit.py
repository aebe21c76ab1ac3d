"""An adversarial audit of outbound delivery: the installed qmail-remote against hostile loopback servers and a
tired administrator's control files, and qmail-rspawn's connection cache (see qmail-remote(8), qmail-rspawn(8)).

Servers are threads of this process (test_hardening_remote's Hostile) on a loopback address; nothing uses DNS.
"""

import os
import subprocess
import time

import pytest
from hypothesis import given, strategies as st

from conftest import program, qenv
from test_hardening_remote import HOST, deliver, dialogue, hostile, readline, reply  # noqa: F401
from test_qmail_remote import NOCONN, remote
from test_qmail_remote_dns import dns  # noqa: F401  (a fixture)
from test_spawners import Spawner, queue_message

from pyqmail.lib.remote import remoteconf, remoteroute, smtpclient

IP = HOST.encode()
DIED = b"ZConnected to %s but connection died. (#4.4.2)\n\0" % IP
OK = b"r\0K%s accepted message.\nRemote host said: 250 queued\n\0" % IP


def answering(table):
    """A plain SMTP server whose replies to the verbs in table (b"." the message) are table's bytes."""
    def script(server, conn):
        def answer(server, conn, verb):
            if verb in table:
                conn.sendall(table[verb])
            else:
                reply(server, conn, verb)
        dialogue(server, conn, answer)
    return script


def said(text):
    """The end of a report quoting the server."""
    return b".\nRemote host said: " + text + b"\n\0"


@pytest.mark.parametrize("table, out", [
    # 250 to DATA: the server is not reading a message; what it answers to the message's lines is no final reply
    ({b"DATA": b"250 ok\r\n"}, b"r\0Z%s failed on DATA command" % IP + said(b"250 ok")),
    # only 2xx after the final dot delivers: a 3xx or a code outside 2xx-5xx is not an acceptance
    ({b".": b"354 more\r\n"}, b"r\0Z%s failed after I sent the message" % IP + said(b"354 more")),
    ({b".": b"150 hm\r\n"}, b"r\0Z%s failed after I sent the message" % IP + said(b"150 hm")),
    ({b".": b"099 hm\r\n"}, b"r\0Z%s failed after I sent the message" % IP + said(b"099 hm")),
    # a code above 5xx is malformed: temporary, never a bounce
    ({b".": b"650 hm\r\n"}, b"r\0Z%s failed after I sent the message" % IP + said(b"650 hm")),
    ({b"RCPT": b"150 hm\r\n"}, b"s%s does not like recipient.\nRemote host said: 150 hm\n\0DGiving up on %s.\n\0"
     % (IP, IP)),
    ({b"MAIL": b"000 hm\r\n"}, b"ZConnected to %s but sender was rejected" % IP + said(b"000 hm")),
    ({b"MAIL": b"354 hm\r\n"}, b"ZConnected to %s but sender was rejected" % IP + said(b"354 hm")),
])
def test_a_step_succeeds_only_with_the_reply_class_it_asked_for(tree, world_tmp, hostile, table, out):
    hostile(answering(table), 2)
    got, _ = deliver(tree, world_tmp, 20)
    assert got == out


@given(st.binary(max_size=8))
def test_a_reply_code_is_2xx_to_5xx_or_400(line):
    code = smtpclient.reply_code(line)
    assert 200 <= code <= 599
    assert code == 400 or line[:3] == b"%d" % code


@given(st.integers(0, 999), st.sampled_from([2, 3]))
def test_a_step_is_a_success_only_in_its_class(code, success):
    got = smtpclient.step_code(code, success)
    assert got in (code, smtpclient.MALFORMED_CODE)
    assert (got < 400) == (code // 100 == success)


@given(st.lists(st.binary(max_size=20), max_size=6), st.binary(max_size=12))
def test_a_route_or_tls_line_reads_the_same_with_a_crlf(lines, host):
    crlf = [line + b"\r" for line in lines]
    assert remoteroute.parse_routes(crlf) == remoteroute.parse_routes([line.rstrip(b" \t\r") for line in lines])
    assert remoteconf.parse_tls_destinations(crlf) == remoteconf.parse_tls_destinations(
        [line.rstrip(b" \t\r") for line in lines])


@pytest.mark.parametrize("table", [
    # a 250 sent with the 354, before the message: the 554 to the message would be read as the next reply
    {b"DATA": b"354 go\r\n250 ok\r\n", b".": b"554 no\r\n"},
    # a doubled reply to MAIL shifts every later reply by one: RCPT's would be read for DATA, DATA's for the dot
    {b"MAIL": b"250 ok\r\n250 ok\r\n", b"RCPT": b"550 unknown\r\n", b"DATA": b"354 go\r\n", b".": b"554 no\r\n"},
    {b"GREETING": b"220 hostile\r\n554 go away\r\n"},
])
def test_a_reply_sent_out_of_turn_ends_the_session(tree, world_tmp, hostile, table):
    hostile(answering(table), 2)
    got, _ = deliver(tree, world_tmp, 20)
    assert got in (DIED, b"r\0" + DIED)


@pytest.mark.parametrize("value", [b"2147483648", b"4294967296", b"9" * 30, b"18446744073709551617"])
def test_huge_timeouts_are_capped_not_a_crash_or_an_instant_timeout(tree, world_tmp, hostile, value):
    """A timeout whose milliseconds wrap around in poll(2) timed out at once; one beyond 2^63 ns crashed."""
    hostile(answering({}), 2)
    (tree / "control" / "timeoutremote").write_bytes(value + b"\n")
    (tree / "control" / "timeoutconnect").write_bytes(value + b"\n")
    got, _ = deliver(tree, world_tmp, 20)
    assert got == OK


def deliver_through_rspawn(procs, tree, count):
    """Start qmail-rspawn, deliver count messages to x.example one after another; return their reports."""
    s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))
    reports = []
    for i in range(count):
        messid, _ = queue_message(tree, rcpt=b"u%d@x.example" % i)
        s.send(i, messid, b"s@example.org", b"u%d@x.example" % i)
        reports.append(s.report())
    assert s.finish()[0] == 0
    return reports


@pytest.mark.parametrize("value", [b"10000000000", b"9" * 40])
def test_a_huge_connection_cache_time_does_not_crash_qmail_rspawn(procs, tree, hostile, value):
    """The cache's idle time went into select() as is: beyond 2^63 ns it raised OverflowError in qmail-rspawn."""
    hostile(answering({}), 2)
    (tree / "control" / "smtpconnectioncache").write_bytes(value + b"\n")
    accepted = b"K%s accepted message.\nRemote host said: 250 queued\n" % IP
    assert deliver_through_rspawn(procs, tree, 2) == [(0, accepted), (1, accepted)]


def tcpto_record(ip, count, when):
    """One tcpto record."""
    return bytes(ip) + bytes([count, 0, 0, 0]) + int(when).to_bytes(4, "little") + bytes(4)


def plant(tree, world_tmp, how):
    """Put a victim file (a tcpto table naming HOST, with 1 recent timeout) where queue/lock/tcpto points by a
    symbolic link or is one of two hard links; return the victim's path."""
    victim = tree / "queue" / "victim"  # a file of the same file system, so a hard link is possible
    victim.write_bytes(tcpto_record([127, 0, 0, 13], 1, time.time() - 10) + bytes(1008))
    table = tree / "queue" / "lock" / "tcpto"
    table.unlink()
    if how == "symlink":
        table.symlink_to(victim)
    else:
        os.link(victim, table)
    return victim


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_qmail_remote_never_writes_through_a_planted_tcpto(tree, world_tmp, hostile, how):
    hostile(answering({}), 2)
    victim = plant(tree, world_tmp, how)
    before = victim.read_bytes()
    got, _ = deliver(tree, world_tmp, 20)
    assert got == OK
    assert victim.read_bytes() == before  # a success would have zeroed the record's count through the link


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_qmail_rspawn_never_clears_a_planted_tcpto(procs, tree, world_tmp, how):
    victim = plant(tree, world_tmp, how)
    before = victim.read_bytes()
    s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))  # it clears the table before it says its limit
    assert s.finish()[0] == 0
    assert victim.read_bytes() == before


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_qmail_tcpok_run_by_root_never_clears_a_planted_tcpto(tree, world_tmp, how):
    victim = plant(tree, world_tmp, how)
    before = victim.read_bytes()
    p = subprocess.run([program("qmail-tcpok")], env=qenv(tree), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert victim.read_bytes() == before
    assert p.returncode == 111 and p.stderr.startswith(b"qmail-tcpok: fatal: unable to write ")


def test_a_tcpto_table_that_is_a_fifo_is_not_used(tree, world_tmp, hostile):
    hostile(answering({}), 2)
    table = tree / "queue" / "lock" / "tcpto"
    table.unlink()
    os.mkfifo(table)
    got, _ = deliver(tree, world_tmp, 20)
    assert got == OK


def test_tls_required_by_a_crlf_tlsdestinations_line_is_still_required(tree, world_tmp, hostile):
    """A tlsdestinations file saved with CRLF line ends: its key `x.example\r` matched no domain, and the message
    went in plain text to a server without STARTTLS."""
    hostile(answering({}), 2)
    (tree / "control" / "tlsdestinations").write_bytes(b"x.example\r\n")
    got, _ = deliver(tree, world_tmp, 20)
    assert got.startswith(b"ZConnected to %s but it does not offer STARTTLS" % IP), got


def test_a_crlf_smtproutes_line_routes_as_without_its_cr(tree, world_tmp, dns):
    """`x.example:relay.test\r`: the relay `relay.test\r` is no name, and every message was deferred until it
    bounced (qmail too). Without the CR the relay's address is found; nothing listens on its port 25."""
    dns("--address=/relay.test/127.0.0.61")
    (tree / "control" / "smtproutes").write_bytes(b"x.example:relay.test\r\n")
    assert remote(tree, world_tmp, ["x.example", "a@b", "c@x.example"]) == (0, NOCONN)


def test_a_crlf_helohost_is_sent_without_its_cr(tree, world_tmp, hostile):
    seen = []

    def script(server, conn):
        conn.sendall(b"220 hostile\r\n")
        line = readline(conn)
        seen.append(line)
        conn.sendall(b"250 ok\r\n")
        dialogue(server, conn, lambda server, conn, verb: reply(server, conn, verb) if verb != b"GREETING" else None)
    hostile(script, 2)
    (tree / "control" / "helohost").write_bytes(b"mx.example\r\n")
    got, _ = deliver(tree, world_tmp, 20)
    assert (seen, got) == ([b"EHLO mx.example\r\n"], OK)


def test_a_domain_spelt_like_a_relay_key_is_not_lent_the_relays_connection(procs, tree, hostile, dns):
    """Connections of a relay were cached under `relay:port`, of an MX-routed domain under the domain: a
    recipient domain spelt `[ip]:port` was lent the relay's connection (authenticated, maybe) and delivered over
    it, where without the cache it is looked up as a name and goes nowhere."""
    rcpts = []

    def script(server, conn):
        def answer(server, conn, verb):
            reply(server, conn, verb)
        conn.sendall(b"220 hostile\r\n")
        while True:
            line = readline(conn)
            if line.startswith(b"RCPT"):
                rcpts.append(line)
            if not line or line.startswith(b"QUIT"):
                return
            if line.startswith(b"DATA"):
                conn.sendall(b"354 go\r\n")
                while readline(conn) not in (b".\r\n", b""):
                    pass
                conn.sendall(b"250 queued\r\n")
            else:
                conn.sendall(b"250 ok\r\n")
    server = hostile(script, 2)
    dns()
    relay = b"[%s]:%d" % (IP, server.port)
    (tree / "control" / "smtproutes").write_bytes(b"corp.example:%s\n" % relay)
    (tree / "control" / "smtpconnectioncache").write_bytes(b"30\n")
    s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))
    try:
        for i, rcpt in enumerate([b"u@corp.example", b"v@" + relay]):
            messid, _ = queue_message(tree, rcpt=rcpt)
            s.send(i, messid, b"s@example.org", rcpt)
            delnum, report = s.report()
            assert report.startswith(b"K") == (i == 0), report
    finally:
        assert s.finish()[0] == 0
    assert rcpts == [b"RCPT TO:<u@corp.example>\r\n"]


class Closed(Exception):
    """The script closes the connection."""


def closing_at(when):
    """A server that closes the connection right after its 354 (`DATA`) or after reading the final dot (`.`)."""
    def script(server, conn):
        def answer(server, conn, verb):
            if verb == b"DATA" and when == b"DATA":
                conn.sendall(b"354 go\r\n")
                conn.close()
                raise Closed()
            if verb == b"." and when == b".":
                conn.close()
                raise Closed()
            reply(server, conn, verb)
        try:
            dialogue(server, conn, answer)
        except Closed:
            pass
    return script


DIED_DUP = DIED.replace(b"(#", b"Possible duplicate! (#")


@pytest.mark.parametrize("when, size, out", [
    # closed after 354: whether a write fails before the final dot is sent depends on the kernel's buffers
    (b"DATA", 10, (b"r\0" + DIED, b"r\0" + DIED_DUP)),
    (b"DATA", 1 << 20, (b"r\0" + DIED, b"r\0" + DIED_DUP)),
    (b".", 10, (b"r\0" + DIED_DUP,)),
])
def test_a_server_closing_in_data_is_a_lost_connection_never_a_delivery(tree, world_tmp, hostile, when, size, out):
    hostile(closing_at(when), 2)
    got, _ = deliver(tree, world_tmp, 20, b"Subject: x\n\n" + b"y" * size + b"\n")
    assert got in out


def cut_handshake(server, conn):
    """Offer STARTTLS, say 220 to it, read 5 bytes of the ClientHello and close (a reset: the rest is unread);
    a connection that does not ask for STARTTLS is served in plain text."""
    conn.sendall(b"220 hostile\r\n")
    readline(conn)
    conn.sendall(b"250-hostile\r\n250 STARTTLS\r\n")
    line = readline(conn)
    if line.startswith(b"STARTTLS"):
        conn.sendall(b"220 go ahead\r\n")
        conn.recv(5)
        conn.close()
        return
    conn.sendall(b"250 ok\r\n")  # to MAIL
    dialogue(server, conn, lambda server, conn, verb: None if verb == b"GREETING" else reply(server, conn, verb))


def test_a_tls_handshake_cut_by_a_reset_is_retried_in_plain_text(tree, world_tmp, hostile):
    """An opportunistic handshake that failed with a TLS error was retried in plain text, one cut by a reset (a
    middlebox's, a server's) ended as a dead connection: the message waited for ever for a server qmail reaches."""
    hostile(cut_handshake, 2)
    got, _ = deliver(tree, world_tmp, 20)
    assert got == OK


def test_a_required_tls_handshake_cut_by_a_reset_is_temporary(tree, world_tmp, hostile):
    hostile(cut_handshake, 2)
    (tree / "control" / "tlsdestinations").write_bytes(b"x.example\n")
    got, _ = deliver(tree, world_tmp, 20)
    assert got.startswith(b"ZConnected to %s but TLS failed: " % IP) and b"reset" in got, got


def test_a_crlf_remoteauth_line_authenticates_without_its_cr(tree, world_tmp):
    import base64
    from test_qmail_remote_tls import Scripted, auth_file
    s = Scripted([b"AUTH PLAIN"], auth=[b"235 ok"])
    (tree / "control" / "smtproutes").write_bytes(b"example.com:[127.0.0.6]:%d\r\n" % s.port)
    auth_file(tree, b"[127.0.0.6]:joe:pw\r\n")
    assert remote(tree, world_tmp, ["example.com", "a@b", "c@example.com"])[1].startswith(b"r\0K127.0.0.6 ")
    s.thread.join(10)
    assert s.commands[1] == b"AUTH PLAIN " + base64.b64encode(b"\0joe\0pw") + b"\r\n"


def test_qmail_send_defers_a_message_whose_data_got_250_and_keeps_it(procs, world_tmp):
    """The whole system: a server answering 250 to DATA (then 250 to every line of the message) no longer gets
    the message logged as delivered and removed from the queue."""
    from conftest import queue_message as queue_with
    from mailsystem import MailSystem, make_system_tree
    from test_hardening_remote import Hostile
    qtree = make_system_tree(world_tmp / "sys")
    server = Hostile(answering({b"DATA": b"250 ok\r\n"}))
    try:
        (qtree / "control" / "smtproutes").write_bytes(b":[%s]:%d\n" % (IP, server.port))
        assert queue_with(qtree, b"Subject: x\n\nbody\n", b"Fs@test.example\0Tc@x.example\0\0") == 0
        system = MailSystem(procs, qtree)
        log = system.wait_log(b"delivery 1: deferral: %s_failed_on_DATA_command./Remote_host_said:_250_ok/" % IP)
        assert system.stop() == 0
    finally:
        server.stop()
    assert b"success" not in log
    assert any(files for _, _, files in os.walk(qtree / "queue" / "remote"))  # still to be delivered


def test_a_route_changed_between_two_deliveries_is_followed_not_the_cached_connection(procs, tree):
    """x.example routed to server A, one delivery (its connection cached), then routed to B: the next delivery
    goes to B; A's connection carries nothing more."""
    from test_hardening_remote import Hostile
    seen = {"a": [], "b": []}

    def recording(name):
        def script(server, conn):
            def answer(server, conn, verb):
                seen[name].append(verb)
                reply(server, conn, verb)
            dialogue(server, conn, answer)
        return script
    a, b = Hostile(recording("a")), Hostile(recording("b"))
    try:
        (tree / "control" / "smtpconnectioncache").write_bytes(b"30\n")
        routes = tree / "control" / "smtproutes"
        routes.write_bytes(b"x.example:[%s]:%d\n" % (IP, a.port))
        s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))
        try:
            for i in range(2):
                messid, _ = queue_message(tree, rcpt=b"u%d@x.example" % i)
                s.send(i, messid, b"s@example.org", b"u%d@x.example" % i)
                assert s.report()[1].startswith(b"K127.0.0.13 accepted message.")
                routes.write_bytes(b"x.example:[%s]:%d\n" % (IP, b.port))
        finally:
            assert s.finish()[0] == 0
    finally:
        a.stop()
        b.stop()
    assert seen["a"].count(b"MAIL") == 1 and seen["b"].count(b"MAIL") == 1
