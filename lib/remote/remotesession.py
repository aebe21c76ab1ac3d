"""qmail-remote's SMTP dialogue on a connected socket: qmail's steps, texts and reports (see qmail-remote(8))."""

from __future__ import annotations

import os
import time

from pyqmail.lib.remote import smtpclient
from pyqmail.lib.rfc822.quote import quote2

MYPY = False
if MYPY:  # typing only: never imported at run time
    import ssl
    from collections.abc import Callable
    from typing import NoReturn

    from _socket import socket as RawSocket
    from pyqmail.lib.remote.remotefeatures import Features
    from pyqmail.lib.remote.smtpclient import Reply

    Keywords = dict[bytes, list[bytes]]

CHUNK = 65536


class Finish(Exception):
    """The delivery is over: report is the message report (K/Z/D text, without its NUL)."""

    def __init__(self, report: bytes) -> None:
        super().__init__(report)
        self.report = report


class Fallback(Exception):
    """A cached connection failed before any recipient was accepted: deliver over a fresh one instead."""


class Dropped(Exception):
    """The connection died: EOF, reset, timeout, or a reply over our bounds."""


class Connection:
    """A socket with deadlines, a bounded reply reader and qmail's `dropped` semantics.

    Each write and each reply must complete within `timeout` seconds (a reply: from when we start waiting for it,
    after its command was sent); the whole session within `budget` seconds of the connection plus the message's
    allowance (smtpclient.data_allowance of its `size`, or of the bytes read, if more). Missing a deadline is a
    dropped connection.
    """

    def __init__(self, sock: RawSocket, timeout: int, budget: float | None = None, size: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sock = sock
        self.timeout = max(timeout, 1)  # 0 would make the socket non-blocking
        self.clock = clock
        if budget is None:
            budget = smtpclient.session_budget(timeout, 1)
        self.deadline = clock() + budget + smtpclient.data_allowance(size)
        self.allowed = size  # message bytes the deadline allows for
        self.sock.settimeout(self.timeout)
        self.leftover = b""

    def message_read(self, total: int) -> None:
        """The message has reached total bytes: move the session's deadline for those not yet allowed for."""
        if total > self.allowed:
            self.deadline += smtpclient.data_allowance(total - self.allowed)
            self.allowed = total

    def limit(self, step_deadline: float) -> None:
        """Make the next socket operation end by step_deadline and the session's deadline; none left: dropped."""
        left = min(step_deadline, self.deadline) - self.clock()
        if left <= 0:
            raise Dropped()
        self.sock.settimeout(left)  # recv returns what came; sendall, TLS reads and handshakes count it in total

    def send(self, data: bytes) -> None:
        """Send all of data within the step timeout; any failure (timeout included) is a dropped connection."""
        self.limit(self.clock() + self.timeout)
        try:
            self.sock.sendall(data)
        except OSError:
            raise Dropped()

    def reply(self) -> Reply:
        """Read one reply by its deadline; EOF, errors, lateness and over-long replies are a dropped connection."""
        parser = smtpclient.ReplyParser()
        data, self.leftover = self.leftover, b""
        deadline = self.clock() + self.timeout
        try:
            while True:
                done = parser.feed(data)
                if done is not None:
                    reply, self.leftover = done
                    return reply
                self.limit(deadline)
                data = self.sock.recv(CHUNK)
                if not data:
                    raise Dropped()
        except (OSError, smtpclient.ReplyTooLong):
            raise Dropped()

    def command(self, line: bytes) -> Reply:
        """Send one command line (CRLF added) and return its reply."""
        self.in_turn()
        self.send(line + b"\r\n")
        return self.reply()

    def in_turn(self) -> None:
        """Before we speak: bytes the server sent beyond its last reply were said out of turn (we never pipeline),
        and would be read as the next reply; the connection counts as dropped."""
        if self.leftover:
            raise Dropped()

    def start_tls(self, context: ssl.SSLContext, server_name: str | None) -> None:
        """Wrap the socket in TLS; plain-text bytes the server sent ahead are thrown away (CVE-2011-0411). A TLS
        error or a reset in the handshake is raised as it is (the handshake failed); a timeout is Dropped."""
        import socket
        self.leftover = b""
        if not isinstance(self.sock, socket.socket):
            self.sock = socket.socket(fileno=self.sock.detach())
        self.limit(self.clock() + self.timeout)  # the handshake is one step
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=server_name or None)
        except OSError as e:
            import ssl
            if isinstance(e, (ssl.SSLError, ConnectionError)):
                raise
            raise Dropped()

    def close(self) -> None:
        """Close the socket, ignoring errors."""
        try:
            self.sock.close()
        except OSError:
            pass


class Session:
    """One delivery attempt to one connected address; run() ends by raising Finish."""

    def __init__(self, conn: Connection, ip: str, helohost: bytes, sender: bytes, recipients: list[bytes],
                 out: list[bytes], features: Features, reused: Keywords | None = None,
                 park: Callable[[Session], bool] | None = None) -> None:
        self.conn = conn
        self.ip = ip.encode()
        self.helohost = helohost
        self.sender = sender
        self.recipients = recipients
        self.out = out  # a list collecting recipient reports (each with its NUL)
        self.features = features  # a remotefeatures.Features: STARTTLS, AUTH, SIZE, 8BITMIME
        self.critical = False
        self.last: Reply | None = None
        self.reused = reused is not None  # a cached connection: no greeting, no EHLO; these keywords
        self.keywords: Keywords = reused or {}
        self.park = park  # park(session) hands the connection to qmail-rspawn's cache; True if it took it
        self.accepted = False  # a recipient was accepted

    def dropped(self) -> Finish:
        """Return the Finish for a connection that died (qmail's dropped)."""
        dup = b"Possible duplicate! " if self.critical else b""
        return Finish(b"ZConnected to " + self.ip + b" but connection died. " + dup + b"(#4.4.2)\n")

    def quit(self, prepend: bytes, append: bytes) -> NoReturn:
        """Send QUIT without waiting and finish with prepend + ip + append + `.` and the remote text."""
        try:
            self.conn.send(b"QUIT\r\n")
        except Dropped:
            pass
        raise self.finish(prepend, append)

    def finish(self, prepend: bytes, append: bytes) -> Finish:
        """Return the Finish with prepend + ip + append + `.` and the remote text."""
        text = self.last.text if self.last is not None else b""
        return Finish(prepend + self.ip + append + b".\n" + smtpclient.remote_said(text))

    def end(self, prepend: bytes, append: bytes) -> NoReturn:
        """After the final reply: hand the connection to the cache if it is clean and wanted, else QUIT."""
        clean = not self.features.tls and not self.conn.leftover and self.last is not None and self.last.code != 421
        if clean and self.park is not None and self.park(self):
            raise self.finish(prepend, append)
        self.quit(prepend, append)

    def exchange(self, line: bytes | None = None) -> Reply:
        """Send line (if any), read the reply, remember it for the report; return it."""
        reply = self.conn.command(line) if line is not None else self.conn.reply()
        self.last = reply
        return reply

    def code(self, line: bytes | None = None) -> int:
        """Send line (if any), read the reply, remember it for the report; return its code."""
        return self.exchange(line).code

    def run(self, message_fd: int) -> NoReturn:
        """Talk SMTP from the greeting to the final reply; always raises Finish."""
        try:
            self.dialogue(message_fd)
        except Dropped:
            if self.reused and not self.accepted:
                raise Fallback()
            raise self.dropped()

    def hello(self) -> dict[bytes, list[bytes]]:
        """Greet with EHLO (HELO if EHLO is refused); return the EHLO keywords ({} after HELO)."""
        reply = self.exchange(b"EHLO " + self.helohost)
        if reply.code == 250:
            return smtpclient.ehlo_keywords(reply)
        if self.code(b"HELO " + self.helohost) != 250:
            self.quit(b"ZConnected to ", b" but my name was rejected")
        return {}

    def dialogue(self, message_fd: int) -> NoReturn:
        """qmail's smtp(): greeting, HELO, MAIL, RCPT per recipient, DATA, message, final reply."""
        if not self.reused:
            if self.code() != 220:
                self.quit(b"ZConnected to ", b" but greeting failed")
            self.keywords = self.features.negotiate(self, self.hello())
        params = self.features.mail_parameters(self.keywords, message_fd)
        code = smtpclient.step_code(self.code(b"MAIL FROM:<" + quote2(self.sender) + b">" + params), 2)
        if code >= 400 and self.reused:
            raise Fallback()
        if code >= 500:
            self.quit(b"DConnected to ", b" but sender was rejected")
        if code >= 400:
            self.quit(b"ZConnected to ", b" but sender was rejected")
        for recipient in self.recipients:
            if smtpclient.has_line_break(recipient):
                self.out.append(b"hSorry, an address with a CR or LF in it can't be sent in SMTP. (#5.1.3)\n\0")
                continue
            reply = self.exchange(b"RCPT TO:<" + quote2(recipient) + b">")
            rcpt = smtpclient.step_code(reply.code, 2)
            if rcpt == 421 and self.reused and not self.accepted:
                raise Fallback()
            if rcpt >= 400:
                letter = b"h" if rcpt >= 500 else b"s"
                self.out.append(letter + self.ip + b" does not like recipient.\n"
                                + smtpclient.remote_said(reply.text) + b"\0")
            else:
                self.out.append(b"r\0")
                self.accepted = True
        if not self.accepted:
            self.last = None
            self.quit(b"DGiving up on ", b"")
        code = smtpclient.step_code(self.code(b"DATA"), 3)
        if code >= 500:
            self.quit(b"D", b" failed on DATA command")
        if code >= 400:
            self.quit(b"Z", b" failed on DATA command")
        self.conn.in_turn()
        self.blast(message_fd)
        code = smtpclient.step_code(self.code(), 2)
        self.critical = False
        if code >= 500:
            self.end(b"D", b" failed after I sent the message")
        if code >= 400:
            self.end(b"Z", b" failed after I sent the message")
        self.end(b"K", b" accepted message")

    def blast(self, fd: int) -> None:
        """Send the message from fd, transparent (smtpclient.DataEncoder), then `.`; a read error is temporary."""
        encoder = smtpclient.DataEncoder()
        pending = b""
        total = 0
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:
                raise Finish(b"ZUnable to read message. (#4.3.0)\n")
            if not data:
                break
            total += len(data)
            self.conn.message_read(total)  # a pipe has no size: its bytes are allowed for as they come
            pending += encoder.feed(data)
            if len(pending) >= CHUNK:
                self.conn.send(pending)
                pending = b""
        self.critical = True
        self.conn.send(pending + encoder.end())
