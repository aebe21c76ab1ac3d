"""qmail-qmqpc as a real process against loopback QMQP servers: scripted ones and Postfix's qmqp-sink."""

import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, need, program, qenv, wait_port
from pyqmail.lib.queue import envelope
from pyqmail.lib.util import netstring

MESSAGE = b"Subject: test\n\nhello\n"
SENDER = b"a@example.org"
RECIPIENTS = [b"c@example.net", b"d@example.net"]


def qmqp_request(message, sender, recipients):
    """The exact bytes a QMQP client must send (qmail-qmqpc(8))."""
    inner = netstring.encode(message) + netstring.encode(sender)
    inner += b"".join(netstring.encode(r) for r in recipients)
    return netstring.encode(inner)


def read_request(conn):
    """Read one QMQP request (one netstring) from conn; return its bytes, or what came before EOF."""
    data = b""
    while b":" not in data:
        chunk = conn.recv(100)
        if not chunk:
            return data
        data += chunk
    length = int(data.split(b":", 1)[0])
    total = len(data.split(b":", 1)[0]) + 1 + length + 1
    while len(data) < total:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class ScriptedServer:
    """A loopback QMQP server thread: per connection it reads the request and answers `reply`.

    reply=None closes right after accepting; reply="silent" reads the request and never answers.
    """

    def __init__(self, reply, host="127.0.0.1"):
        self.reply = reply
        self.requests = []
        self.connections = 0
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.bind((host, 0))
        self.sock.listen(5)
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def line(self):
        """This server as a qmqpservers line."""
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else "%s:%d" % (self.host, self.port)

    def serve(self):
        """Answer connections until stopped."""
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(10)
                if self.reply is None:
                    continue
                self.requests.append(read_request(conn))
                if self.reply == "silent":
                    self.stopping.wait(15)
                    continue
                conn.sendall(self.reply)

    def stop(self):
        """Stop the thread and close the listening socket."""
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def servers():
    """Start scripted servers that are stopped when the test ends."""
    started = []

    def start(reply, host="127.0.0.1"):
        """Start one scripted server."""
        server = ScriptedServer(reply, host)
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


@pytest.fixture
def home(world_tmp):
    """A minimal tree for qmail-qmqpc: it reads only control/qmqpservers."""
    (world_tmp / "control").mkdir()
    return world_tmp


def set_servers(home, *lines):
    """Write control/qmqpservers."""
    (home / "control" / "qmqpservers").write_text("".join(line + "\n" for line in lines))


def qmqpc(home, message=MESSAGE, env_bytes=None, extra_env=None, fd6=None, timeout=30):
    """Run the installed qmail-qmqpc with message on fd 0, an envelope on fd 1, fd6 on 6; return its exit code."""
    if env_bytes is None:
        env_bytes = envelope.encode(SENDER, RECIPIENTS)
    msg_r, msg_w = os.pipe()
    env_r, env_w = os.pipe()
    # close_fds=False passes only inheritable fds: stdio and the fd 6 that dup2 makes in the child
    p = subprocess.Popen([program("qmail-qmqpc")], stdin=msg_r, stdout=env_r, stderr=subprocess.PIPE,
                         env=qenv(home, **(extra_env or {})), close_fds=False,
                         preexec_fn=None if fd6 is None else lambda: os.dup2(fd6, 6))
    os.close(msg_r)
    os.close(env_r)

    def feed(fd, data):
        """Write data to fd and close it, ignoring a reader that left early."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BrokenPipeError:
            pass
        os.close(fd)
    writer = threading.Thread(target=lambda: (feed(msg_w, message), feed(env_w, env_bytes)))
    writer.start()
    code = p.wait(timeout)
    writer.join(5)
    assert p.stderr.read() == b"", "qmail-qmqpc must not write diagnostics (fd 2 may be a client's socket)"
    p.stderr.close()
    return code


def unused_port():
    """A loopback port nothing listens on (connect → refused)."""
    return free_port("127.0.0.1")


@pytest.mark.parametrize("reply,code", [
    (b"3:KOk,", 0), (b"27:Kok 1700000000 qp 4242,", 0),
    (b"18:Zsorry, try later,", 71), (b"11:Dno thanks,", 31),
    (b"\r\njunk 12:Dpermanent!,", 31),  # qmail skips everything before the first K, Z or D
])
def test_verdict_letter_sets_exit_code_and_request_is_exact(home, servers, reply, code):
    server = servers(reply)
    set_servers(home, server.line())
    assert qmqpc(home) == code
    assert server.requests == [qmqp_request(MESSAGE, SENDER, RECIPIENTS)]


def test_reply_without_verdict_letter_is_communication_failure(home, servers):
    set_servers(home, servers(b"5:hello,").line())
    assert qmqpc(home) == 74


def test_empty_sender_and_no_recipients_are_sent_as_given(home, servers):
    server = servers(b"3:Kok,")
    set_servers(home, server.line())
    assert qmqpc(home, message=b"", env_bytes=b"F\0\0") == 0
    assert server.requests == [b"6:0:,0:,,"]


def test_against_postfix_qmqp_sink(home, procs):
    need("qmqp-sink")
    port = free_port()
    procs.start(["qmqp-sink", "127.0.0.1:%d" % port, "5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port("127.0.0.1", port)
    set_servers(home, "127.0.0.1:%d" % port)
    assert qmqpc(home) == 0
    assert qmqpc(home, message=b"x" * 3_000_000) == 0


def test_against_postfix_qmqp_sink_over_ipv6(home, procs):
    need("qmqp-sink")
    port = free_port("::1")
    procs.start(["qmqp-sink", "[::1]:%d" % port, "5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port("::1", port)
    set_servers(home, "[::1]:%d" % port)
    assert qmqpc(home) == 0


def test_ipv6_scripted_server_gets_exact_request(home, servers):
    server = servers(b"3:Kok,", host="::1")
    set_servers(home, "# hub over IPv6", server.line())
    assert qmqpc(home) == 0
    assert server.requests == [qmqp_request(MESSAGE, SENDER, RECIPIENTS)]


def test_large_message_is_spooled_and_sent_intact(home, servers):
    server = servers(b"3:Kok,")
    set_servers(home, server.line())
    message = bytes(range(256)) * 12_000 + b"\n"  # ~3 MB: beyond the in-memory spool
    assert qmqpc(home, message=message) == 0
    assert server.requests == [qmqp_request(message, SENDER, RECIPIENTS)]


def test_failover_from_refused_and_skipped_lines_to_live_server(home, servers):
    server = servers(b"3:Kok,")
    set_servers(home, "hub.example.org", "127.0.0.1:%d" % unused_port(), "999.1.1.1", server.line())
    assert qmqpc(home) == 0
    assert len(server.requests) == 1


def test_all_servers_refuse_gives_73(home):
    set_servers(home, "127.0.0.1:%d" % unused_port(), "127.0.0.1:%d" % unused_port())
    assert qmqpc(home) == 73


def test_no_failover_after_the_connection_is_made(home, servers):
    closer, live = servers(None), servers(b"3:Kok,")
    set_servers(home, closer.line(), live.line())
    assert qmqpc(home) == 74
    assert closer.connections == 1
    assert live.connections == 0


def test_reply_timeout_is_communication_failure(home, servers):
    silent = servers("silent")
    set_servers(home, silent.line())
    start = time.monotonic()
    assert qmqpc(home, extra_env={"QMQPC_TIMEOUTREMOTE": "1"}) == 74
    assert time.monotonic() - start < 5
    assert silent.requests == [qmqp_request(MESSAGE, SENDER, RECIPIENTS)]


@pytest.fixture
def blackhole():
    """A loopback listener whose accept queue is full: new connections hang in SYN_SENT."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    import select  # the first one connected (writable) fills the queue of a listen(0): the rest wait in SYN_SENT
    assert select.select([], fillers[:1], [], 30)[1], "the backlog never filled"
    yield "127.0.0.1:%d" % port
    for s in fillers + [sock]:
        s.close()


def test_connect_timeout_remembers_72_then_fails_over(home, servers, blackhole):
    set_servers(home, blackhole)
    start = time.monotonic()
    assert qmqpc(home, extra_env={"QMQPC_TIMEOUTCONNECT": "0.5"}) == 72
    assert time.monotonic() - start < 5
    live = servers(b"3:Kok,")
    set_servers(home, blackhole, live.line())
    assert qmqpc(home, extra_env={"QMQPC_TIMEOUTCONNECT": "0.5"}) == 0
    set_servers(home, blackhole, "127.0.0.1:%d" % unused_port())
    assert qmqpc(home, extra_env={"QMQPC_TIMEOUTCONNECT": "0.5"}) == 73  # the last failure counts


def test_default_connect_timeout_is_ten_seconds(home, blackhole):
    set_servers(home, blackhole)
    start = time.monotonic()
    assert qmqpc(home) == 72
    assert 9.5 < time.monotonic() - start < 13


@pytest.mark.parametrize("contents", [None, "", "# only a comment\n\nmail.example.org\n1.2.3\n"])
def test_no_usable_server_gives_55(home, contents):
    if contents is not None:
        (home / "control" / "qmqpservers").write_text(contents)
    assert qmqpc(home) == 55


def test_unreadable_qmqpservers_gives_55(home):
    (home / "control" / "qmqpservers").mkdir()  # EISDIR even for root, unlike chmod 0
    assert qmqpc(home) == 55


def test_missing_home_gives_61(world_tmp):
    assert qmqpc(world_tmp / "nonexistent") == 61


@pytest.mark.parametrize("env_bytes,code", [
    (b"Xa@b\0Tc@d\0\0", 91),          # first record is not F
    (b"Fa@b\0Xc@d\0\0", 91),          # a record after F is not T
    (b"Fa@b\0Tc@d\0", 91),            # EOF before the final empty record
    (b"", 91),                        # no envelope at all
    (b"\0", 91),                      # empty record where F belongs
    (b"F" + b"a" * 1003 + b"\0\0", 11),  # beyond qmail-queue's address limit
])
def test_bad_envelope(home, servers, env_bytes, code):
    server = servers(b"3:Kok,")
    set_servers(home, server.line())
    assert qmqpc(home, env_bytes=env_bytes) == code
    assert server.connections == 0


def test_longest_address_is_accepted(home, servers):
    server = servers(b"3:Kok,")
    set_servers(home, server.line())
    rcpt = b"r" * 1002
    assert qmqpc(home, env_bytes=envelope.encode(b"", [rcpt])) == 0
    assert server.requests == [qmqp_request(MESSAGE, b"", [rcpt])]


def run_with_fd6(home, extra_env):
    """Run qmail-qmqpc with a pipe on fd 6; return (exit code, what it wrote there)."""
    err_r, err_w = os.pipe()
    try:
        code = qmqpc(home, extra_env=extra_env, fd6=err_w)
    finally:
        os.close(err_w)
    os.set_blocking(err_r, False)
    try:
        text = os.read(err_r, 1000)
    except BlockingIOError:
        text = b""
    os.close(err_r)
    return code, text


@pytest.mark.parametrize("reply,text", [
    (netstring.encode(b"Dno such user here (#5.1.1)"), b"Dno such user here (#5.1.1)"),
    (netstring.encode(b"Zdisk full\r\n250 ok (#4)"), b"Zdisk full??250 ok (#4)"),  # no CR LF into SMTP
    (netstring.encode(b"D" + b"x" * 400), b"D" + b"x" * 254),  # the caller's fd-6 limit is 255 bytes
])
def test_custom_error_extension_passes_hub_text_on_fd6(home, servers, reply, text):
    set_servers(home, servers(reply).line())
    assert run_with_fd6(home, {"QMQPC_CUSTOMERROR": "1"}) == (82, text)


def test_custom_error_with_malformed_reply_netstring_keeps_qmail_codes(home, servers):
    set_servers(home, servers(b"29:Dshort,").line())
    assert run_with_fd6(home, {"QMQPC_CUSTOMERROR": "1"}) == (31, b"")


def test_custom_error_is_off_by_default(home, servers):
    set_servers(home, servers(b"11:Dno thanks,").line())
    assert run_with_fd6(home, {}) == (31, b"")


def test_custom_error_without_fd6_keeps_qmail_codes(home, servers):
    set_servers(home, servers(b"11:Dno thanks,").line())
    assert qmqpc(home, extra_env={"QMQPC_CUSTOMERROR": "1"}) == 31


def test_custom_error_with_too_short_text_keeps_qmail_codes(home, servers):
    set_servers(home, servers(b"2:Zx,").line())
    assert run_with_fd6(home, {"QMQPC_CUSTOMERROR": "1"}) == (71, b"")
