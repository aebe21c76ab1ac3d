"""qmail-qmqpc: hand the message (fd 0) and envelope (fd 1) to the first reachable QMQP server (qmail-qmqpc(8))."""

import os
import time
import _socket

from pyqmail.lib.config import control
from pyqmail.lib.qmqp import hubmemory, qmqpservers
from pyqmail.lib.queue import envelope
from pyqmail.lib.util import fdio, netstring
from pyqmail.lib.util.exits import (BUG, CONFIG, CONN_FAILED, CONN_REJECTED, CONN_TIMEOUT, CUSTOM, CUSTOM_MAX,
                                    ENVELOPE_FORMAT, Exit, HOME, NETWORK, NOMEM, PERM_REFUSED, QUEUED, READ_ERROR,
                                    TEMP_REFUSED, WRITE_ERROR)
from pyqmail.lib.util.program import main

# Like qmail-queue, no diagnostics on fd 2: under inetd a caller's fd 2 can be the SMTP client's socket.

CONNECT_TIMEOUT = 10
IO_TIMEOUT = 60
DEADLINE = 3600  # control/timeoutqmqpc's default: qmail-qmqpd's own whole-session alarm
MEMORY_FILE = "lock/qmqpto"
MEMORY_SPOOL = 1 << 20  # larger messages go to an unlinked temporary file, not into memory
ENVELOPE_MAX = 16 << 20
REPLY_MAX = 1 << 16  # qmail skips junk before the verdict letter forever; we give up after this
CHUNK = 65536
VERDICTS = {0x4B: QUEUED, 0x5A: TEMP_REFUSED, 0x44: PERM_REFUSED}  # K, Z, D


class Spool:
    """The message, in memory up to MEMORY_SPOOL bytes and in a temporary file beyond."""

    def __init__(self):
        self.parts, self.size, self.file = [], 0, None

    def add(self, data):
        """Append message bytes, moving everything to a temporary file once memory's share is used."""
        self.size += len(data)
        if self.file is None:
            self.parts.append(data)
            if self.size <= MEMORY_SPOOL:
                return
            import tempfile
            data, self.parts = b"".join(self.parts), None
            try:
                self.file = tempfile.TemporaryFile()
            except OSError:
                raise Exit(WRITE_ERROR)
        try:
            self.file.write(data)
        except OSError:
            raise Exit(WRITE_ERROR)

    def chunks(self):
        """Yield the message back in pieces."""
        if self.file is None:
            yield b"".join(self.parts)
            return
        try:
            self.file.flush()
            self.file.seek(0)
            for data in iter(lambda: self.file.read(CHUNK), b""):
                yield data
        except OSError:
            raise Exit(READ_ERROR)


class BoundedStream(fdio.FdStream):
    """fd 1 for envelope.read, refusing to hold more than ENVELOPE_MAX bytes of envelope."""

    def __init__(self, fd, budget):
        super().__init__(fd)
        self.budget = budget

    def read(self, n):
        """Read up to n bytes while the budget lasts."""
        data = super().read(n)
        self.budget -= len(data)
        if self.budget < 0:
            raise Exit(NOMEM)
        return data


def read_envelope():
    """Return (sender, recipients) from fd 1; EOF inside the envelope is a format error, as in qmail-qmqpc."""
    try:
        return envelope.read(BoundedStream(1, ENVELOPE_MAX))
    except envelope.EnvelopeError as e:
        raise Exit(ENVELOPE_FORMAT if e.code == READ_ERROR else e.code)


def read_servers():
    """Return the usable servers of control/qmqpservers; missing or unreadable → exit 55."""
    try:
        data = control.read_file("qmqpservers")  # bounded, and never waiting on a FIFO
    except OSError:
        raise Exit(CONFIG)
    if data is None:
        raise Exit(CONFIG)
    return qmqpservers.parse(data)


def timeout(name, default):
    """Return a timeout in seconds; the environment override exists for the test suite only."""
    try:
        value = float(os.environ.get(name) or default)
    except ValueError:
        return default
    return value if 0 < value < 86400 else default  # 0 would make the socket non-blocking


def connect(host, port, seconds):
    """Return a connected socket, or an exit code to remember (72 timeout, 73 refused, 56 no socket)."""
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    try:
        sock = _socket.socket(family, _socket.SOCK_STREAM)
    except OSError:
        return None, NETWORK  # e.g. no IPv6 on this host: the next server may still work
    sock.settimeout(seconds)
    try:
        sock.connect((host, port))
    except TimeoutError:
        sock.close()
        return None, CONN_TIMEOUT
    except OSError:
        sock.close()
        return None, CONN_REJECTED
    return sock, None


def request_chunks(spool, sender, recipients):
    """Yield the QMQP request: one netstring around netstring(message), netstring(sender), netstring(rcpt)…"""
    addresses = b"".join([netstring.encode(sender)] + [netstring.encode(r) for r in recipients])
    if spool.file is None:
        yield netstring.encode(netstring.encode(b"".join(spool.chunks())) + addresses)
        return
    prefix = b"%d:" % spool.size  # too big to copy into one netstring.encode: frame it piecewise
    yield b"%d:%s" % (len(prefix) + spool.size + 1 + len(addresses), prefix)
    for data in spool.chunks():
        yield data
    yield b"," + addresses + b","


class Deadline:
    """The whole request's deadline: each connect, read and write gets the smaller of its own timeout and
    what is left."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        """Return the seconds left (may be 0 or less)."""
        return self.end - time.monotonic()

    def bound(self, sock, seconds):
        """Set sock's timeout for the next operation; raise TimeoutError once the deadline has passed."""
        left = self.left()
        if left <= 0:
            raise TimeoutError("whole-request deadline")
        sock.settimeout(min(seconds, left))


def read_verdict(sock, deadline, io_timeout):
    """Skip to the first K, Z or D of the reply; return (letter, bytes before it, bytes from it on)."""
    seen = b""
    while len(seen) < REPLY_MAX:
        deadline.bound(sock, io_timeout)
        data = sock.recv(4096)
        if not data:
            raise OSError("connection closed before a reply")
        for i, byte in enumerate(data):
            if byte in VERDICTS:
                return byte, seen + data[:i], data[i:]
        seen += data
    raise OSError("no K, Z or D in the reply")


def custom_text(sock, before, rest):
    """Return the whole reply text (letter first, control bytes replaced) for fd 6, or b"" if unreadable."""
    if before[-1:] != b":":
        return b""
    try:
        length = min(netstring.parse_length(before[:-1], REPLY_MAX), CUSTOM_MAX)
        while len(rest) < length:
            data = sock.recv(CUSTOM_MAX)
            if not data:
                return b""
            rest += data
    except (OSError, netstring.NetstringError):
        return b""
    return bytes(b if 32 <= b < 127 else 63 for b in rest[:length])  # the text may end up in an SMTP reply


def report_custom(text):
    """Write the hub's reply to fd 6 for callers that understand exit 82; return False if fd 6 is unusable."""
    if len(text) <= 2:
        return False
    try:
        os.write(6, text)
    except OSError:
        return False
    return True


def refused_early(sock):
    """True if the server closed, or answered Z, before the request was sent: it cannot have the message."""
    sock.setblocking(False)  # with a timeout set, recv would wait for data before trying
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        return False
    except OSError:
        return True
    for byte in data:
        if byte in VERDICTS:
            return byte == 0x5A
    return not data


def deliver(sock, spool, sender, recipients, deadline, io_timeout, spread):
    """Send the request and return the exit code for the server's verdict; I/O failure → 74. With spread,
    return None (try the next server) when the failure came before the request's last byte was sent."""
    sent = False
    try:
        if spread and refused_early(sock):
            return None
        for data in request_chunks(spool, sender, recipients):
            view = memoryview(data)
            for start in range(0, len(view), CHUNK):  # one timeout per write, as qmail's timeoutwrite
                deadline.bound(sock, io_timeout)
                sock.sendall(view[start:start + CHUNK])
        sent = True  # from here on the server may have queued the message: its answer, or 74
        letter, before, rest = read_verdict(sock, deadline, io_timeout)
    except OSError:
        if spread and not sent:
            return None
        raise Exit(CONN_FAILED)
    code = VERDICTS[letter]
    if code != QUEUED and os.environ.get("QMQPC_CUSTOMERROR"):
        if report_custom(custom_text(sock, before, rest)):
            return CUSTOM
    return code


def body(argv):
    """Run qmail-qmqpc; running out of memory is qmail's exit 51, not an internal bug."""
    try:
        return qmqpc()
    except MemoryError:
        raise Exit(NOMEM)


def read_controls():
    """Return (servers, spread, deadline seconds); an unreadable control is exit 55."""
    servers = read_servers()
    try:
        spread = control.readline("qmqpspread") == b"1"
        deadline = control.readint("timeoutqmqpc", DEADLINE) or DEADLINE
    except OSError:
        raise Exit(CONFIG)
    return servers, spread, deadline


def qmqpc():
    """Read controls, message and envelope, then try the servers: in file order, as qmail, or with
    control/qmqpspread from a random one, recently failed ones last."""
    try:
        os.chdir(control.qmailhome())
    except OSError:
        raise Exit(HOME)
    servers, spread, seconds = read_controls()
    spool = Spool()
    for data in fdio.chunks(0):
        spool.add(data)
    sender, recipients = read_envelope()
    deadline = Deadline(seconds)
    connect_timeout = timeout("QMQPC_TIMEOUTCONNECT", CONNECT_TIMEOUT)
    io_timeout = timeout("QMQPC_TIMEOUTREMOTE", IO_TIMEOUT)
    memory = None
    if spread and servers:
        memory = hubmemory.Memory(MEMORY_FILE)
        recent = memory.recent(int(time.time()))
        servers = hubmemory.order(servers, int.from_bytes(os.urandom(4), "big"), recent)
    last = CONFIG
    for host, port in servers:
        left = deadline.left()
        if left <= 0:
            return CONN_TIMEOUT  # the whole-request deadline passed before this server's turn
        sock, failure = connect(host, port, min(connect_timeout, left))
        if sock is None:
            last = failure
            if memory is not None:
                memory.note(host, port, hubmemory.TIMED_OUT if failure == CONN_TIMEOUT else hubmemory.REFUSED,
                            int(time.time()))
            continue
        try:
            code = deliver(sock, spool, sender, recipients, deadline, io_timeout, memory is not None)
        except Exit as e:
            if memory is not None and e.code == CONN_FAILED:
                memory.note(host, port, hubmemory.BROKEN, int(time.time()))
            raise
        finally:
            sock.close()
        if memory is not None and code in (None, TEMP_REFUSED, QUEUED):
            kind = hubmemory.REFUSED if code is None else (hubmemory.ANSWERED_Z if code == TEMP_REFUSED else 0)
            memory.note(host, port, kind, int(time.time()))
        if code is None:
            last = CONN_REJECTED
            continue
        return code
    return last


def run():
    """Console-script entry point."""
    main("qmail-qmqpc", body, crash_code=BUG)
