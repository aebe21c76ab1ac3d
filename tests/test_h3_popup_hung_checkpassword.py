"""qmail-popup and a checkpassword program that hangs (docs/qmail-popup.8.md, Hand-over): under tcpserver and
qmail-tcpserver, with and without STLS, a stand-in that never answers (and has a child of its own) is killed
with its process group CHECKPASSWORDTIMEOUT seconds after it started, the client is told `-ERR unable to
authorize in time` and then sees the connection end, the log says why, and a client that left frees its
tcpserver slot at the bound; a session that has begun (qmail-pop3d said `+OK`) outlives the bound."""

import os
import poplib
import signal
import socket
import ssl
import time

import pytest

from conftest import program, qenv, rest_until_eof, tcpserver, wait_until
from mailsystem import alive
from test_pop3 import MESSAGES, PASSWORD, pop  # noqa: F401  (pop is a fixture)
from test_pop3_tls import cert, client_context  # noqa: F401  (cert is a fixture)
from pyqmail.lib.pop3 import popup

BOUND = 2  # seconds: CHECKPASSWORDTIMEOUT for these tests
ERR = b"-ERR unable to authorize in time\r\n"
HANG = """#!/bin/sh
# a checkpassword program stuck (say, on its password database), with a child of its own
echo $$ >> "$HANG_PIDS"
sleep 600 &
echo $! >> "$HANG_PIDS"
wait
"""


@pytest.fixture
def hang(world_tmp):
    """The stand-in's path and the file where it notes its pid and its child's; both are killed by pid at the end
    if still there."""
    path = world_tmp / "hang-checkpassword"
    path.write_text(HANG)
    os.chmod(path, 0o755)
    pids = world_tmp / "hang.pids"
    pids.write_text("")
    os.chmod(pids, 0o666)
    yield path, pids
    for pid in started(pids):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def started(pids):
    return [int(p) for p in pids.read_text().split()]


def serve(procs, pop, checker, server="tcpserver", options=(), pids=None):  # noqa: F811
    """The POP3 chain with checker as the checkpassword program and CHECKPASSWORDTIMEOUT=BOUND; return the port."""
    env = qenv(pop.tree, CHECKPASSWORDTIMEOUT=BOUND, HANG_PIDS=pids or "/dev/null")
    return tcpserver(procs, pop.tree, [program("qmail-popup"), "pop.example", str(checker), program("qmail-pop3d"),
                                       "Maildir"], env=env, options=options,
                     server=program("qmail-tcpserver") if server == "qmail-tcpserver" else "tcpserver")


def log_of(pop, port):  # noqa: F811
    return (pop.tree / ("tcpserver-%d.log" % port)).read_text(errors="replace")


def login(f, send):
    """Greeting, USER, PASS (the hand-over)."""
    assert f.readline().startswith(b"+OK <")
    send(b"USER alice\r\n")
    assert f.readline() == b"+OK \r\n"
    send(b"PASS %s\r\n" % PASSWORD)


def gone(pids):
    """The stand-in and its child ran and are gone."""
    return len(started(pids)) == 2 and not any(alive(p) for p in started(pids))


@pytest.mark.parametrize("server", ["tcpserver", "qmail-tcpserver"])
def test_a_hung_checkpassword_is_killed_with_its_child_and_the_client_told(procs, pop, hang, server):  # noqa: F811
    path, pids = hang
    port = serve(procs, pop, path, server, pids=pids)
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND + 20) as s:
        f = s.makefile("rb")
        start = time.monotonic()  # before PASS: qmail-popup's clock starts after it
        login(f, s.sendall)
        wait_until(lambda: len(started(pids)) == 2, what="the stand-in and its child")
        assert f.readline() == ERR  # before: no reply, for ever
        assert time.monotonic() - start >= BOUND
        # its child held the socket too: only the group's death ends the connection
        assert rest_until_eof(s) == (b"", True)
    wait_until(lambda: gone(pids), what="the stand-in and its child killed")
    wait_until(lambda: "qmail-popup: killed %s: nothing said to the client within %d seconds" % (path, BOUND)
               in log_of(pop, port), what="the log line")
    assert sorted(os.listdir(pop.maildir / "new")) == sorted(pop.names)


def test_a_client_that_left_frees_its_slot_at_the_bound(procs, pop, hang):  # noqa: F811
    path, pids = hang
    port = serve(procs, pop, path, options=["-c", "1"], pids=pids)  # one connection at a time
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND + 20) as s:
        login(s.makefile("rb"), s.sendall)
        wait_until(lambda: len(started(pids)) == 2, what="the stand-in and its child")
    # the first client has gone; the next waits for its slot, which the stand-in held for ever before
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND + 20) as s:
        assert s.makefile("rb").readline().startswith(b"+OK <")
    wait_until(lambda: gone(pids), what="the stand-in and its child killed")
    log = log_of(pop, port)
    assert "qmail-popup: killed %s: nothing said to the client within %d seconds" % (path, BOUND) in log
    assert "internal error" not in log
    assert sorted(os.listdir(pop.maildir / "new")) == sorted(pop.names)


def test_a_hung_checkpassword_after_stls(procs, cert, hang):  # noqa: F811
    path, pids = hang
    port = serve(procs, cert, path, pids=pids)
    raw = socket.create_connection(("127.0.0.1", port), timeout=BOUND + 20)
    f = raw.makefile("rb")
    assert f.readline().startswith(b"+OK <")
    raw.sendall(b"STLS\r\n")
    assert f.readline() == b"+OK Begin TLS negotiation\r\n"
    t = client_context().wrap_socket(raw)
    try:
        tf = t.makefile("rb")
        t.sendall(b"USER alice\r\n")
        assert tf.readline() == b"+OK \r\n"
        start = time.monotonic()
        t.sendall(b"PASS %s\r\n" % PASSWORD)
        assert tf.readline() == ERR  # before: the relay waited 1200 s of silence, then the child for ever
        assert time.monotonic() - start >= BOUND
        try:
            assert tf.read() == b""
        except ssl.SSLEOFError:
            pass  # qmail-popup exits without a TLS close
    finally:
        t.close()
    wait_until(lambda: gone(pids), what="the stand-in and its child killed")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "stls"])
def test_a_session_that_has_begun_outlives_the_bound(procs, cert, hang, tls):  # noqa: F811
    path, pids = hang
    good = serve(procs, cert, program("qmail-checkpassword"))
    c = poplib.POP3("127.0.0.1", good, timeout=30)
    if tls:
        c.stls(client_context())
    c.user("alice")
    c.pass_(PASSWORD.decode())
    # a hung login started after this one, under the same bound, is killed: the bound has passed for ours too
    stuck = serve(procs, cert, path, pids=pids)
    with socket.create_connection(("127.0.0.1", stuck), timeout=BOUND + 20) as s:
        f = s.makefile("rb")
        login(f, s.sendall)
        assert f.readline() == ERR
    assert c.stat() == (len(MESSAGES), sum(map(len, MESSAGES)))
    assert c.retr(1)[1][0] == b"From: a@example"
    assert c.dele(1) == b"+OK "
    assert c.quit() == b"+OK "
    assert len(os.listdir(cert.maildir / "cur")) == len(MESSAGES) - 1


@pytest.mark.parametrize("value, bound", [("", 1200), ("0", 0), ("7", 7), ("x", 1200), ("-1", 1200),
                                          ("\N{SUPERSCRIPT TWO}", 1200), ("1234567890", 1200),
                                          ("999999999", 999999999)])
def test_checkpasswordtimeout_values(value, bound):
    assert popup.check_timeout({"CHECKPASSWORDTIMEOUT": value} if value else {}) == bound
