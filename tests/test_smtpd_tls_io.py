"""qmail-smtpd's STARTTLS over memory buffers (issue 23): whatever way the client's TLS bytes are cut into writes (many
records in one, one record in many), the replies are qmail-smtpd's byte for byte; one TLS 1.3 session ticket per
handshake, as Postfix's smtpd; a handshake that fails or goes silent ends that session alone, with no plaintext
reply; a timeout after it is an encrypted 451; the context is made once per worker and anew when servercert.pem
changes."""

import socket
import ssl
import subprocess
import time

import pytest

from conftest import need, program, qenv, rest_until_eof
from test_qmail_smtpd import messages
from test_qmail_smtpd_interop import tls_tree  # noqa: F401 (a fixture)
from test_qmail_tcpserver import serve
from test_smtpd_reuse import Client, idle_worker, one_worker, settle, settled_fds
from test_tcppool import served_by

pytestmark = pytest.mark.interop
BODY = b"Subject: cut\r\n\r\n" + b"".join(b"line %04d %s\r\n" % (n, b"y" * 60) for n in range(60))


class BioClient:
    """SMTP over TLS where the test decides how the TLS bytes are cut into writes: the client's TLS runs on memory
    buffers and the test sends what they hold."""

    def __init__(self, port, maximum=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each write its own segment
        self.plain = b""
        assert self.plain_reply() == b"220 test.example ESMTP\r\n"
        self.sock.sendall(b"EHLO x\r\n")
        assert b"250-STARTTLS\r\n" in self.plain_reply()
        self.sock.sendall(b"STARTTLS\r\n")
        assert self.plain_reply() == b"220 ready for tls\r\n"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        if maximum:
            ctx.maximum_version = maximum
        self.tickets = 0
        ctx._msg_callback = self.saw  # Python's TLS message hook (debugging): counts the NewSessionTickets
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing)
        self.decrypted = b""

    def saw(self, conn, direction, version, content_type, msg_type, data):
        """Count the session tickets the server sends."""
        if direction == "read" and msg_type == ssl._TLSMessageType.NEWSESSION_TICKET:
            self.tickets += 1

    def plain_reply(self):
        """Read one whole plaintext reply, never beyond it."""
        while not self.plain.endswith(b"\r\n") or self.plain.split(b"\r\n")[-2][3:4] == b"-":
            self.plain += self.sock.recv(1)
        reply, self.plain = self.plain, b""
        return reply

    def handshake(self):
        """Complete the handshake; return self."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                self.feed()
        self.sock.sendall(self.outgoing.read())  # the client's Finished
        return self

    def feed(self):
        """Give the TLS layer the server's next bytes; EOFError at the end of the connection."""
        data = self.sock.recv(65536)
        if not data:
            raise EOFError()
        self.incoming.write(data)

    def records(self, *texts):
        """Encrypt each text as its own record; return the bytes of them all."""
        for text in texts:
            self.tls.write(text)
        return self.outgoing.read()

    def replies(self, count):
        """Return the next count whole replies (multi-line ones whole), decrypted."""
        while True:
            lines = self.decrypted.split(b"\r\n")
            ends = [i for i, line in enumerate(lines[:-1]) if line[3:4] != b"-"]
            if len(ends) >= count:
                cut = sum(len(line) + 2 for line in lines[:ends[count - 1] + 1])
                got, self.decrypted = self.decrypted[:cut], self.decrypted[cut:]
                return got
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                self.feed()
                continue
            if not data:  # the server's close_notify: no reply will come
                raise EOFError()
            self.decrypted += data

    def rest(self):
        """Decrypt everything until the server closes the connection."""
        while True:
            try:
                data = self.tls.read(65536)
                if not data:  # the server's close_notify, which ends its TLS session after its last reply
                    break
                self.decrypted += data
                continue
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                break
            try:
                self.feed()
            except (EOFError, ConnectionResetError):
                break
        return self.decrypted


def test_many_records_in_one_write_and_one_record_in_many(procs, tls_tree, world_tmp):
    port, log = one_worker(procs, tls_tree, world_tmp)
    c = BioClient(port).handshake()
    c.sock.sendall(c.records(b"EHLO y\r\n", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@test.example>\r\n",
                             b"DATA\r\n"))  # four records, one write
    assert c.replies(4) == (b"250-test.example\r\n250-PIPELINING\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n"
                            b"250 ok\r\n250 ok\r\n354 go ahead\r\n")
    data = c.records(BODY, b".\r\n")
    for start in range(0, len(data), 700):  # cut within records, headers too: the server waits for the rest
        c.sock.sendall(data[start:start + 700])
        time.sleep(0.02)
    assert c.replies(1).startswith(b"250 ok ")
    c.sock.sendall(c.records(b"NOOP\r\nQUIT\r\n"))  # two commands, one record
    assert c.replies(2) == b"250 ok\r\n221 test.example\r\n"
    idle_worker(log, 1)
    [(body, sender, rcpts)] = messages(tls_tree)
    received, by, rest = body.split(b"\n", 2)  # qmail-smtpd's Received line, then the message
    assert b" with ESMTPS; " in by and rest == BODY.replace(b"\r\n", b"\n") and rcpts == [b"c@test.example"]


def test_replies_to_a_long_pipelined_burst_arrive_whole(procs, tls_tree, world_tmp):
    port, log = one_worker(procs, tls_tree, world_tmp)
    c = BioClient(port).handshake()
    c.sock.sendall(c.records(b"RSET\r\n" * 3000, b"NOOP\r\n"))  # 39 KB of replies held, then flushed at once
    assert c.replies(3001) == b"250 flushed\r\n" * 3000 + b"250 ok\r\n"
    c.sock.sendall(c.records(b"QUIT\r\n"))
    assert c.replies(1) == b"221 test.example\r\n"


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_one_session_ticket_per_handshake_as_postfix(procs, tls_tree, world_tmp, maximum):
    port, log = one_worker(procs, tls_tree, world_tmp)
    for _ in range(2):  # the worker's context made, then kept
        c = BioClient(port, maximum).handshake()
        c.sock.sendall(c.records(b"EHLO y\r\n"))
        assert c.replies(1).endswith(b"250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n")
        assert c.tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[maximum]
        assert c.tickets == 1
        c.sock.sendall(c.records(b"QUIT\r\n"))
        assert c.replies(1) == b"221 test.example\r\n"
        c.sock.close()


def test_a_silent_handshake_ends_without_a_plaintext_reply(procs, tls_tree, world_tmp):
    (tls_tree / "control" / "timeoutsmtpd").write_text("1\n")
    port, log = one_worker(procs, tls_tree, world_tmp)
    c = Client(port)
    assert c.send(b"STARTTLS") == b"220 ready for tls\r\n"
    assert rest_until_eof(c.sock) == (b"", True)  # no "451 timeout" in plaintext amid a handshake
    c.close()
    c = Client(port)  # the same worker, a session of its own
    assert c.greeting == b"220 test.example ESMTP\r\n"
    c.quit()
    idle_worker(log, 2)


def test_a_failed_handshake_ends_that_session_only(procs, tls_tree, world_tmp):
    port, log = one_worker(procs, tls_tree, world_tmp)
    c = Client(port)
    c.quit()
    worker = idle_worker(log, 1)
    before = settled_fds(worker)
    c = Client(port)
    assert c.send(b"STARTTLS") == b"220 ready for tls\r\n"
    c.sock.sendall(b"QUIT\r\n")  # plaintext where the ClientHello belongs
    data, eof = rest_until_eof(c.sock)
    assert eof and data[:1] in (b"", b"\x15")  # at most a TLS alert: nothing in plaintext
    c.close()
    c = Client(port)
    assert c.send(b"EHLO y").startswith(b"250-test.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n")
    c.quit()
    assert idle_worker(log, 3) == worker
    assert settled_fds(worker) == before


def test_silence_after_the_handshake_gets_an_encrypted_451(procs, tls_tree, world_tmp):
    (tls_tree / "control" / "timeoutsmtpd").write_text("1\n")
    port, log = one_worker(procs, tls_tree, world_tmp)
    c = BioClient(port).handshake()
    assert c.rest() == b"451 timeout (#4.4.2)\r\n"
    idle_worker(log, 1)


def test_close_notify_mid_message_queues_nothing(procs, tls_tree, world_tmp):
    port, log = one_worker(procs, tls_tree, world_tmp)
    c = BioClient(port).handshake()
    c.sock.sendall(c.records(b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@test.example>\r\n", b"DATA\r\n"))
    assert c.replies(3) == b"250 ok\r\n250 ok\r\n354 go ahead\r\n"
    c.sock.sendall(c.records(BODY))
    try:
        c.tls.unwrap()
    except ssl.SSLWantReadError:
        pass
    c.sock.sendall(c.outgoing.read())  # the close_notify, with no end of data before it
    assert c.rest() == b""
    c = Client(port)
    c.quit()
    idle_worker(log, 2)
    assert messages(tls_tree) == []


def test_an_unusable_certificate_gets_454_and_the_session_goes_on(procs, tls_tree, world_tmp):
    (tls_tree / "control" / "servercert.pem").write_text("not a certificate\n")
    port, log = one_worker(procs, tls_tree, world_tmp)
    c = Client(port)
    assert c.send(b"STARTTLS") == b"454 TLS not available due to temporary reason (#4.3.0)\r\n"
    assert c.send(b"NOOP") == b"250 ok\r\n"
    c.quit()


def test_a_session_resumes_on_another_worker(procs, tls_tree):
    settle(tls_tree / "control" / "servercert.pem")  # settled when the listener starts: it makes the context
    port, _, log = serve(procs, tls_tree, program("qmail-tcpserver"), [program("qmail-smtpd")], ["-c", "2"],
                         env=qenv(tls_tree))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    sessions = []
    for _ in range(2):  # the first stays open: its worker is busy, another serves the second
        c = Client(port)
        assert c.send(b"STARTTLS") == b"220 ready for tls\r\n"
        c.sock = ctx.wrap_socket(c.sock, session=sessions[0][1].sock.session if sessions else None)
        c.file = c.sock.makefile("rb")
        assert c.send(b"EHLO y").endswith(b"250 8BITMIME\r\n")  # and the ticket read
        sessions.append((c.sock.session_reused, c))
    for _, c in sessions:
        c.quit()
    deadline = time.time() + 20
    while len(served_by(log)) < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert len(set(served_by(log))) == 2  # two workers
    assert [reused for reused, _ in sessions] == [False, True]  # the second worker knew the first one's ticket


def make_pem(path, name):
    """Write a self-signed certificate and its key for CN name into path (servercert.pem's form)."""
    need("openssl")
    key, cert = path.with_suffix(".key"), path.with_suffix(".crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=" + name], check=True, capture_output=True)
    path.write_bytes(cert.read_bytes() + key.read_bytes())


def test_the_context_is_made_once_and_anew_when_the_file_changes(tmp_path, monkeypatch):
    from pyqmail.lib.smtpd import smtptls
    pem = tmp_path / "servercert.pem"
    make_pem(pem, "one.example")
    fresh = smtptls.context(str(pem))
    assert smtptls.context(str(pem)) is not fresh  # changed within the last second: not kept yet
    monkeypatch.setattr(smtptls, "SETTLED_NS", 0)  # the test decides when a change is settled
    first = smtptls.context(str(pem))
    assert smtptls.context(str(pem)) is first
    assert first.num_tickets == 1 and first.minimum_version == ssl.TLSVersion.TLSv1_2
    make_pem(tmp_path / "other.pem", "two.example")
    (tmp_path / "other.pem").replace(pem)  # a new file in its place, as an admin's mv
    second = smtptls.context(str(pem))
    assert second is not first and smtptls.context(str(pem)) is second
    pem.write_text("broken\n")
    with pytest.raises(ssl.SSLError):
        smtptls.context(str(pem))
