"""STARTTLS for qmail-smtpd (RFC 3207): ssl is imported only here, when a client asks for it."""

CERT = "control/servercert.pem"  # certificate chain and private key in one PEM file


def context(certfile):
    """Return a server SSLContext for certfile (TLS 1.2 or later)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile)
    return ctx


def start(session):
    """Answer 220, drop what the client pipelined in plaintext, handshake, and forget HELO and the transaction."""
    try:
        ctx = context(session.conf.certfile)
    except (OSError, ValueError):
        return session.io.out(b"454 TLS not available due to temporary reason (#4.3.0)\r\n")
    session.io.out(b"220 ready for tls\r\n")
    session.io.start_tls(ctx)
    session.helo, session.seenmail = None, False
