"""qmail-smtpd's connection: buffered replies flushed before each read, timed reads, bounded lines, STARTTLS."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)
import select
import struct
import time

from pyqmail.lib.util.fdio import write_all

MYPY = False
if MYPY:  # typing only: never imported at run time
    import _socket
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
_TIMEVAL = struct.Struct("@ll")  # struct timeval (Linux, the BSDs: two longs)
LINE_LIMIT = 4096  # longest command line before its LF, CR included (qmail has none; an address may be 900 bytes)


class Gone(Exception):
    """The client went away (EOF, reset, a failed write): qmail-smtpd exits 1 without a word."""


class LineTooLong(Exception):
    """A command line over LINE_LIMIT: qmail-smtpd answers 500 and hangs up (its rest is never read)."""


def _close_notify(tls: ssl.SSLObject) -> None:
    """Have the TLS session write its close_notify alert; the client's own is not waited for."""
    import ssl
    try:
        tls.unwrap()
    except (ssl.SSLError, ValueError):  # SSLWantReadError: it would wait for the client's close_notify
        pass


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
        self.tls: ssl.SSLObject | None = None  # the TLS session after STARTTLS, over the two buffers below
        self._tls_in: ssl.MemoryBIO  # bytes read from the client, not yet decrypted
        self._tls_out: ssl.MemoryBIO  # encrypted bytes not yet sent
        self._on_tcp: bool | None = None  # unknown until asked: is fd_in a TCP socket?
        self.poll_in = select.poll()
        self.poll_in.register(fd_in, select.POLLIN)
        self._socks: dict[int, _socket.socket] = {}  # fd_in, fd_out as socket objects, for options (never closed)
        self._timeouts: list[float] = [-1.0, -1.0]  # SO_RCVTIMEO on fd_in, SO_SNDTIMEO on fd_out; 0.0: no socket

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

    def flush(self, last: bool = False) -> None:
        """Send the queued replies (encrypted after STARTTLS); a client that does not read within the timeout is
        gone (on a socket, where SO_SNDTIMEO bounds each write; on a pipe, one that leaves no room for them
        within the timeout: once there is, fdio.write_all writes them all). last: the session ends here, so
        a TLS session's close_notify follows the replies, in the same write (RFC 8446 6.1)."""
        if not self.pending and not (last and self.tls is not None):
            return
        data, self.pending = b"".join(self.pending), []
        if self.tls is not None:
            try:
                done = self.tls.write(data) if data else 0
                while done < len(data):  # never with memory buffers, but the ssl module allows partial writes
                    done += self.tls.write(memoryview(data)[done:])
            except OSError:  # ssl.SSLError: the TLS session is broken
                raise Gone()
            if last:
                _close_notify(self.tls)
            data = self._tls_out.read()
        self._send(data)

    def _send(self, data: bytes) -> None:
        """Write data to fd_out within the timeout, or Gone."""
        if not self._socket_timeout(1, self._wait()):
            poller = select.poll()
            poller.register(self.fd_out, select.POLLOUT)
            if not poller.poll(int(self._wait() * 1000) + 1):
                raise Gone()
        try:
            write_all(self.fd_out, data)
        except OSError:  # with SO_SNDTIMEO, EAGAIN: no room for a byte within the timeout
            raise Gone()

    def _socket_timeout(self, which: int, wait: float) -> bool:
        """Have the kernel time out reads on fd_in (which 0) or writes on fd_out (1) after wait seconds, so that
        one read(2) or write(2) replaces poll(2) and the call; False when that descriptor is no socket (a pipe:
        poll then). The option is set again only when the wait changes (a session deadline)."""
        if self._timeouts[which] == wait:
            return True
        if not self._timeouts[which]:
            return False
        import _socket
        fd = self.fd_out if which else self.fd_in
        sock = self._socks.get(fd)
        if sock is None:
            try:  # family from getsockname(2), the one call made; the type given: no getsockopt
                sock = self._socks[fd] = _socket.socket(-1, _socket.SOCK_STREAM, 0, fd)
            except (OSError, ValueError):
                self._timeouts[which] = 0.0
                return False
        seconds = int(wait)
        micro = int((wait - seconds) * 1e6) or (0 if seconds else 1)  # a zero timeval would mean no timeout
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO if which else _socket.SO_RCVTIMEO,
                            _TIMEVAL.pack(seconds, micro))
        except OSError:
            self._timeouts[which] = 0.0
            return False
        self._timeouts[which] = wait
        return True

    def _recv(self) -> bytes:
        """Flush, then return the next bytes from the client (decrypted after STARTTLS); TimeoutError on
        silence, Gone at EOF."""
        self.flush()
        if self.tls is not None:
            return self._recv_tls(self.tls)
        return self._read()

    def _read(self) -> bytes:
        """Return the next bytes on fd_in, as they come (up to CHUNK); TimeoutError on silence, Gone at EOF."""
        wait = self._wait()
        timed = self._socket_timeout(0, wait)
        if not timed and not self.poll_in.poll(int(wait * 1000) + 1):
            raise TimeoutError("read timeout")
        started = time.monotonic()
        try:
            data = posix.read(self.fd_in, CHUNK)
        except BlockingIOError:  # SO_RCVTIMEO ran out; or, at once, a non-blocking descriptor: poll from now on
            if not timed or time.monotonic() - started >= wait * 0.9:
                raise TimeoutError("read timeout")
            self._timeouts = [0.0, 0.0]
            return self._read()
        except OSError:
            raise Gone()
        if not data:
            raise Gone()
        return data

    def _recv_tls(self, tls: ssl.SSLObject) -> bytes:
        """Return decrypted bytes, reading the socket only when no whole record is held (one read(2) takes
        whatever the client sent, where the ssl socket reads each record's header and body apart)."""
        import ssl
        while True:
            if self._tls_in.pending or tls.pending():
                try:
                    data = tls.read(CHUNK)
                except ssl.SSLWantReadError:  # a part of a record, or a record with no data (a key update)
                    pass
                except (ssl.SSLError, ValueError):
                    raise Gone()
                else:
                    if not data:  # the client's close_notify
                        raise Gone()
                    return data
            self._tls_fill()

    def _tls_fill(self) -> None:
        """Send what the TLS layer has to say (its handshake, tickets, alerts), then feed it the client's next
        bytes."""
        if self._tls_out.pending:
            self._send(self._tls_out.read())
        self._tls_in.write(self._read())

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
        """Forget the TLS state, if any, and let go of fd_in's socket object without closing fd_in: a reused
        worker closes descriptors by number, so no object may keep one for the collector to close later,
        when the number may be another file's."""
        self.tls = None
        socks, self._socks = self._socks, {}
        for sock in socks.values():
            sock.detach()

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Drop whatever the client sent before the handshake, then talk TLS on fd_in and fd_out (the ssl
        object works on memory buffers: this class does the reads and writes, with its timeouts)."""
        import ssl
        self.flush()
        self.buffer, self.pos = b"", 0
        self._nodelay()
        self._tls_in, self._tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(self._tls_in, self._tls_out, server_side=True)
        try:
            self._tls_in.write(self._read())  # the ClientHello: the handshake has nothing to do before it
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._tls_fill()
        except TimeoutError:  # no reply fits mid-handshake, in plaintext or not
            raise Gone()
        except (ssl.SSLError, ValueError):
            if self._tls_out.pending:  # the alert telling the client why
                try:
                    self._send(self._tls_out.read())
                except (Gone, TimeoutError):
                    pass
            raise Gone()
        self.tls = tls  # the session tickets (TLS 1.3) stay in _tls_out, sent before the next read

    def _nodelay(self) -> None:
        """Set TCP_NODELAY on fd_in's socket: with Nagle's algorithm, a write following one the client has
        not yet acknowledged (TLS 1.3's session ticket, then the next reply) waits for its delayed ACK."""
        import _socket
        try:
            sock = self._socks.get(self.fd_in) or self._socks.setdefault(
                self.fd_in, _socket.socket(-1, _socket.SOCK_STREAM, 0, self.fd_in))
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except (OSError, ValueError):
            pass
