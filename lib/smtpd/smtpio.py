"""qmail-smtpd's connection: buffered replies flushed before each read, timed reads, bounded lines, STARTTLS."""

import posix  # not os: start-up cost (lib/config/control)
import select
import time

CHUNK = 65536
LINE_LIMIT = 4096  # longest command line before its LF, CR included (qmail has none; an address may be 900 bytes)


class Gone(Exception):
    """The client went away (EOF, reset, a failed write): qmail-smtpd exits 1 without a word."""


class LineTooLong(Exception):
    """A command line over LINE_LIMIT: qmail-smtpd answers 500 and hangs up (its rest is never read)."""


class SmtpIO:
    """Reads commands and DATA from fd_in, writes replies to fd_out; per-read timeout and a session deadline."""

    def __init__(self, fd_in=0, fd_out=1, timeout=1200, deadline=0):
        self.fd_in, self.fd_out = fd_in, fd_out
        self.timeout = timeout
        self.deadline = time.monotonic() + deadline if deadline else None
        self.data_deadline = None  # DATA's own, extended by each byte received (control/smtpminrate)
        self.buffer = b""
        self.pos = 0  # bytes of buffer before pos have been consumed
        self.pending = []
        self.tls = None  # the ssl socket after STARTTLS
        self._socket = None  # unknown until asked: is fd_in a TCP socket?
        self.poll_in = select.poll()
        self.poll_in.register(fd_in, select.POLLIN)

    def out(self, reply):
        """Queue reply bytes; they are sent before the next read (as qmail's substdio flushes)."""
        self.pending.append(reply)

    def _wait(self):
        """Return the seconds a read or write may wait: the timeout, cut by the session deadline."""
        wait = self.timeout
        for deadline in (self.deadline, self.data_deadline):
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
        if wait <= 0:
            raise TimeoutError("session deadline")
        return wait

    def flush(self):
        """Send the queued replies; a client that does not read within the timeout is gone."""
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
        view = memoryview(data)
        poller = select.poll()
        poller.register(self.fd_out, select.POLLOUT)
        while view:
            if not poller.poll(int(self._wait() * 1000) + 1):
                raise Gone()
            try:
                view = view[posix.write(self.fd_out, view):]
            except OSError:
                raise Gone()

    def _recv(self):
        """Flush, then return the next bytes from the client; TimeoutError on silence, Gone at EOF."""
        self.flush()
        if self.tls is not None:
            return self._recv_tls()
        if not self.poll_in.poll(int(self._wait() * 1000) + 1):
            raise TimeoutError("read timeout")
        try:
            data = posix.read(self.fd_in, CHUNK)
        except OSError:
            raise Gone()
        if not data:
            raise Gone()
        return data

    def _recv_tls(self):
        """Read decrypted bytes (the ssl layer may hold some that poll(2) cannot see)."""
        self.tls.settimeout(self._wait())
        try:
            data = self.tls.recv(CHUNK)
        except TimeoutError:
            raise
        except OSError:
            raise Gone()
        if not data:
            raise Gone()
        return data

    def read_chunk(self):
        """Return buffered bytes if any, else what the client sends next."""
        if self.pos < len(self.buffer):
            data, self.buffer, self.pos = self.buffer[self.pos:], b"", 0
            return data
        return self._recv()

    def unread(self, data):
        """Put bytes back in front of the buffer (what followed the end of DATA)."""
        self.buffer, self.pos = data + self.buffer[self.pos:], 0

    def readline(self):
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

    def can_tls(self):
        """True when fd_in is a TCP socket (STARTTLS needs one; a pipe cannot carry it)."""
        if self._socket is None:
            import _socket
            try:
                sock = _socket.socket(fileno=self.fd_in)
            except (OSError, ValueError):
                self._socket = False
            else:
                self._socket = sock.family in (_socket.AF_INET, _socket.AF_INET6)
                sock.detach()
        return self._socket

    def start_tls(self, context):
        """Drop whatever the client sent before the handshake, then talk TLS on the socket on fd_in."""
        import socket
        self.flush()
        self.buffer, self.pos = b"", 0
        sock = socket.socket(fileno=posix.dup(self.fd_in))
        sock.settimeout(self._wait())
        try:
            self.tls = context.wrap_socket(sock, server_side=True)
        except (OSError, ValueError):
            sock.close()
            raise Gone()
