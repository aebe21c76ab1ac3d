"""qmail-smtpd in qmail-tcpserver's reused workers (issue 23): one worker (-c 1) serves consecutive sessions, and
nothing of one session reaches the next: TLS and AUTH state, the rules' environment (RELAYCLIENT, DATABYTES, any
variable), the Received line's TCPREMOTEHOST/INFO and HELO name, timeouts, buffers, the transaction, and control
files (rcpthosts, morercpthosts.cdb, servercert.pem) changed between sessions."""

import os
import re
import socket
import ssl
import subprocess
import time

import pytest

from conftest import program, qenv, queued
from test_qmail_smtpd import control, messages
from test_qmail_smtpd_interop import TlsClient, b64, queue_owner_tree, tls_tree  # noqa: F401 (tls_tree: a fixture)
from test_qmail_tcpserver import serve, tcprules_cdb
from test_tcppool import open_fds, served_by

pytestmark = pytest.mark.interop
RULES = ('127.0.0.1:allow,RELAYCLIENT=""\n127.0.0.3:allow,DATABYTES="100"\n'
         '127.0.0.4:allow,TCPREMOTEINFO="ident1",TCPREMOTEHOST="first.example"\n127.0.0.5:allow,FOO="from-rules"\n'
         ':allow\n')
BODY = b"Subject: reuse\r\n\r\n" + b"x" * 150 + b"\r\n"


class Client(TlsClient):
    """A raw SMTP client from a chosen loopback address: plaintext, then TLS after STARTTLS (TlsClient's reply
    and send)."""

    def __init__(self, port, source="127.0.0.2"):
        self.sock = socket.socket()
        self.sock.settimeout(20)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def starttls(self):
        """STARTTLS and the handshake; return the server's certificate (DER)."""
        assert self.send(b"STARTTLS") == b"220 ready for tls\r\n"
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")
        return self.sock.getpeercert(binary_form=True)

    def mail(self, rcpt=b"c@test.example", body=BODY, sender=b"a@b.example"):
        """One whole transaction; return the reply to the end of DATA."""
        assert self.send(b"MAIL FROM:<%s>" % sender) == b"250 ok\r\n"
        assert self.send(b"RCPT TO:<%s>" % rcpt) == b"250 ok\r\n"
        assert self.send(b"DATA") == b"354 go ahead\r\n"
        self.sock.sendall(body + b".\r\n")
        return self.reply()

    def quit(self):
        """QUIT and close."""
        assert self.send(b"QUIT").startswith(b"221 ")
        self.close()

    def close(self):
        """Close the connection (the file from makefile too: until then the socket stays open)."""
        self.file.close()
        self.sock.close()


def one_worker(procs, tree, world_tmp, options=()):
    """Run qmail-smtpd under qmail-tcpserver -c 1 with RULES; return (port, log)."""
    rules = tcprules_cdb(world_tmp, RULES)
    port, _, log = serve(procs, tree, program("qmail-tcpserver"), [program("qmail-smtpd")],
                         ["-c", "1", "-x", str(rules), *options], env=qenv(tree))
    assert "in forked children" in log.path.read_text()
    return port, log


def idle_worker(log, sessions):
    """Wait until the worker has ended this many sessions since the log's mark; return its pid."""
    deadline = time.time() + 20
    while log.read_text().count("tcpserver: end ") < sessions and time.time() < deadline:
        time.sleep(0.02)
    assert log.read_text().count("tcpserver: end ") >= sessions, log.read_text()
    pids = set(served_by(log))
    assert len(pids) == 1, pids  # one worker served them all
    return pids.pop()


def settled_fds(pid):
    """Return the worker's descriptor count once it holds still: a worker logged as done may still be closing."""
    deadline = time.time() + 10
    readings = [open_fds(pid)]
    while time.time() < deadline and not (len(readings) >= 5 and len(set(readings[-5:])) == 1):
        time.sleep(0.05)
        readings.append(open_fds(pid))
    return readings[-1]


def received_from(tree):
    """Return the set of the queued messages' `Received: from` lines."""
    return {mess.split(b"\n")[1] for mess, _ in queued(tree).values()}


def settle(*paths):
    """Date paths a day back and wait until their ctime is over a second old: control.memo keeps values read from
    files that are settled, so that the next session depends on its stat check, not on a fresh read."""
    for path in paths:
        os.utime(path, (time.time() - 86400,) * 2)
    deadline = time.time() + 10
    while time.time() < deadline and any(os.stat(p).st_ctime > time.time() - 1.2 for p in paths):
        time.sleep(0.05)


def test_relayclient_from_the_rules_never_reaches_the_next_session(procs, tree, world_tmp):
    control(tree, rcpthosts="test.example")
    port, log = one_worker(procs, tree, world_tmp)
    c = Client(port, "127.0.0.1")
    assert c.mail(rcpt=b"far@away.example").startswith(b"250 ok ")
    c.quit()
    c = Client(port, "127.0.0.2")
    assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
    assert c.send(b"RCPT TO:<far@away.example>") == \
        b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
    c.quit()
    c = Client(port, "127.0.0.1")
    assert c.mail(rcpt=b"far2@away.example").startswith(b"250 ok ")
    c.quit()
    idle_worker(log, 3)
    assert sorted(r for _, _, r in messages(tree)) == [[b"far2@away.example"], [b"far@away.example"]]


def test_databytes_from_the_rules_never_reaches_the_next_session(procs, tree, world_tmp):
    control(tree, smtpsize=1)
    port, log = one_worker(procs, tree, world_tmp)
    c = Client(port, "127.0.0.3")
    assert b"250-SIZE 100\r\n" in c.send(b"EHLO x")
    assert c.mail() == b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
    c.quit()
    c = Client(port, "127.0.0.2")
    assert b"250-SIZE\r\n" in c.send(b"EHLO x")
    assert c.mail().startswith(b"250 ok ")
    c.quit()
    idle_worker(log, 2)
    assert len(queued(tree)) == 1


def test_received_line_remotehost_remoteinfo_and_helo_are_the_sessions_own(procs, world_tmp):
    tree, owner = queue_owner_tree(world_tmp)  # queued in the worker's own process, as the queue's owner
    port, log = one_worker(procs, tree, world_tmp, owner)
    c = Client(port, "127.0.0.4")
    assert c.send(b"HELO first.helo") == b"250 test.example\r\n"
    assert c.mail().startswith(b"250 ok ")
    c.quit()
    c = Client(port, "127.0.0.2")
    assert c.mail().startswith(b"250 ok ")
    c.quit()
    idle_worker(log, 2)
    assert received_from(tree) == {b"Received: from first.example (HELO first.helo) (ident1@127.0.0.4)",
                                   b"Received: from unknown (127.0.0.2)"}


def test_no_variable_the_rules_set_for_one_session_reaches_the_next(procs, tls_tree, world_tmp):
    seen = world_tmp / "env-seen"
    checker = world_tmp / "checkenv"
    checker.write_text("#!/bin/sh\nprintf '%%s|' \"${FOO-unset}\" >> %s\nexit 1\n" % seen)
    checker.chmod(0o755)
    control(tls_tree, smtpcheckpassword=checker)
    port, log = one_worker(procs, tls_tree, world_tmp)
    for source in ("127.0.0.5", "127.0.0.2"):
        c = Client(port, source)
        c.send(b"EHLO x")
        c.starttls()
        assert c.send(b"AUTH PLAIN " + b64(b"\0joe\0s3cret")) == b"535 authentication failed (#5.7.8)\r\n"
        c.quit()
    idle_worker(log, 2)
    assert seen.read_text() == "from-rules|unset|"


def test_tls_and_auth_of_a_session_left_mid_tls_never_reach_the_next(procs, tls_tree, world_tmp):
    port, log = one_worker(procs, tls_tree, world_tmp)
    worker = int(re.findall(r"^tcpserver: ok (\d+) ", log.path.read_text(), re.M)[-1])  # serve()'s session's
    before = settled_fds(worker)
    c = Client(port)
    c.send(b"EHLO x")
    c.starttls()
    assert c.send(b"AUTH PLAIN " + b64(b"\0joe\0s3cret")) == b"235 ok, go ahead (#2.0.0)\r\n"
    assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
    assert c.send(b"RCPT TO:<far@away.example>") == b"250 ok\r\n"
    c.sock.sendall(b"DATA\r\n")  # and gone, TLS never closed, mid-transaction
    c.close()
    c = Client(port)
    ehlo = c.send(b"EHLO x")
    assert b"250-STARTTLS\r\n" in ehlo and b"AUTH" not in ehlo  # plaintext again, and not authenticated
    assert c.send(b"AUTH PLAIN " + b64(b"\0joe\0s3cret")) == \
        b"538 encryption required for requested authentication mechanism (#5.7.11)\r\n"
    assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
    assert c.send(b"RCPT TO:<far@away.example>") == \
        b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
    assert c.mail().startswith(b"250 ok ")
    c.starttls()
    assert c.send(b"EHLO y").endswith(b"250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n")  # TLS anew, AUTH not yet done
    assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
    assert c.send(b"RCPT TO:<far@away.example>") == \
        b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
    c.quit()
    assert idle_worker(log, 2) == worker
    assert settled_fds(worker) == before  # the TLS socket's descriptor went with its session
    [(body, _, rcpts)] = messages(tls_tree)
    assert rcpts == [b"c@test.example"] and b" with SMTP; " in body.split(b"\n", 2)[1]


def test_a_new_servercert_is_served_to_the_next_session(procs, tls_tree, world_tmp):
    port, log = one_worker(procs, tls_tree, world_tmp)
    pem = tls_tree / "control" / "servercert.pem"
    settle(*pem.parent.iterdir(), pem.parent)
    c = Client(port)
    first = c.starttls()
    c.quit()
    c = Client(port)
    assert c.starttls() == first  # kept: the file is unchanged
    c.quit()
    key, cert = world_tmp / "key2.pem", world_tmp / "cert2.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=second.example"], check=True, capture_output=True)
    with open(pem, "r+b") as f:  # written in place: the directory does not change
        f.write(cert.read_bytes() + key.read_bytes())
        f.truncate()
    c = Client(port)
    second = c.starttls()
    c.quit()
    assert second != first and second == ssl.PEM_cert_to_DER_cert(cert.read_text())
    idle_worker(log, 3)


def test_the_transaction_and_unread_bytes_of_a_session_never_reach_the_next(procs, tree, world_tmp):
    port, log = one_worker(procs, tree, world_tmp)
    c = Client(port)
    assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
    assert c.send(b"RCPT TO:<c@test.example>") == b"250 ok\r\n"
    c.sock.sendall(b"RCPT TO:<d@test.example>\r\nMAIL FROM:<partial")  # pipelined, then a line without its LF
    assert c.reply() == b"250 ok\r\n"
    c.close()
    c = Client(port)
    assert c.send(b"DATA") == b"503 MAIL first (#5.5.1)\r\n"
    assert c.send(b"MAIL FROM:<x@y.example>") == b"250 ok\r\n"
    assert c.send(b"DATA") == b"503 RCPT first (#5.5.1)\r\n"
    assert c.send(b"RCPT TO:<e@test.example>") == b"250 ok\r\n"
    assert c.send(b"DATA") == b"354 go ahead\r\n"
    c.sock.sendall(b"Subject: half\r\n\r\nhalf a message")  # and gone mid-DATA: nothing of it is queued
    c.close()
    c = Client(port)
    c.sock.sendall(b"QUIT\r\nMAIL FROM:<after@quit.example>\r\n")  # bytes after QUIT stay unread
    assert c.reply() == b"221 test.example\r\n"
    c.close()
    c = Client(port)
    assert c.mail(sender=b"last@x.example", body=b"Subject: whole\r\n\r\nwhole\r\n").startswith(b"250 ok ")
    c.quit()
    idle_worker(log, 4)
    [(body, sender, rcpts)] = messages(tree)
    assert (sender, rcpts) == (b"last@x.example", [b"c@test.example"])
    assert b"half" not in body and body.endswith(b"Subject: whole\n\nwhole\n")


def test_a_session_deadline_reached_never_shortens_the_next(procs, tree, world_tmp):
    control(tree, smtpdeadline=2)
    port, log = one_worker(procs, tree, world_tmp)
    c = Client(port)
    c.sock.settimeout(20)
    assert c.reply() == b"451 timeout (#4.4.2)\r\n"  # silent past the deadline
    c.close()
    c = Client(port)  # a deadline left from the last session would end this one at once
    assert c.send(b"HELO x") == b"250 test.example\r\n"
    assert c.mail().startswith(b"250 ok ")
    c.quit()
    idle_worker(log, 2)
    assert len(queued(tree)) == 1


def test_rcpthosts_and_morercpthosts_changed_between_sessions_are_seen(procs, tree, world_tmp):
    control(tree, rcpthosts="test.example")
    ctl = tree / "control"
    port, log = one_worker(procs, tree, world_tmp)

    def rcpt(address):
        c = Client(port)
        assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
        reply = c.send(b"RCPT TO:<%s>" % address)
        c.quit()
        return reply[:3]

    settle(*ctl.iterdir(), ctl)
    assert rcpt(b"x@new.example") == b"553"
    assert rcpt(b"x@new.example") == b"553"  # read from what the worker kept
    with open(ctl / "rcpthosts", "ab") as f:  # written in place: control/ does not change
        f.write(b"new.example\n")
    assert rcpt(b"x@new.example") == b"250"
    (ctl / "morercpthosts").write_text("more.example\n")
    subprocess.run([program("qmail-newmrh")], env=qenv(tree), check=True)
    settle(*ctl.iterdir(), ctl)
    assert rcpt(b"x@more.example") == b"250"
    pid = idle_worker(log, 4)
    fds = settled_fds(pid)
    assert rcpt(b"x@more.example") == b"250"  # kept, the cdb opened anew for the session
    assert settled_fds(idle_worker(log, 5)) == fds  # and closed after it
    (ctl / "morercpthosts").write_text("other.example\n")
    subprocess.run([program("qmail-newmrh")], env=qenv(tree), check=True)  # a new cdb renamed into place
    assert rcpt(b"x@more.example") == b"553"
    assert rcpt(b"x@other.example") == b"250"
    idle_worker(log, 7)
