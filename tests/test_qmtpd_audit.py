"""An adversarial audit of qmail-qmtpd as installed: a client that pipelines packages and never reads a response."""

import socket
import subprocess

from conftest import program, qenv, queued


def ns(data):
    """Netstring (cr.yp.to/proto/netstrings.txt)."""
    return b"%d:%s," % (len(data), data)


def test_a_client_that_never_reads_is_timed_out_as_such_and_what_was_queued_stays(tree):
    """Defect: the responses went out in blocking writes of up to 64 KB once poll said the socket was writable,
    so a client that keeps the connection open and reads nothing held qmail-qmtpd in write() past
    timeoutqmtpd, until the session's hour was up; and a write timeout was logged `while receiving the
    message`. Each package read was queued before its responses were due; those stay queued (the client,
    unanswered, sends them again)."""
    (tree / "control" / "rcpthosts").unlink()
    (tree / "control" / "timeoutqmtpd").write_text("1\n")
    recipients = [b"r%d@x.example" % i for i in range(200)]  # 200 responses a package: 5 KB
    package = ns(b"\nhello\n") + ns(b"s@x.example") + ns(b"".join(ns(r) for r in recipients))
    ours, theirs = socket.socketpair()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # the responses fill it at once
    with ours:
        p = subprocess.Popen([program("qmail-qmtpd")], stdin=theirs, stdout=theirs, stderr=subprocess.PIPE,
                             env=qenv(tree, TCPREMOTEIP="127.0.0.1"))
        theirs.close()
        try:
            ours.sendall(package * 2)  # 10 KB of responses due, under the 64 KB written while input keeps coming
            code = p.wait(30)  # the connection stays open and unread meanwhile
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        log = p.stderr.read().decode()
    assert code == 111, log
    assert "timeout from unknown[127.0.0.1] while sending responses" in log, log
    assert "while receiving" not in log, log
    assert log.count(" queued qp ") == 2 and len(queued(tree)) == 2
