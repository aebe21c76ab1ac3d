"""qmail-remote against hostile SMTP servers (issue 17, point 3): every reply and every session has a deadline.

Each server is a thread of this process on a loopback address, stopped when its test ends. timeoutremote is 1 s,
and a trickling server sends a byte every 0.1 s, so qmail's per-read timeout alone would never end the session.
"""

import socket
import ssl
import subprocess
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from conftest import need, program, qenv
from pyqmail.lib.remote import smtpclient
from pyqmail.lib.remote.remotesession import Connection, Dropped

HOST = "127.0.0.13"
PACE = 0.1  # seconds between two trickled bytes, far below timeoutremote
SLACK = 4.0  # seconds qmail-remote may need beyond its deadline (start-up, a loaded machine)
DIED = b"ZConnected to 127.0.0.13 but connection died. (#4.4.2)\n\0"
DIED_DUP = b"ZConnected to 127.0.0.13 but connection died. Possible duplicate! (#4.4.2)\n\0"
OK = b"K127.0.0.13 accepted message.\nRemote host said: 250 queued\n\0"


class Hostile:
    """A server on HOST running script(server, conn) for each connection in a thread; stop() ends them all."""

    def __init__(self, script):
        self.script = script
        self.stopping = threading.Event()
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(5)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.threads = [threading.Thread(target=self.accept, daemon=True)]
        self.threads[0].start()

    def accept(self):
        """Accept connections until stopped."""
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(30)
            self.conns.append(conn)
            thread = threading.Thread(target=self.run, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def run(self, conn):
        """Run the script on one connection; the client going away ends it."""
        try:
            self.script(self, conn)
        except (OSError, ValueError):
            pass

    def trickle(self, conn, data, then=b""):
        """Send data, then `then` over and over, one byte each PACE seconds, until stopped or the client leaves."""
        while True:
            for byte in data:
                if self.stopping.wait(PACE):
                    return
                conn.sendall(bytes([byte]))
            if not then:
                return
            data = then

    def pause(self, seconds):
        """Wait seconds (the server's own pace), or less if stopped."""
        self.stopping.wait(seconds)

    def stop(self):
        """End every connection and thread."""
        self.stopping.set()
        self.sock.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        for thread in self.threads:
            thread.join(5)


def readline(conn):
    """Read one line from the client, byte by byte (no buffer to lose when TLS starts); b"" at EOF."""
    line = b""
    while not line.endswith(b"\n") and len(line) < 100000:
        byte = conn.recv(1)
        if not byte:
            break
        line += byte
    return line


REPLY = {b"GREETING": b"220 hostile ESMTP\r\n", b"DATA": b"354 go\r\n", b".": b"250 queued\r\n"}


def reply(server, conn, verb):
    """Answer at once: the greeting, 354 to DATA, 250 to the rest."""
    conn.sendall(REPLY.get(verb, b"250 ok\r\n"))


def dialogue(server, conn, answer=reply):
    """Play a plain SMTP server; answer(server, conn, verb) speaks for the greeting, each command and the dot."""
    answer(server, conn, b"GREETING")
    while True:
        line = readline(conn)
        verb = line.split(b" ")[0].strip().upper()
        if not line or verb == b"QUIT":
            return
        answer(server, conn, verb)
        if verb == b"DATA":
            while readline(conn) not in (b".\r\n", b""):
                pass
            answer(server, conn, b".")


@pytest.fixture
def hostile(tree):
    """Start a Hostile server routed to for every domain, with control/timeoutremote `timeout`."""
    servers = []

    def start(script, timeout=1):
        server = Hostile(script)
        servers.append(server)
        (tree / "control" / "timeoutremote").write_bytes(b"%d\n" % timeout)
        (tree / "control" / "smtproutes").write_bytes(b":[%s]:%d\n" % (HOST.encode(), server.port))
        return server

    yield start
    for server in servers:
        server.stop()


def deliver(tree, world_tmp, limit, message=b"Subject: x\n\nbody\n"):
    """Run the installed qmail-remote (message in a file); return (stdout, seconds taken); fail after limit s."""
    path = world_tmp / "message"
    path.write_bytes(message)
    with open(path, "rb") as f:
        start = time.monotonic()
        p = subprocess.Popen([program("qmail-remote"), "x.example", "a@b", "c@x.example"], stdin=f,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=qenv(tree))
        try:
            out, err = p.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            pytest.fail("qmail-remote was still talking after %.1f s" % limit)
    took = time.monotonic() - start
    assert (p.returncode, err) == (0, b"")
    return out, took


def trickle_greeting(server, conn):
    """`220-` then an `x` a second, for ever."""
    server.trickle(conn, b"220-", then=b"x")


def trickle_ehlo(server, conn):
    """A multi-line EHLO reply without end, every byte trickled."""
    conn.sendall(b"220 hostile ESMTP\r\n")
    readline(conn)
    server.trickle(conn, b"250-hostile\r\n", then=b"250-x\r\n")


def slow_endless_lines(server, conn):
    """A multi-line greeting without end: whole lines, one each PACE seconds (the 200-line bound is far away)."""
    while not server.stopping.wait(PACE):
        conn.sendall(b"220-more\r\n")


def fast_endless_lines(server, conn):
    """A multi-line greeting without end, as fast as it goes: the bound on lines ends it."""
    while not server.stopping.is_set():
        conn.sendall(b"220-more\r\n" * 50)


def fast_endless_line(server, conn):
    """A greeting line without end, as fast as it goes: the bound on bytes ends it."""
    conn.sendall(b"220-")
    while not server.stopping.is_set():
        conn.sendall(b"x" * 4096)


def never_speaks(server, conn):
    """Accept, then say nothing."""
    server.stopping.wait(60)


def trickle_after_dot(server, conn):
    """Accept everything at once, then trickle the reply to the message's final dot."""
    def answer(server, conn, verb):
        if verb == b".":
            server.trickle(conn, b"250 ", then=b"x")
        else:
            reply(server, conn, verb)
    dialogue(server, conn, answer)


@pytest.mark.parametrize("script, timeout, out, least, most", [
    (trickle_greeting, 1, DIED, 1, 1 + SLACK),
    (trickle_ehlo, 1, DIED, 1, 1 + SLACK),
    (slow_endless_lines, 1, DIED, 1, 1 + SLACK),
    (never_speaks, 1, DIED, 1, 1 + SLACK),  # qmail's plain timeout, as before
    (fast_endless_lines, 10, DIED, 0, SLACK),  # the bounds end these long before timeoutremote
    (fast_endless_line, 10, DIED, 0, SLACK),
    (trickle_after_dot, 1, b"r\0" + DIED_DUP, 1, 1 + SLACK),
])
def test_hostile_server_ends_in_z_within_bounded_time(tree, world_tmp, hostile, script, timeout, out, least, most):
    hostile(script, timeout)
    got, took = deliver(tree, world_tmp, most + 5)
    assert got == out
    assert least <= took < most


def slow_replies(delay):
    """A server whose every reply comes after `delay` seconds: each within timeoutremote, but many of them."""
    def answer(server, conn, verb):
        server.pause(delay)
        reply(server, conn, verb)

    def script(server, conn):
        dialogue(server, conn, answer)
    return script


def test_session_deadline_ends_a_server_slow_at_every_step(tree, world_tmp, hostile):
    """Six replies of 0.7 s each take 4.2 s: over the session's 3 s (timeoutremote × (2 + 1 recipient))."""
    hostile(slow_replies(0.7))
    got, took = deliver(tree, world_tmp, 3 + SLACK + 5)
    assert got.endswith((DIED, DIED_DUP)) and b"\0K" not in got
    assert 3 <= took < 3 + SLACK


def test_message_size_extends_the_session_deadline(tree, world_tmp, hostile):
    """The same server, a 1000-byte message: 2 s more (500 bytes a second), so the 4.2 s session completes."""
    hostile(slow_replies(0.7))
    message = b"Subject: x\n\n" + b"y" * (1000 - 13) + b"\n"
    got, took = deliver(tree, world_tmp, 5 + SLACK + 5, message)
    assert got == b"r\0" + OK
    assert 4.2 <= took < 5 + SLACK


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate and key for the TLS servers."""
    need("openssl")
    from test_qmail_remote_tls import self_signed
    return self_signed(tmp_path_factory.mktemp("tls"), "hostile")


def starttls(conn, certificate):
    """Play the server up to STARTTLS and return the socket wrapped in TLS."""
    conn.sendall(b"220 hostile ESMTP\r\n")
    readline(conn)
    conn.sendall(b"250-hostile\r\n250 STARTTLS\r\n")
    readline(conn)
    conn.sendall(b"220 go ahead\r\n")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, certificate))
    return context.wrap_socket(conn, server_side=True)


def test_tls_replies_have_the_same_deadline(tree, world_tmp, hostile, certificate):
    """After STARTTLS, an EHLO reply trickled a TLS record per byte ends like a plain one."""
    def script(server, conn):
        tls = starttls(conn, certificate)
        readline(tls)
        server.trickle(tls, b"250-hostile\r\n", then=b"250-x\r\n")
    hostile(script)
    got, took = deliver(tree, world_tmp, 1 + SLACK + 5)
    assert got == DIED
    assert 1 <= took < 1 + SLACK


def test_trickled_tls_handshake_is_one_step(tree, world_tmp, hostile):
    """A handshake that never ends (a record header, then a byte each PACE s): a dead connection, no plain retry."""
    connections = []

    def script(server, conn):
        connections.append(conn)
        conn.sendall(b"220 hostile ESMTP\r\n")
        readline(conn)
        conn.sendall(b"250-hostile\r\n250 STARTTLS\r\n")
        readline(conn)
        conn.sendall(b"220 go ahead\r\n")
        server.trickle(conn, b"\x16\x03\x03\x40\x00", then=b"\x02")
    hostile(script)
    got, took = deliver(tree, world_tmp, 1 + SLACK + 5)
    assert got == DIED
    assert 1 <= took < 1 + SLACK
    assert len(connections) == 1


class Clock:
    """A fake monotonic clock."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeSocket:
    """Chunks that arrive after given delays; recv waits on the fake clock as a socket with a timeout would."""

    def __init__(self, clock, arrivals):
        self.clock = clock
        self.arrivals = list(arrivals)  # (seconds after the previous chunk, bytes)
        self.timeout = None

    def settimeout(self, timeout):
        self.timeout = timeout

    def recv(self, n):
        assert self.timeout is not None and self.timeout > 0
        if not self.arrivals:
            self.clock.now += self.timeout
            raise TimeoutError()
        delay, data = self.arrivals[0]
        if delay > self.timeout:
            self.arrivals[0] = (delay - self.timeout, data)
            self.clock.now += self.timeout
            raise TimeoutError()
        self.clock.now += delay
        self.arrivals.pop(0)
        return data


REPLIES = st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=4), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None, database=None)
@given(REPLIES, st.integers(1, 3), st.integers(1, 12))
def test_reply_and_session_deadlines(replies, timeout, budget):
    """Replies arrive in pieces (delays in quarter seconds): each is read iff it is complete within timeout of
    the wait's start and within the session's budget; otherwise Dropped, and never later than the deadline.
    The deadlines fall between quarter seconds: a piece arriving at the very deadline may go either way."""
    timeout, budget = timeout + 0.125, budget + 0.125
    clock = Clock()
    arrivals = []
    for pieces in replies:
        text = b"250-a\r\n" * (len(pieces) - 1) + b"250 b\r\n"
        cuts = [len(text) * i // len(pieces) for i in range(len(pieces) + 1)]
        arrivals += [(q / 4, text[cuts[i]:cuts[i + 1]]) for i, q in enumerate(pieces)]
    conn = Connection(FakeSocket(clock, arrivals), timeout, budget, clock=clock)
    now = 0.0
    for pieces in replies:
        done = now + sum(pieces) / 4
        if done > min(now + timeout, budget):
            with pytest.raises(Dropped):
                conn.reply()
            assert clock.now <= min(now + timeout, budget)
            return
        assert conn.reply().code == 250
        assert clock.now == done
        now = done


def test_session_budget_and_data_allowance():
    assert smtpclient.session_budget(1200, 1) == 3600
    assert smtpclient.session_budget(0, 3) == 5
    assert smtpclient.data_allowance(10_000_000) == 20000


def test_bytes_read_beyond_the_size_move_the_deadline():
    """A pipe has no size: each byte read adds its allowance once; a file's size counts up front."""
    clock = Clock()
    conn = Connection(FakeSocket(clock, []), 1, 3, clock=clock)
    conn.message_read(500)
    conn.message_read(1000)
    assert conn.deadline == 5
    sized = Connection(FakeSocket(clock, []), 1, 3, size=1000, clock=clock)
    sized.message_read(1000)
    assert sized.deadline == 5
