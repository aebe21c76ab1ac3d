"""qmail-qmqpd when the client goes away: an EOF or a reset (SO_LINGER 0) before the last byte of the request
ends the session with no reply, no `D` logged and nothing queued (qmail's qmail-qmqpd exits at once, Postfix's
qmqpd logs a lost connection); a reset after the last byte, before the reply is read, leaves the message queued
and the log says so. Under qmail-tcpserver (in-process workers) and ucspi-tcp's tcpserver (a fresh process)."""

import re
import socket
import struct

import pytest

from conftest import need, program, qenv, queued, rest_until_eof, tcpserver, wait_until
from pyqmail.lib.qmqp.qmqp import encode_request

MESSAGE = b"Subject: reset\n\n" + b"x" * 3000 + b"\n"  # in the socket buffers at once: the server reads it all
REQUEST = encode_request(MESSAGE, b"a@b", [b"c@d", b"e@f"])
HEAD = REQUEST.index(b":") + 1  # the outer length field, colon included
BODY = REQUEST.index(b"Subject")
AFTER_SENDER = REQUEST.index(b"3:c@d,")
AFTER_FIRST_RCPT = REQUEST.index(b"3:e@f,")

CUTS = {  # where the client stops: (bytes sent, what qmail-qmqpd was reading)
    "length prefix": (REQUEST[:3], "receiving QMQP packet header"),
    "message length prefix": (REQUEST[:HEAD + 2], "receiving message content"),
    "message": (REQUEST[:BODY + 1500], "receiving message content"),
    "sender": (REQUEST[:AFTER_SENDER - 2], "receiving sender address"),
    "between recipients": (REQUEST[:AFTER_FIRST_RCPT], "receiving recipient address"),
    "recipient length prefix": (REQUEST[:AFTER_FIRST_RCPT + 1], "receiving recipient address"),
    "trailer": (REQUEST[:-1], "receiving QMQP packet trailer"),
}
SERVERS = ["qmail-tcpserver", "tcpserver"]
WHO = "unknown[127.0.0.1]"


@pytest.fixture
def qtree(tree):
    """A tree whose qmail-qmqpd answers without the error delay."""
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    return tree


class Server:
    """qmail-qmqpd under a tcpserver on loopback, and its log after wait_port's probe session."""

    def __init__(self, procs, tree, server, **env):
        if server == "tcpserver":
            need("tcpserver")
        else:
            server = program(server)
        self.port = tcpserver(procs, tree, [program("qmail-qmqpd")], options=("-v",), server=server,
                              env=qenv(tree, **env))
        self.log_path = tree / ("tcpserver-%d.log" % self.port)
        # wait_port's probe connection: its session must be over before ours starts
        wait_until(lambda: re.search(r"^tcpserver: end \d+ status", self.log_path.read_text(), re.M),
                   what="the probe's end")
        self.start = len(self.log_path.read_text())

    def log(self):
        """The log since the probe's session ended."""
        return self.log_path.read_text()[self.start:]

    def connect(self):
        """A connection to the server, once qmail-qmqpd has started on it."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        wait_until(lambda: "qmail-qmqpd: pid" in self.log(), what="qmail-qmqpd's connect line")
        return s

    def ended(self):
        """The log once the session's end line (tcpserver's `end PID status N`) is in it."""
        return wait_until(lambda: re.search(r"^tcpserver: end \d+ status \d+$", self.log(), re.M) and self.log(),
                          what="the end of the session")


def reset(sock):
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def assert_nothing_queued(tree):
    """No message made it into the queue, and none is half-made."""
    q = tree / "queue"
    assert queued(tree) == {}
    assert [f for d in ("intd", "pid") for f in (q / d).iterdir()] == []
    assert [f for f in (q / "mess").rglob("*") if f.is_file()] == []


@pytest.mark.interop
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("cut", list(CUTS))
@pytest.mark.parametrize("how", ["reset", "eof"])
def test_client_gone_before_the_last_byte_gets_no_reply_no_d_and_queues_nothing(procs, qtree, server, cut, how):
    sent, where = CUTS[cut]
    srv = Server(procs, qtree, server)
    s = srv.connect()
    s.sendall(sent)
    if how == "reset":
        reset(s)
    else:
        s.shutdown(socket.SHUT_WR)
        assert rest_until_eof(s) == (b"", True)  # no reply, and the server closes
        s.close()
    log = srv.ended()
    assert "qmail-qmqpd: pid" in log and "lost connection from %s while %s\n" % (WHO, where) in log, log
    assert "reply to" not in log and "queued" not in log and "internal error" not in log, log
    assert re.search(r"^tcpserver: end \d+ status 0$", log, re.M), log  # qmail-qmqpd's exit 0 on EOF, as qmail's
    assert_nothing_queued(qtree)


@pytest.mark.interop
@pytest.mark.parametrize("server", SERVERS)
def test_reset_in_the_middle_of_a_big_message_gets_no_reply_no_d_and_queues_nothing(procs, qtree, server):
    srv = Server(procs, qtree, server)
    s = srv.connect()
    s.sendall(encode_request(b"x" * 4000000 + b"\n", b"a@b", [b"c@d"])[:2000000])
    reset(s)  # what the kernel had not sent yet is dropped: the server sees the reset somewhere in the message
    log = srv.ended()
    assert "lost connection from %s while receiving message content\n" % WHO in log, log
    assert "reply to" not in log and "queued" not in log and "internal error" not in log, log
    assert re.search(r"^tcpserver: end \d+ status 0$", log, re.M), log
    assert_nothing_queued(qtree)


@pytest.mark.interop
@pytest.mark.parametrize("server", SERVERS)
def test_reset_after_the_last_byte_before_the_reply_queues_the_message_and_the_log_says_so(procs, qtree, world_tmp,
                                                                                          server):
    go = world_tmp / "go"
    held = world_tmp / "held-qmail-queue"  # the real qmail-queue, once the client has reset the connection
    held.write_text("#!/bin/sh\nwhile [ ! -e %s ]; do sleep 0.02; done\nexec %s\n" % (go, program("qmail-queue")))
    held.chmod(0o755)
    srv = Server(procs, qtree, server, QMAILQUEUE=str(held))
    s = srv.connect()
    s.sendall(REQUEST)
    reset(s)  # after the last byte, before any reply
    go.touch()
    log = srv.ended()
    [(mess, todo)] = queued(qtree).values()
    assert mess.endswith(MESSAGE) and todo.endswith(b"Fa@b\0Tc@d\0Te@f\0")
    assert re.search(r"^qmail-qmqpd: pid \d+: queued qp \d+ size %d rcpts 2 from %s$" % (len(MESSAGE), re.escape(WHO)),
                     log, re.M), log
    assert re.search(r"^qmail-qmqpd: pid \d+: lost connection from %s while sending reply: Kok \d+ qp \d+$"
                     % re.escape(WHO), log, re.M), log
    assert "reply to" not in log and "while receiving" not in log and "internal error" not in log, log
    assert re.search(r"^tcpserver: end \d+ status 0$", log, re.M), log
