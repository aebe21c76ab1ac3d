"""qmail-remote beyond qmail: STARTTLS, AUTH PLAIN/LOGIN, SIZE and 8BITMIME (see qmail-remote(8))."""

from __future__ import annotations

import os

from pyqmail.lib.util.regularfile import is_regular
from pyqmail.lib.remote.remotesession import Finish

MYPY = False
if MYPY:  # typing only: never imported at run time
    import ssl

    from pyqmail.lib.remote.remotesession import Session

    Keywords = dict[bytes, list[bytes]]  # EHLO keyword → its parameters

SCAN_CHUNK = 1 << 20


class RetryPlain(Exception):
    """Opportunistic TLS failed in the handshake: connect to the same address again without STARTTLS."""


def tls_context(policy: bytes | None, cafile: str | None) -> ssl.SSLContext:
    """Return an SSLContext: certificates verified for `verify`, not checked otherwise (opportunistic, encrypt)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if policy == b"verify":
        if cafile:
            ctx.load_verify_locations(cafile=cafile)
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def has_8bit(fd: int) -> bool:
    """True if the message file on fd holds a byte above 127 (read with pread: its offset stays at 0)."""
    offset = 0
    try:
        while True:
            data = os.pread(fd, SCAN_CHUNK, offset)
            if not data:
                return False
            if not data.isascii():
                return True
            offset += len(data)
    except OSError:
        return False


def b64(data: bytes) -> bytes:
    """Return data in base64, no newline."""
    import binascii
    return binascii.b2a_base64(data, newline=False)


class Features:
    """What one connection negotiates after EHLO."""

    def __init__(self, tls_policy: bytes | None = None, server_name: str | None = None,
                 auth: tuple[bytes, bytes] | None = None, try_tls: bool = True, cafile: str | None = None,
                 loopback: bool = False) -> None:
        self.tls_policy = tls_policy  # None (opportunistic), b"encrypt" or b"verify"
        self.server_name = server_name  # the name the certificate must match (an MX, a relay, or an IP)
        self.auth = auth  # (user, password) for this relay, or None
        self.try_tls = try_tls
        self.cafile = cafile
        self.loopback = loopback
        self.tls = False

    def negotiate(self, session: Session, keywords: Keywords) -> Keywords:
        """Run STARTTLS and AUTH as configured and offered; return the keywords that hold afterwards."""
        if b"STARTTLS" in keywords and (self.try_tls or self.tls_policy):
            keywords = self.starttls(session, keywords)
        elif self.tls_policy:
            session.quit(b"ZConnected to ", b" but it does not offer STARTTLS, which control/tlsdestinations"
                         b" requires")
        if self.auth is not None and b"AUTH" in keywords:
            self.authenticate(session, [m.upper() for m in keywords[b"AUTH"]], self.auth)
        return keywords

    def starttls(self, session: Session, keywords: Keywords) -> Keywords:
        """Switch the connection to TLS and greet again; a refusal continues in plain text unless TLS is required."""
        if session.code(b"STARTTLS") != 220:
            if self.tls_policy:
                session.quit(b"ZConnected to ", b" but STARTTLS was refused")
            return keywords
        import ssl
        try:
            session.conn.start_tls(tls_context(self.tls_policy, self.cafile), self.server_name)
        except (ssl.SSLError, ssl.CertificateError, ValueError, ConnectionError) as e:  # a reset: a middlebox's
            if not self.tls_policy:
                raise RetryPlain()
            reason = str(getattr(e, "reason", None) or e).encode("ascii", "replace")[:200]
            raise Finish(b"ZConnected to " + session.ip + b" but TLS failed: " + reason + b". (#4.7.0)\n")
        self.tls = True
        reply = session.exchange(b"EHLO " + session.helohost)
        if reply.code != 250:
            session.quit(b"ZConnected to ", b" but my name was rejected")
        from pyqmail.lib.remote.smtpclient import ehlo_keywords
        return ehlo_keywords(reply)

    def authenticate(self, session: Session, mechanisms: list[bytes], auth: tuple[bytes, bytes]) -> None:
        """AUTH PLAIN (else LOGIN) with the relay's credentials (auth); only over TLS or to a loopback address."""
        if b"PLAIN" not in mechanisms and b"LOGIN" not in mechanisms:
            return
        if not (self.tls or self.loopback):
            session.quit(b"ZConnected to ", b" but I don't send a password without TLS")
        user, password = auth
        if b"PLAIN" in mechanisms:
            code = session.code(b"AUTH PLAIN " + b64(b"\0" + user + b"\0" + password))
        else:
            code = session.code(b"AUTH LOGIN")
            for answer in (user, password):
                if code == 334:
                    code = session.code(b64(answer))
        if code != 235:
            session.quit(b"ZConnected to ", b" but my authentication was rejected")

    def mail_parameters(self, keywords: Keywords, fd: int) -> bytes:
        """Return the MAIL FROM parameters: SIZE= and BODY=8BITMIME when offered and known."""
        params = b""
        try:
            st = os.fstat(fd)
        except OSError:
            return params
        size, regular = st.st_size, is_regular(st.st_mode)
        if b"SIZE" in keywords and regular:
            params += b" SIZE=%d" % size
        if b"8BITMIME" in keywords and regular and has_8bit(fd):
            params += b" BODY=8BITMIME"
        return params
