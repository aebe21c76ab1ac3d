"""STARTTLS for qmail-smtpd (RFC 3207): ssl is imported only here, when a client asks for it."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)

MYPY = False
if MYPY:  # typing only: never imported at run time
    import ssl

    from pyqmail.lib.smtpd.smtpio import Session

SETTLED_NS = 10**9  # a certificate file changed this recently may change again within the same clock tick
# a context's session-ticket keys are OpenSSL's, made with it and never changed (Python's ssl has no hook to
# rotate them): so a context is made again after this long, as Postfix rotates its keys
# (smtpd_tls_session_cache_timeout's default); a ticket made with the old keys then gets a full handshake
TICKET_KEYS_NS = 3600 * 10**9
# certfile -> (its stat key, when made (monotonic), the context made from it): a reused worker loads the chain
# once, not per STARTTLS
_contexts: dict[str, tuple[tuple[int, int, int, int, int], int, ssl.SSLContext]] = {}


def context(certfile: str) -> ssl.SSLContext:
    """Return a server SSLContext for certfile (TLS 1.2 or later); the one made before while the file is
    unchanged and its ticket keys are younger than TICKET_KEYS_NS (a context holds no descriptor and no
    session's state)."""
    import time
    st = posix.stat(certfile)
    key = st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
    held = _contexts.get(certfile)
    now = time.monotonic_ns()
    if held is not None and held[0] == key and now - held[1] < TICKET_KEYS_NS:
        return held[2]
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.num_tickets = 1  # as Postfix's smtpd: OpenSSL's default of 2 costs a second ticket's crypto and bytes
    # an encrypted key fails to load (no pass phrase, as Postfix requires a key without one) rather than
    # OpenSSL asking for one on the terminal, where a server started by hand would hang
    ctx.load_cert_chain(certfile, password=b"")
    _contexts.pop(certfile, None)
    if max(st.st_mtime_ns, st.st_ctime_ns) < time.time_ns() - SETTLED_NS:
        _contexts[certfile] = key, now, ctx
    return ctx


def warm() -> None:
    """Make the context for control/servercert.pem, if there is one, in qmail-tcpserver's listener before it forks
    workers (lib/tcpserver/inprocess): they inherit it, its session-ticket keys too, so a client resumes on any
    worker (as Postfix's tlsmgr shares its keys between smtpd processes) and no worker loads the chain itself."""
    from pyqmail.lib.config.control import path
    try:
        context(path("control", "servercert.pem"))
    except (OSError, ValueError):  # none, or unusable: each session finds out for itself (454)
        pass


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
