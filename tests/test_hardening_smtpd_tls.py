"""Issue 17, the command-line bound of qmail-smtpd over TCP under tcpserver: the 500 reply reaches a client that keeps
sending, and the bound holds after STARTTLS and for AUTH responses (no waiting for an LF, the session ends)."""

import socket
import threading

import pytest

from conftest import rest_until_eof
from test_hardening_smtpd import LONGLINE
from test_qmail_smtpd_interop import TlsClient, b64, serve, tls_tree  # noqa: F401 (tls_tree: a fixture)

pytestmark = pytest.mark.interop


def test_a_client_blasting_a_line_without_lf_reads_the_500(procs, tree):
    (tree / "control" / "timeoutsmtpd").write_text("60\n")
    port = serve(procs, tree)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        assert s.recv(100) == b"220 test.example ESMTP\r\n"
        sender = threading.Thread(target=lambda: _send_quietly(s, b"MAIL FROM:<" + b"x" * 300000))
        sender.start()
        data, eof = rest_until_eof(s)
        sender.join(20)
    assert data == LONGLINE and eof


def _send_quietly(sock, data):
    """sendall, ignoring the server hanging up."""
    try:
        sock.sendall(data)
    except OSError:
        pass


@pytest.mark.parametrize("step", ["command", "auth plain", "auth login user", "auth login password"])
def test_the_bound_holds_after_starttls_and_in_auth(procs, tls_tree, step):
    (tls_tree / "control" / "timeoutsmtpd").write_text("60\n")
    c = TlsClient(serve(procs, tls_tree)).starttls()
    try:
        if step == "auth plain":
            assert c.send(b"AUTH PLAIN") == b"334 \r\n"
        elif step.startswith("auth login"):
            assert c.send(b"AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
            if step.endswith("password"):
                assert c.send(b64(b"joe")) == b"334 UGFzc3dvcmQ6\r\n"
        c.sock.sendall(b"A" * 4097)  # no LF: the client waits for the answer
        data, eof = rest_until_eof(c.sock)
        assert data == LONGLINE and eof
    finally:
        c.close()
