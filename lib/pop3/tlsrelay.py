"""STLS for qmail-popup (RFC 2595): the handshake on the TCP socket on fd 0, and the relay that carries
bytes between the TLS session and the plain socketpair qmail-pop3d reads and writes, with bounded buffers
and the idle timeout. Python's ssl is imported only here, when a client sends STLS."""

from __future__ import annotations

import select

MYPY = False
if MYPY:  # typing only: never imported at run time
    import ssl

BUFFER = 65536  # bytes held in each direction at most: a reader that stops reading stops its writer


def can_tls(fd: int = 0) -> bool:
    """True when fd is a TCP socket (a pipe cannot carry TLS)."""
    import _socket
    try:
        sock = _socket.socket(fileno=fd)
    except (OSError, ValueError):
        return False
    try:
        return sock.family in (_socket.AF_INET, _socket.AF_INET6)
    finally:
        sock.detach()


def context(certfile: str) -> ssl.SSLContext:
    """A server SSLContext for certfile (certificate chain and key in one PEM file; TLS 1.2 or later)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # an encrypted key fails to load (no pass phrase) rather than OpenSSL asking for one on the terminal
    ctx.load_cert_chain(certfile, password=b"")
    return ctx


def wrap(ctx: ssl.SSLContext, fd: int, timeout: float) -> ssl.SSLSocket:
    """Handshake as the server on a duplicate of fd; each later read or write times out after timeout
    seconds. Raises OSError (ssl.SSLError included) when the handshake fails."""
    import os
    import socket
    sock = socket.socket(fileno=os.dup(fd))
    sock.settimeout(timeout)
    try:
        return ctx.wrap_socket(sock, server_side=True)
    except (OSError, ValueError) as e:
        sock.close()
        raise OSError("TLS handshake failed: %s" % e)


def relay(tls: ssl.SSLSocket, fd: int, first: bytes, timeout: float, limit: int = BUFFER,
          deadline: float | None = None) -> bool:
    """Carry bytes between tls (the client) and fd (the program's socket) until both directions are
    closed, or either side errs, or nothing moves for timeout seconds, or deadline (time.monotonic()) comes
    before the program has said anything; return whether it has. first: client bytes already read.
    Each direction holds at most limit bytes (first may exceed it once): while full, that side is not read."""
    import os
    import ssl
    import time
    tls.setblocking(False)
    os.set_blocking(fd, False)
    to_prog = bytearray(first)
    to_client = bytearray()
    client_eof = False  # the client sent its close (or TLS EOF): fd gets shutdown(SHUT_WR) once drained
    prog_eof = False  # the program closed its end: done once to_client is delivered
    prog_shut = False
    spoke = False  # the program has sent a byte
    read_wants_write = False
    write_wants_read = False
    tfd = tls.fileno()
    poller = select.poll()
    while True:
        wait = timeout
        if deadline is not None and not spoke:
            wait = deadline - time.monotonic()
            if wait <= 0:
                return False  # the program is silent still: the caller ends it
            wait = min(wait, timeout)
        if client_eof and not to_prog and not prog_shut:
            try:
                _shutdown_write(fd)
            except OSError:
                pass
            prog_shut = True
        if prog_eof and not to_client:
            return spoke  # the program is done and everything it said is delivered
        want_client_read = not client_eof and len(to_prog) < limit
        # decrypted bytes already inside the TLS object are not visible to poll
        if want_client_read and tls.pending():
            events = [(tfd, select.POLLIN)]
        else:
            tev = 0
            if (want_client_read and not write_wants_read) or (to_client and write_wants_read):
                tev |= select.POLLIN
            if (to_client and not write_wants_read) or read_wants_write:
                tev |= select.POLLOUT
            pev = 0
            if not prog_eof and len(to_client) < limit:
                pev |= select.POLLIN
            if to_prog and not prog_shut:
                pev |= select.POLLOUT
            for f in (tfd, fd):
                try:
                    poller.unregister(f)
                except KeyError:
                    pass
            if tev:
                poller.register(tfd, tev)
            if pev:
                poller.register(fd, pev)
            if not tev and not pev:
                return spoke
            events = poller.poll(int(wait * 1000) + 1)
            if not events:
                if wait < timeout:
                    continue  # the deadline's turn, at the top
                return spoke  # idle timeout
        for f, ev in events:
            if f == tfd:
                if want_client_read and (ev & (select.POLLIN | select.POLLHUP | select.POLLERR)
                                         or (read_wants_write and ev & select.POLLOUT)):
                    read_wants_write = False
                    try:
                        data = tls.recv(min(16384, limit - len(to_prog)))
                    except ssl.SSLWantReadError:
                        data = None
                    except ssl.SSLWantWriteError:
                        read_wants_write = True
                        data = None
                    except (OSError, ValueError):
                        return spoke
                    if data is not None:
                        if data:
                            to_prog += data
                        else:
                            client_eof = True
                if to_client and ev & (select.POLLOUT | select.POLLIN | select.POLLERR | select.POLLHUP):
                    write_wants_read = False
                    try:
                        n = tls.send(bytes(to_client[:16384]))
                    except ssl.SSLWantWriteError:
                        n = 0
                    except ssl.SSLWantReadError:
                        write_wants_read = True
                        n = 0
                    except (OSError, ValueError):
                        return spoke
                    del to_client[:n]
            else:
                if not prog_eof and len(to_client) < limit and ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    try:
                        data = _read(fd, limit - len(to_client))
                    except BlockingIOError:
                        data = None
                    except OSError:
                        data = b""
                    if data is not None:
                        if data:
                            to_client += data
                            spoke = True
                        else:
                            prog_eof = True
                if to_prog and not prog_shut and ev & (select.POLLOUT | select.POLLERR | select.POLLHUP):
                    try:
                        n = _write(fd, to_prog)
                    except BlockingIOError:
                        n = 0
                    except OSError:
                        return spoke  # the program is gone
                    del to_prog[:n]


def _read(fd: int, n: int) -> bytes:
    import os
    return os.read(fd, n)


def _write(fd: int, data: bytearray) -> int:
    import os
    return os.write(fd, data[:65536])


def _shutdown_write(fd: int) -> None:
    import socket
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_WR)
    finally:
        sock.detach()
