"""qmail-smtpd's connection: buffered replies flushed before each read, timed reads, bounded lines, STARTTLS."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)
import select
import time

from pyqmail.lib.util.fdio import write_all

MYPY = False
if MYPY:  # typing only: never imported at run time
    import ssl
    from typing import Protocol

    from pyqmail.lib.smtpd.smtpconf import Config

    class Session(Protocol):
        """What qmail-smtpd's session (commands/qmail_smtpd) offers the code for DATA, STARTTLS and AUTH."""
        conf: Config
        io: SmtpIO
        helo: bytes | None  # the HELO/EHLO argument, None before one (and after STARTTLS)
        seenmail: bool
        utf8: bool  # this transaction asked for SMTPUTF8
        user: bytes | None  # the authenticated login
        mailfrom: bytes
        rcptto: list[bytes]

CHUNK = 65536
LINE_LIMIT = 4096  # longest command line before its LF, CR included (qmail has none; an address may be 900 bytes)


class Gone(Exception):
    """The client went away (EOF, reset, a failed write): qmail-smtpd exits 1 without a word."""


class LineTooLong(Exception):
    """A command line over LINE_LIMIT: qmail-smtpd answers 500 and hangs up (its rest is never read)."""


class SmtpIO:
    """Reads commands and DATA from fd_in, writes replies to fd_out; per-read timeout and a session deadline."""

    def __init__(self, fd_in: int = 0, fd_out: int = 1, timeout: float = 1200, deadline: float = 0) -> None:
        self.fd_in, self.fd_out = fd_in, fd_out
        self.timeout = timeout
        self.deadline: float | None = time.monotonic() + deadline if deadline else None
        self.data_deadline: float | None = None  # DATA's own, extended by each byte received (control/smtpminrate)
        self.buffer = b""
        self.pos = 0  # bytes of buffer before pos have been consumed
        self.pending: list[bytes] = []
        self.tls: ssl.SSLSocket | None = None  # the ssl socket after STARTTLS
        self._on_tcp: bool | None = None  # unknown until asked: is fd_in a TCP socket?
        self.poll_in = select.poll()
        self.poll_in.register(fd_in, select.POLLIN)

    def out(self, reply: bytes) -> None:
        """Queue reply bytes; they are sent before the next read (as qmail's substdio flushes)."""
        self.pending.append(reply)

    def _wait(self) -> float:
        """Return the seconds a read or write may wait: the timeout, cut by the session deadline."""
        wait = self.timeout
        for deadline in (self.deadline, self.data_deadline):
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
        if wait <= 0:
            raise TimeoutError("session deadline")
        return wait

    def flush(self) -> None:
        """Send the queued replies; a client that does not read within the timeout is gone (with TLS; in plain
        text, one that leaves no room for them: once there is, fdio.write_all writes them all)."""
        if not self.pending:
            return
        data, self.pending = b"".join(self.pending), []
        if self.tls is not None:
            self.tls.settimeout(self._wait())
            try:
                self.tls.sendall(data)
            except OSError:
                raise Gone()
            return
        poller = select.poll()
        poller.register(self.fd_out, select.POLLOUT)
        if not poller.poll(int(self._wait() * 1000) + 1):
            raise Gone()
        try:
            write_all(self.fd_out, data)
        except OSError:
            raise Gone()

    def _recv(self) -> bytes:
        """Flush, then return the next bytes from the client; TimeoutError on silence, Gone at EOF."""
        self.flush()
        if self.tls is not None:
            return self._recv_tls(self.tls)
        if not self.poll_in.poll(int(self._wait() * 1000) + 1):
            raise TimeoutError("read timeout")
        try:
            data = posix.read(self.fd_in, CHUNK)
        except OSError:
            raise Gone()
        if not data:
            raise Gone()
        return data

    def _recv_tls(self, tls: ssl.SSLSocket) -> bytes:
        """Read decrypted bytes (the ssl layer may hold some that poll(2) cannot see)."""
        tls.settimeout(self._wait())
        try:
            data = tls.recv(CHUNK)
        except TimeoutError:
            raise
        except OSError:
            raise Gone()
        if not data:
            raise Gone()
        return data

    def read_chunk(self) -> bytes:
        """Return buffered bytes if any, else what the client sends next."""
        if self.pos < len(self.buffer):
            data, self.buffer, self.pos = self.buffer[self.pos:], b"", 0
            return data
        return self._recv()

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of the buffer (what followed the end of DATA)."""
        self.buffer, self.pos = data + self.buffer[self.pos:], 0

    def readline(self) -> bytes:
        """Return the next line without its LF; LineTooLong as soon as it is known to exceed LINE_LIMIT."""
        start = self.pos
        while True:
            nl = self.buffer.find(b"\n", start)
            if nl >= 0:
                if nl - self.pos > LINE_LIMIT:
                    raise LineTooLong()
                line, self.pos = self.buffer[self.pos:nl], nl + 1
                return line
            if len(self.buffer) - self.pos > LINE_LIMIT:  # no LF in time: do not wait for one
                raise LineTooLong()
            self.buffer, self.pos = self.buffer[self.pos:], 0
            start = len(self.buffer)
            self.buffer += self._recv()

    def can_tls(self) -> bool:
        """True when fd_in is a TCP socket (STARTTLS needs one; a pipe cannot carry it)."""
        if self._on_tcp is None:
            import _socket
            try:
                sock = _socket.socket(fileno=self.fd_in)
            except (OSError, ValueError):
                self._on_tcp = False
            else:
                self._on_tcp = sock.family in (_socket.AF_INET, _socket.AF_INET6)
                sock.detach()
        return self._on_tcp

    def close(self) -> None:
        """Close the TLS socket (a dup of fd_in), if any: a reused worker closes descriptors by number, so no
        object may keep one for the collector to close later, when the number may be another file's."""
        tls, self.tls = self.tls, None
        if tls is not None:
            tls.close()

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Drop whatever the client sent before the handshake, then talk TLS on the socket on fd_in."""
        import socket
        self.flush()
        self.buffer, self.pos = b"", 0
        sock = socket.socket(fileno=posix.dup(self.fd_in))
        try:  # TLS 1.3 sends its session tickets in a write of their own: with Nagle's algorithm on, the
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # next reply waits for a delayed ACK
        except OSError:
            pass
        sock.settimeout(self._wait())
        try:
            self.tls = context.wrap_socket(sock, server_side=True)
        except (OSError, ValueError):
            sock.close()
            raise Gone()
