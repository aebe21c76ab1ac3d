"""STARTTLS for qmail-smtpd (RFC 3207): ssl is imported only here, when a client asks for it."""

from __future__ import annotations

MYPY = False
if MYPY:  # typing only: never imported at run time
    import ssl

    from pyqmail.lib.smtpd.smtpio import Session


def context(certfile: str) -> ssl.SSLContext:
    """Return a server SSLContext for certfile (TLS 1.2 or later)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile)
    return ctx


def start(session: Session, certfile: str) -> None:
    """Answer 220, drop what the client pipelined in plaintext, handshake, and forget HELO and the transaction.
    certfile holds the certificate chain and private key in one PEM file (control/servercert.pem)."""
    try:
        ctx = context(certfile)
    except (OSError, ValueError):
        session.io.out(b"454 TLS not available due to temporary reason (#4.3.0)\r\n")
        return
    session.io.out(b"220 ready for tls\r\n")
    session.io.start_tls(ctx)
    session.helo, session.seenmail = None, False
