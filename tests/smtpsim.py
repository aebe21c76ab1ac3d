"""A destination simulator: SMTP sinks on loopback addresses with behaviours, recording what arrives.

A `Sink` listens on one 127.0.0.x address and speaks enough ESMTP for qmail-remote, smtplib and smtp-source
(EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT; PIPELINING and 8BITMIME offered; no TLS).
Its `Behaviour` says how it misbehaves; it records every transaction, its connections and their concurrency (a
session counts as open until its QUIT or, without one, its close: a client need not wait for the 221).
A `Simulator` runs N sinks on distinct addresses (127.0.1.1, 127.0.1.2, ...) in one selector loop in one
thread and writes the smtproutes lines that send each domain to its sink.

Everything a client feeds is bounded (`Limits`): a command line, the input and output buffers, a message,
the recipients of a transaction, the connections of a sink, the records kept, and the length of a session.

Run as a program (scripts/smtpsim): `python tests/smtpsim.py --spec spec.json --routes out/smtproutes
[--records out/records.json]` serves until SIGTERM or SIGINT, then writes the records as JSON.
"""

from __future__ import annotations

import argparse
import fnmatch
import heapq
import itertools
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

Matcher = Union[str, Callable[[str], bool]]


@dataclass(frozen=True)
class Behaviour:
    """How a sink behaves; combine two with `+` (the right side's non-default settings win)."""

    greeting_delay: float = 0.0
    mute: bool = False
    max_concurrent: Optional[int] = None
    rcpt_codes: Tuple[Tuple[Matcher, int], ...] = ()
    drop_after_dot: bool = False
    data_delay: float = 0.0
    idle_close: float = 0.0  # close a connection idle this long after a transaction (0: never)
    transactions_per_connection: int = 0  # the MAIL after this many transactions gets 421 and a close (0: any)

    def __add__(self, other: "Behaviour") -> "Behaviour":
        """Return this behaviour with other's non-default settings on top."""
        changes = {name: getattr(other, name) for name in self.__dataclass_fields__
                   if getattr(other, name) != getattr(Behaviour(), name)}
        if other.rcpt_codes and self.rcpt_codes:
            changes["rcpt_codes"] = other.rcpt_codes + self.rcpt_codes
        return replace(self, **changes)

    def code_for(self, recipient: str) -> Optional[int]:
        """Return the refusal code for a recipient, or None to accept it."""
        for matcher, code in self.rcpt_codes:
            if callable(matcher):
                if matcher(recipient):
                    return code
            elif "*" in matcher or "?" in matcher:
                if fnmatch.fnmatchcase(recipient.lower(), matcher.lower()):
                    return code
            elif recipient.lower() == matcher.lower():
                return code
        return None

    def describe(self) -> Dict[str, Any]:
        """Return the behaviour as JSON-able settings (a predicate shows as its name)."""
        out: Dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value != getattr(Behaviour(), name):
                out[name] = value
        if self.rcpt_codes:
            out["rcpt_codes"] = {(m if isinstance(m, str) else getattr(m, "__name__", "predicate")): c
                                 for m, c in self.rcpt_codes}
        return out


def healthy() -> Behaviour:
    """Greet at once, accept everything."""
    return Behaviour()


def slow_greeting(seconds: float) -> Behaviour:
    """Wait seconds before the greeting."""
    return Behaviour(greeting_delay=float(seconds))


def mute() -> Behaviour:
    """Accept the TCP connection and never say anything."""
    return Behaviour(mute=True)


def too_many(k: int) -> Behaviour:
    """Greet with 421 a connection that arrives while k are being served."""
    return Behaviour(max_concurrent=int(k))


def rcpt_codes(codes: Dict[Matcher, int]) -> Behaviour:
    """Refuse RCPTs: {address, pattern with * or ?, or predicate: 4xx/5xx code}; the first match wins."""
    for code in codes.values():
        if not 400 <= int(code) <= 599:
            raise ValueError("an RCPT refusal code is 4xx or 5xx: %r" % code)
    return Behaviour(rcpt_codes=tuple((m, int(c)) for m, c in codes.items()))


def drop_after_dot() -> Behaviour:
    """Close the connection after the final dot without replying."""
    return Behaviour(drop_after_dot=True)


def slow_data(seconds: float) -> Behaviour:
    """Wait seconds before the reply to the final dot."""
    return Behaviour(data_delay=float(seconds))


def idle_close(seconds: float) -> Behaviour:
    """Close a connection (no reply) that stays idle seconds after a transaction."""
    return Behaviour(idle_close=float(seconds))


def transactions_per_connection(k: int) -> Behaviour:
    """Answer 421 and close when a connection's MAIL would start transaction k + 1."""
    return Behaviour(transactions_per_connection=int(k))


def behaviour_from_spec(spec: Union[None, str, Dict[str, Any]]) -> Behaviour:
    """Build a behaviour from JSON: "healthy", "mute", "drop_after_dot" or {"slow_greeting": 2, "too_many": 3, ...}."""
    if spec is None:
        return healthy()
    if isinstance(spec, str):
        spec = {spec: True}
    result = healthy()
    makers: Dict[str, Callable[[Any], Behaviour]] = {
        "healthy": lambda v: healthy(), "mute": lambda v: mute() if v else healthy(),
        "drop_after_dot": lambda v: drop_after_dot() if v else healthy(),
        "slow_greeting": slow_greeting, "too_many": too_many, "slow_data": slow_data, "rcpt_codes": rcpt_codes,
        "idle_close": idle_close, "transactions_per_connection": transactions_per_connection}
    for name, value in spec.items():
        if name not in makers:
            raise ValueError("unknown behaviour: %s" % name)
        result = result + makers[name](value)
    return result


@dataclass(frozen=True)
class Limits:
    """The bounds on what a client can make a sink hold."""

    line: int = 4096  # a command line (RFC 5321 asks for 512)
    input: int = 256 * 1024  # bytes read and not yet handled
    output: int = 64 * 1024  # replies not yet sent: past this, input waits
    message: int = 64 * 1024 * 1024  # a message's bytes; more is refused with 552
    recipients: int = 10000  # per transaction; more get 452
    connections: int = 2000  # open at once per sink; more are closed at once
    session: float = 600.0  # seconds a connection may last
    records: int = 1000000  # transactions and timeline points kept per sink; counts go on past it


class DataReader:
    """The DATA phase: dot-unstuffing until the final dot, fed in any chunks."""

    def __init__(self, keep: bool, limit: int) -> None:
        """Start a message; keep the body only if keep, count bytes past limit without storing them."""
        self.keep = keep
        self.limit = limit
        self.size = 0
        self.body = bytearray()
        self.at_line_start = True
        self.pending = b""  # the last bytes of a line that could still be the final dot

    def feed(self, data: bytes) -> Tuple[bool, bytes]:
        """Take data; return (finished, the bytes after the final dot)."""
        buf = self.pending + data
        self.pending = b""
        pos = 0
        while pos < len(buf):
            if self.at_line_start:
                rest = buf[pos:pos + 3]
                if rest in (b".\r\n",) or rest[:2] == b".\n":
                    end = pos + (3 if rest == b".\r\n" else 2)
                    return True, buf[end:]
                if rest in (b".", b".\r"):
                    self.pending = buf[pos:]
                    return False, b""
                if rest[:1] == b".":
                    pos += 1
            newline = buf.find(b"\n", pos)
            end = len(buf) if newline < 0 else newline + 1
            self.add(buf[pos:end])
            self.at_line_start = newline >= 0
            pos = end
        return False, b""

    def add(self, piece: bytes) -> None:
        """Count a piece of the message and keep it while under the limit."""
        self.size += len(piece)
        if self.keep and self.size <= self.limit:
            self.body += piece

    @property
    def too_big(self) -> bool:
        """Whether the message passed the limit."""
        return self.size > self.limit


class Records:
    """What one sink saw; changed by the loop thread, read by others through snapshot()."""

    def __init__(self, limit: int) -> None:
        """Start empty, keeping at most limit transactions and timeline points."""
        self.limit = limit
        self.lock = threading.Lock()
        self.transactions: List[Dict[str, Any]] = []
        self.transaction_count = 0
        self.opened = 0
        self.closed = 0
        self.serving = 0
        self.max_concurrent = 0
        self.concurrency: List[Tuple[float, int]] = []
        self.refused_421 = 0
        self.rcpt_refused: List[Tuple[str, int]] = []
        self.dropped_after_dot = 0
        self.session_timeouts = 0
        self.over_limits = 0
        self.truncated = False
        self.quits = 0  # QUIT commands received
        self.idle_closed = 0  # connections closed by idle_close
        self.refused_by_count = 0  # MAILs answered 421 by transactions_per_connection
        self.serial = 0  # numbers the served connections, for transactions' "connection"

    def keep(self, items: List[Any], item: Any) -> None:
        """Append item unless the list is full (then note the truncation)."""
        if len(items) < self.limit:
            items.append(item)
        else:
            self.truncated = True

    def serve(self, delta: int) -> None:
        """Count a served connection opened (+1) or closed (-1), and note the concurrency on the timeline."""
        with self.lock:
            self.opened += delta > 0
            self.closed += delta < 0
            self.serving += delta
            self.max_concurrent = max(self.max_concurrent, self.serving)
            self.keep(self.concurrency, (time.time(), self.serving))

    def snapshot(self) -> Dict[str, Any]:
        """Return a JSON-able copy of the records."""
        with self.lock:
            transactions = [dict(t, recipients=list(t["recipients"])) for t in self.transactions]
            return {
                "transactions": transactions,
                "transaction_count": self.transaction_count,
                "recipients_per_transaction": [len(t["recipients"]) for t in transactions],
                "connections_opened": self.opened,
                "connections_closed": self.closed,
                "open_now": self.serving,
                "max_concurrent": self.max_concurrent,
                "concurrency": [list(p) for p in self.concurrency],
                "refused_421": self.refused_421,
                "rcpt_refused": [list(r) for r in self.rcpt_refused],
                "dropped_after_dot": self.dropped_after_dot,
                "session_timeouts": self.session_timeouts,
                "over_limits": self.over_limits,
                "truncated": self.truncated,
                "quits": self.quits,
                "idle_closed": self.idle_closed,
                "refused_by_count": self.refused_by_count,
            }


class Loop:
    """A selector loop with timers in one thread; every callback runs in it."""

    def __init__(self) -> None:
        """Prepare the selector and the wake-up pair; start() runs it."""
        self.selector = selectors.DefaultSelector()
        self.timers: List[Tuple[float, int, Callable[[], None]]] = []
        self.sequence = itertools.count()
        self.calls: List[Callable[[], None]] = []
        self.calls_lock = threading.Lock()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.errors: List[str] = []  # exceptions raised by callbacks: a test asserts there are none
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.stopping = False
        self.thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Run the loop in its own thread."""
        self.thread = threading.Thread(target=self.run, name="smtpsim", daemon=True)
        self.thread.start()

    def call(self, function: Callable[[], None]) -> None:
        """Run function in the loop thread soon (from any thread)."""
        with self.calls_lock:
            self.calls.append(function)
        self.wake()

    def wake(self) -> None:
        """Interrupt the loop's wait."""
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass  # the pair is full (the loop will wake anyway) or closed

    def later(self, seconds: float, function: Callable[[], None]) -> None:
        """Run function in the loop thread after seconds (only from the loop thread)."""
        heapq.heappush(self.timers, (time.monotonic() + seconds, next(self.sequence), function))

    def run(self) -> None:
        """Wait for events and timers until stop()."""
        while not self.stopping:
            timeout = 1.0
            if self.timers:
                timeout = max(0.0, min(timeout, self.timers[0][0] - time.monotonic()))
            for key, events in self.selector.select(timeout):
                if key.data is None:
                    try:
                        self.wake_r.recv(4096)
                    except OSError:
                        pass
                else:
                    self.guarded(lambda: key.data(events))
            with self.calls_lock:
                calls, self.calls = self.calls, []
            for function in calls:
                self.guarded(function)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                self.guarded(heapq.heappop(self.timers)[2])

    def guarded(self, function: Callable[[], None]) -> None:
        """Run a callback; a bug in one session is noted, not fatal to the others."""
        try:
            function()
        except Exception as error:  # noqa: BLE001 - the loop serves every sink and must go on
            self.errors.append(repr(error))

    def stop(self) -> None:
        """Stop the loop thread, then close the selector and the wake-up pair."""
        self.stopping = True
        self.wake()
        if self.thread is not None:
            self.thread.join(10)
        self.selector.close()
        self.wake_r.close()
        self.wake_w.close()


class Connection:
    """One SMTP session of a sink."""

    def __init__(self, sink: "Sink", sock: socket.socket, refused: bool) -> None:
        """Take an accepted socket; refused connections get 421 instead of a greeting."""
        self.sink = sink
        self.sock = sock
        self.refused = refused
        self.inbuf = b""
        self.outbuf = b""
        self.closed = False
        self.ended = False  # counted as no longer served: QUIT came (a client need not wait for its 221)
        self.close_after_send = False
        self.waiting = True  # for the greeting, or for the delayed reply to the final dot
        self.data: Optional[DataReader] = None
        self.sender: Optional[str] = None
        self.recipients: List[str] = []
        self.started = time.time()
        self.done = 0  # transactions completed on this connection
        self.activity = 0  # bumped by every command: an idle_close timer checks it has not moved
        with sink.records.lock:
            sink.records.serial += 1
            self.serial = sink.records.serial
        sock.setblocking(False)
        self.events = selectors.EVENT_READ
        sink.loop.selector.register(sock, self.events, self.ready)
        sink.loop.later(sink.limits.session, self.session_over)
        if not sink.behaviour.mute:
            sink.loop.later(sink.behaviour.greeting_delay, self.greet)

    def greet(self) -> None:
        """Send the greeting (or the 421 of too_many) and start reading commands."""
        if self.closed:
            return
        if self.refused:
            self.reply(b"421 4.7.0 %s too many connections" % self.sink.hostname)
            self.close_after_send = True
        else:
            self.reply(b"220 %s ESMTP smtpsim" % self.sink.hostname)
            self.waiting = False
            self.handle()
        self.update()

    def session_over(self) -> None:
        """End a session that lasted too long."""
        if self.closed:
            return
        try:
            self.sock.send(b"421 4.4.2 session time limit\r\n")
        except OSError:
            pass
        self.close()
        with self.sink.records.lock:
            self.sink.records.session_timeouts += 1

    def reply(self, line: bytes) -> None:
        """Queue one reply line."""
        self.outbuf += line + b"\r\n"

    def ready(self, events: int) -> None:
        """Read and write what the socket allows."""
        if self.closed:
            return
        if events & selectors.EVENT_READ:
            try:
                chunk = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError:
                chunk = b""
            if chunk == b"":
                self.close()
                return
            if chunk and not self.sink.behaviour.mute and not self.refused:
                self.inbuf += chunk
                self.handle()
        if events & selectors.EVENT_WRITE and self.outbuf:
            try:
                sent = self.sock.send(self.outbuf)
                self.outbuf = self.outbuf[sent:]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.close()
                return
            self.handle()
        self.update()

    def update(self) -> None:
        """Register the events the connection needs now (or close it once everything is sent)."""
        if self.closed:
            return
        if self.close_after_send and not self.outbuf:
            self.close()
            return
        events = 0
        if len(self.inbuf) < self.sink.limits.input and not self.close_after_send:
            events |= selectors.EVENT_READ
        if self.outbuf:
            events |= selectors.EVENT_WRITE
        selector = self.sink.loop.selector
        if events == self.events:
            return
        # with the input full and nothing to send, the socket leaves the selector: TCP holds the client back
        if not events:
            selector.unregister(self.sock)
        elif not self.events:
            selector.register(self.sock, events, self.ready)
        else:
            selector.modify(self.sock, events, self.ready)
        self.events = events

    def handle(self) -> None:
        """Handle whole commands (and message data) while no reply is awaited and the output has room."""
        limits = self.sink.limits
        while not self.waiting and not self.close_after_send and len(self.outbuf) < limits.output:
            if self.data is not None:
                finished, rest = self.data.feed(self.inbuf)
                self.inbuf = rest
                if not finished:
                    return
                self.end_of_data()
                continue
            newline = self.inbuf.find(b"\n")
            if newline < 0:
                if len(self.inbuf) > limits.line:
                    self.over_limit(b"500 5.5.2 line too long")
                return
            line, self.inbuf = self.inbuf[:newline], self.inbuf[newline + 1:]
            if len(line) > limits.line:
                self.over_limit(b"500 5.5.2 line too long")
                return
            self.command(line.rstrip(b"\r"))

    def over_limit(self, text: bytes) -> None:
        """Refuse what passed a bound and end the session."""
        with self.sink.records.lock:
            self.sink.records.over_limits += 1
        self.reply(text)
        self.close_after_send = True

    def reset(self) -> None:
        """Forget the transaction."""
        self.sender = None
        self.recipients = []

    def command(self, line: bytes) -> None:
        """Handle one command line."""
        verb, _, argument = line.partition(b" ")
        verb = verb.upper()
        name = self.sink.hostname
        self.activity += 1
        per = self.sink.behaviour.transactions_per_connection
        if verb == b"MAIL" and per and self.done >= per:
            with self.sink.records.lock:
                self.sink.records.refused_by_count += 1
            self.reply(b"421 4.7.0 %s too many messages in this connection" % name)
            self.close_after_send = True
        elif verb == b"EHLO":
            self.reset()
            self.reply(b"250-%s\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE %d" % (name, self.sink.limits.message))
        elif verb == b"HELO":
            self.reset()
            self.reply(b"250 %s" % name)
        elif verb == b"MAIL" and argument[:5].upper() == b"FROM:":
            if self.sender is not None:
                self.reply(b"503 5.5.1 nested MAIL command")
            else:
                self.sender = path_of(argument[5:])
                self.reply(b"250 2.1.0 ok")
        elif verb == b"RCPT" and argument[:3].upper() == b"TO:":
            self.rcpt(path_of(argument[3:]))
        elif verb == b"DATA":
            if self.sender is None or not self.recipients:
                self.reply(b"503 5.5.1 need MAIL and RCPT first" if self.sender is None else
                           b"554 5.5.1 no valid recipients")
            else:
                self.data = DataReader(self.sink.keep_bodies, self.sink.limits.message)
                self.reply(b"354 go ahead")
        elif verb == b"RSET":
            self.reset()
            self.reply(b"250 2.0.0 ok")
        elif verb == b"NOOP":
            self.reply(b"250 2.0.0 ok")
        elif verb == b"VRFY":
            self.reply(b"252 2.1.5 send some mail")
        elif verb == b"QUIT":
            with self.sink.records.lock:
                self.sink.records.quits += 1
            self.reply(b"221 2.0.0 %s bye" % name)
            self.close_after_send = True
            if not self.refused and not self.ended:  # the client is done: it no longer holds a delivery slot
                self.ended = True
                self.sink.records.serve(-1)
        else:
            self.reply(b"502 5.5.2 command not recognized")

    def rcpt(self, recipient: str) -> None:
        """Accept or refuse one recipient."""
        if self.sender is None:
            self.reply(b"503 5.5.1 need MAIL first")
            return
        code = self.sink.behaviour.code_for(recipient)
        if code is not None:
            with self.sink.records.lock:
                self.sink.records.keep(self.sink.records.rcpt_refused, (recipient, code))
            self.reply(b"%d %d.1.1 recipient refused by smtpsim" % (code, code // 100))
        elif len(self.recipients) >= self.sink.limits.recipients:
            self.reply(b"452 4.5.3 too many recipients")
        else:
            self.recipients.append(recipient)
            self.reply(b"250 2.1.5 ok")

    def end_of_data(self) -> None:
        """The final dot arrived: drop the connection, or reply (maybe later) and record the transaction."""
        reader = self.data
        assert reader is not None
        self.data = None
        if self.sink.behaviour.drop_after_dot:
            with self.sink.records.lock:
                self.sink.records.dropped_after_dot += 1
            self.close()
            return
        if self.sink.behaviour.data_delay > 0:
            self.waiting = True
            self.sink.loop.later(self.sink.behaviour.data_delay, lambda: self.accept_message(reader))
        else:
            self.accept_message(reader)

    def accept_message(self, reader: DataReader) -> None:
        """Reply to the final dot and record the transaction."""
        if self.closed:
            return
        self.waiting = False
        if reader.too_big:
            self.reply(b"552 5.3.4 message too big")
        else:
            transaction: Dict[str, Any] = {"sender": self.sender, "recipients": list(self.recipients),
                                           "bytes": reader.size, "time": time.time(), "connected": self.started,
                                           "connection": self.serial}
            if self.sink.keep_bodies:
                transaction["body"] = bytes(reader.body)
            records = self.sink.records
            with records.lock:
                records.transaction_count += 1
                records.keep(records.transactions, transaction)
            self.reply(b"250 2.0.0 ok: queued by smtpsim")
        self.done += 1
        if self.sink.behaviour.idle_close > 0:
            mark = self.activity
            self.sink.loop.later(self.sink.behaviour.idle_close, lambda: self.idle_over(mark))
        self.reset()
        self.handle()
        self.update()

    def idle_over(self, mark: int) -> None:
        """idle_close: close the connection if no command came since the transaction ended."""
        if self.closed or self.activity != mark:
            return
        with self.sink.records.lock:
            self.sink.records.idle_closed += 1
        self.close()

    def close(self) -> None:
        """Close the socket and count it."""
        if self.closed:
            return
        self.closed = True
        if self.events:
            try:
                self.sink.loop.selector.unregister(self.sock)
            except (KeyError, ValueError, RuntimeError):
                pass
        self.sock.close()
        self.sink.connections.discard(self)
        if self.refused:
            with self.sink.records.lock:
                self.sink.records.closed += 1
        elif not self.ended:
            self.sink.records.serve(-1)


def path_of(argument: bytes) -> str:
    """Return the address in `<addr> params` (quotes kept), or the first word when there are no brackets."""
    text = argument.strip().decode("utf-8", "surrogateescape")
    if not text.startswith("<"):
        return text.split(" ")[0]
    quoted = False
    for i, char in enumerate(text[1:], 1):
        if char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return text[1:i]
    return text[1:]


class Sink:
    """An SMTP sink on one loopback address with a behaviour; a context manager."""

    def __init__(self, behaviour: Optional[Behaviour] = None, host: str = "127.0.0.1", port: int = 0,
                 name: str = "sink", limits: Limits = Limits(), loop: Optional[Loop] = None,
                 keep_bodies: bool = False) -> None:
        """Prepare a sink; start() binds and listens (port 0: a free one)."""
        if not host.startswith("127."):
            raise ValueError("a sink listens on loopback only: %s" % host)
        self.behaviour = behaviour or healthy()
        self.host = host
        self.port = port
        self.name = name
        self.hostname = name.encode("ascii", "replace")
        self.limits = limits
        self.keep_bodies = keep_bodies
        self.own_loop = loop is None
        self.loop = loop or Loop()
        self.records = Records(limits.records)
        self.connections: set = set()
        self.listener: Optional[socket.socket] = None

    def start(self) -> "Sink":
        """Bind, listen and serve (in the shared loop, or in a loop of its own)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(512)
        listener.setblocking(False)
        self.listener = listener
        self.port = listener.getsockname()[1]
        if self.own_loop:
            self.loop.selector.register(listener, selectors.EVENT_READ, self.accept)
            self.loop.start()
        else:
            self.loop.call(lambda: self.loop.selector.register(listener, selectors.EVENT_READ, self.accept))
        return self

    @property
    def address(self) -> Tuple[str, int]:
        """Return (host, port)."""
        return self.host, self.port

    def accept(self, events: int) -> None:
        """Accept waiting connections; decide at once whether too_many refuses each."""
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. out of descriptors: the client waits in the backlog
            if len(self.connections) >= self.limits.connections:
                with self.records.lock:
                    self.records.opened += 1
                    self.records.closed += 1
                    self.records.over_limits += 1
                sock.close()
                continue
            limit = self.behaviour.max_concurrent
            refused = limit is not None and self.records.serving >= limit
            if refused:
                with self.records.lock:
                    self.records.opened += 1
                    self.records.refused_421 += 1
            else:
                self.records.serve(+1)
            self.connections.add(Connection(self, sock, refused))

    def close_all(self) -> None:
        """Close the listener and every connection (in the loop thread, or after it stopped)."""
        if self.listener is not None:
            try:
                self.loop.selector.unregister(self.listener)
            except (KeyError, ValueError):
                pass
            self.listener.close()
        for connection in list(self.connections):
            connection.close()

    def stop(self) -> None:
        """Stop serving and close every socket."""
        if self.own_loop:
            self.loop.stop()
            self.close_all()
        else:
            done = threading.Event()
            self.loop.call(lambda: (self.close_all(), done.set()))
            done.wait(10)

    def snapshot(self) -> Dict[str, Any]:
        """Return the records, the address and the behaviour as JSON-able data (bodies left out)."""
        out = self.records.snapshot()
        for t in out["transactions"]:
            t.pop("body", None)
        out.update(host=self.host, port=self.port, name=self.name, behaviour=self.behaviour.describe(),
                   errors=list(self.loop.errors))
        return out

    def transactions(self) -> List[Dict[str, Any]]:
        """Return a copy of the recorded transactions (with bodies if kept)."""
        return self.records.snapshot()["transactions"]

    def wait_for(self, condition: Callable[[Dict[str, Any]], bool], timeout: float = 30.0) -> Dict[str, Any]:
        """Wait until condition(records snapshot) holds; return the snapshot, or raise TimeoutError."""
        return wait_until(self.snapshot, condition, timeout)

    def __enter__(self) -> "Sink":
        """Start."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop."""
        self.stop()


def wait_until(read: Callable[[], Any], condition: Callable[[Any], bool], timeout: float) -> Any:
    """Poll read() until condition holds on it; return it, or raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if condition(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met within %.1f s" % timeout)
        time.sleep(0.01)


class Simulator:
    """N sinks on distinct loopback addresses, one per domain, served by one loop thread; a context manager."""

    def __init__(self, destinations: List[Tuple[str, Behaviour]], prefix: str = "127.0.1.", first: int = 1,
                 port: int = 0, limits: Limits = Limits(), keep_bodies: bool = False) -> None:
        """Prepare sinks at prefix+first, prefix+first+1, ... (port 0: a free port on each address)."""
        if not prefix.startswith("127.") or first + len(destinations) - 1 > 254:
            raise ValueError("sinks go on 127.x.y.1..254")
        self.loop = Loop()
        self.sinks: Dict[str, Sink] = {}
        for k, (domain, behaviour) in enumerate(destinations):
            if domain in self.sinks:
                raise ValueError("a domain twice: %s" % domain)
            self.sinks[domain] = Sink(behaviour, "%s%d" % (prefix, first + k), port, domain, limits, self.loop,
                                      keep_bodies)
        self.started = False

    def start(self) -> "Simulator":
        """Start every sink and the loop thread."""
        self.loop.start()
        self.started = True
        try:
            for sink in self.sinks.values():
                sink.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the loop thread and close every socket."""
        if self.started:
            self.loop.stop()
            self.started = False
        for sink in self.sinks.values():
            sink.close_all()

    def sink(self, domain: str) -> Sink:
        """Return the sink of a domain."""
        return self.sinks[domain]

    def smtproutes(self) -> bytes:
        """Return control/smtproutes lines `domain:[127.0.1.k]:port` for every sink."""
        return b"".join(b"%s:[%s]:%d\n" % (d.encode(), s.host.encode(), s.port) for d, s in self.sinks.items())

    def write_routes(self, target: Union[str, "os.PathLike[str]"]) -> str:
        """Write the smtproutes lines to a file, or to control/smtproutes when target is a qmail tree; atomically."""
        path = str(target)
        if os.path.isdir(os.path.join(path, "control")):
            path = os.path.join(path, "control", "smtproutes")
        temporary = path + ".tmp%d" % os.getpid()
        with open(temporary, "wb") as f:
            f.write(self.smtproutes())
        os.replace(temporary, path)
        return path

    def records(self) -> Dict[str, Dict[str, Any]]:
        """Return {domain: the sink's records} as JSON-able data."""
        return {domain: sink.snapshot() for domain, sink in self.sinks.items()}

    def __enter__(self) -> "Simulator":
        """Start."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop."""
        self.stop()


def simulator_from_spec(spec: Any) -> Simulator:
    """Build a simulator from JSON: a list of {"domain", "behaviour"}, or {"destinations": [...], "prefix",
    "first", "port", "limits": {...}}."""
    if isinstance(spec, list):
        spec = {"destinations": spec}
    destinations = [(d["domain"], behaviour_from_spec(d.get("behaviour"))) for d in spec["destinations"]]
    limits = Limits(**spec.get("limits", {}))
    return Simulator(destinations, spec.get("prefix", "127.0.1."), int(spec.get("first", 1)),
                     int(spec.get("port", 0)), limits)


def main(argv: Optional[List[str]] = None) -> int:
    """Serve a spec's sinks until SIGTERM or SIGINT, then write the records as JSON."""
    parser = argparse.ArgumentParser(prog="smtpsim", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="JSON file: the destinations and their behaviours")
    parser.add_argument("--routes", required=True, help="where to write smtproutes (a file, or a qmail tree)")
    parser.add_argument("--records", help="where to write the records at the end (default: standard output)")
    options = parser.parse_args(argv)
    with open(options.spec) as f:
        simulator = simulator_from_spec(json.load(f))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with simulator:
        # the routes file appears only once every sink listens: its presence says "ready"
        simulator.write_routes(options.routes)
        while not stop.wait(0.5):
            pass
    records = json.dumps(simulator.records(), indent=1, sort_keys=True)
    if options.records:
        temporary = options.records + ".tmp"
        with open(temporary, "w") as f:
            f.write(records + "\n")
        os.replace(temporary, options.records)
    else:
        sys.stdout.write(records + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
