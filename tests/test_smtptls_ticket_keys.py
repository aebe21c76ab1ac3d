"""qmail-smtpd's TLS context (lib/smtpd/smtptls.context) keeps its session-ticket keys at most TICKET_KEYS_NS:
a ticket resumes on the context that made it, and no longer once the context has been made again. Real TLS 1.3
handshakes over a socket pair, the server side in a thread."""

import socket
import ssl
import threading

from test_smtpd_reuse import settle
from test_smtpd_tls_io import make_pem
from pyqmail.lib.smtpd import smtptls


CLIENT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # one for all: a session is offered by the context that made it
CLIENT.check_hostname, CLIENT.verify_mode = False, ssl.CERT_NONE


def handshake(server_ctx, session=None):
    """One TLS session against server_ctx, offering session; return (the client's session, whether it resumed)."""
    a, b = socket.socketpair()
    a.settimeout(30)
    b.settimeout(30)
    failed = []

    def serve():
        try:
            with server_ctx.wrap_socket(b, server_side=True) as s:
                s.sendall(b"x")  # the ticket goes out before it
                s.recv(1)
        except OSError as e:
            failed.append(e)

    t = threading.Thread(target=serve)
    t.start()
    try:
        with CLIENT.wrap_socket(a, session=session) as c:
            assert c.recv(1) == b"x"
            got = c.session, c.session_reused
            c.sendall(b"y")
    finally:
        t.join(30)
    assert not failed
    return got


def test_ticket_keys_are_renewed_after_their_lifetime(world_tmp, monkeypatch):
    pem = world_tmp / "servercert.pem"
    make_pem(pem, "mx.example")
    settle(pem)  # a file changed within the last second is read again every time
    first = smtptls.context(str(pem))
    assert smtptls.context(str(pem)) is first  # within the lifetime: the same context, the same keys
    session, reused = handshake(first)
    assert not reused
    assert handshake(first, session)[1]  # the ticket resumes on the keys that made it
    monkeypatch.setattr(smtptls, "TICKET_KEYS_NS", 0)  # the lifetime over
    again = smtptls.context(str(pem))
    assert again is not first
    assert not handshake(again, session)[1]  # the old ticket: a full handshake
