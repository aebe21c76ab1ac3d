"""qmail-rspawn's SMTP connection cache across qmail-remote runs (Postfix's scache; qmail-rspawn(8)).

A qmail-remote child whose session ended cleanly hands its socket to qmail-rspawn over an AF_UNIX datagram
socketpair (SCM_RIGHTS) with a record: the cache key (cache_key: `relay:` and the smtproutes relay and
port, or `domain:` and the host argument, lowercased), the IP address, when the connection was made, how often
it was used, the EHLO keywords it learnt and what the session was opened with (session_of: the HELO/EHLO name,
the port, the AUTH user). qmail-rspawn keeps the sockets for a short idle time and lends one to the next child
for the same key, which starts at MAIL FROM if its control files still give the same session, else QUITs it.
"""

from __future__ import annotations

import os
import time

from pyqmail.lib.remote.remoteroute import find_route
from pyqmail.lib.util import netstring

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Mapping

    Keywords = dict[bytes, list[bytes]]

VERSION = b"3"  # the layout of a record: 3 added the session field
RECORD_MAX = 4096  # bytes of one record; a longer datagram is thrown away with its descriptor
KEYWORDS_MAX = 64  # EHLO keywords kept in a record
IDLE_DEFAULT = 2  # seconds a connection may wait in the cache (Postfix's smtp_connection_cache_time_limit)
REUSE_TIME_LIMIT = 300  # seconds from the connection on during which it may be reused (smtp_connection_reuse_time_limit)
REUSE_COUNT_LIMIT = 0  # transactions per connection; 0: no limit (smtp_connection_reuse_count_limit)
CAP_MAX = 100  # cached connections at most (and never more than concurrencyremote)
QUIT = b"QUIT\r\n"


def cache_key(routes: Mapping[bytes, bytes], host: bytes) -> bytes:
    """Return the key of host's connections: `relay:` and `relay:port` of its smtproutes relay (lowercased), else
    `domain:` and the host: a domain spelt like a relay (`[ip]:port`) must not be lent the relay's connections."""
    route = find_route(routes, host)
    if route.relay is None:
        return b"domain:" + host.lower()
    return b"relay:" + route.relay.lower() + b":%d" % route.port


def current_routes() -> Mapping[bytes, bytes]:
    """Return control/smtproutes as qmail-remote reads it, re-read only when it changed ({} if unreadable)."""
    from pyqmail.lib.config import control
    from pyqmail.lib.remote.remoteroute import parse_routes
    try:
        return control.memo("conncache-smtproutes", ["smtproutes"],
                            lambda: parse_routes(control.readlist("smtproutes")))
    except OSError:
        return {}


def session_of(helohost: bytes, port: int, auth: tuple[bytes, bytes] | None) -> bytes:
    """Return what a connection's session was opened with beyond its key: the HELO/EHLO name (control/helohost,
    else control/me), the port (a `domain:` key has none) and the AUTH user (control/remoteauth)."""
    return b"".join(netstring.encode(f) for f in (helohost, b"%d" % port, auth[0] if auth else b""))


class Record:
    """What travels with a cached socket: key, ip, born (CLOCK_MONOTONIC seconds), uses, EHLO keywords, and
    session (session_of)."""

    def __init__(self, key: bytes, ip: bytes, born: float, uses: int, keywords: Keywords,
                 session: bytes = b"") -> None:
        self.key = key
        self.ip = ip
        self.born = born
        self.uses = uses
        self.keywords = keywords
        self.session = session

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (self.key, self.ip, self.born, self.uses, self.keywords, self.session) == (
            other.key, other.ip, other.born, other.uses, other.keywords, other.session)

    def __repr__(self) -> str:
        return "Record(%r, %r, %r, %r, %r, %r)" % (self.key, self.ip, self.born, self.uses, self.keywords,
                                                   self.session)


def is_word(word: bytes) -> bool:
    """True if word can stand in a keyword line: not empty, no whitespace (split() would cut it)."""
    return bool(word) and len(word.split()) == 1 and word.split()[0] == word


def encode(record: Record) -> bytes | None:
    """Return the record as bytes (a version byte, then netstrings), or None if it cannot be carried."""
    lines = []
    for keyword, params in list(record.keywords.items())[:KEYWORDS_MAX]:
        if not is_word(keyword) or not all(is_word(p) for p in params):
            continue  # a keyword we could not give back as it came is left out: it is only a hint
        lines.append(b" ".join([keyword] + params))
    if not record.key or not record.ip or record.uses < 0 or record.born < 0:
        return None
    data = VERSION + b"".join(netstring.encode(f) for f in (
        record.key, record.ip, b"%d" % round(record.born * 1000), b"%d" % record.uses, b"\n".join(lines),
        record.session))
    return data if len(data) <= RECORD_MAX else None


def decode(data: bytes) -> Record | None:
    """Return the Record in data, or None for anything malformed or over the bounds."""
    if len(data) > RECORD_MAX or data[:1] != VERSION:
        return None
    fields = []
    rest = data[1:]
    try:
        for _ in range(6):
            field, rest = netstring.decode(rest, RECORD_MAX)
            fields.append(field)
    except netstring.NetstringError:
        return None
    key, ip, born, uses, blob, session = fields
    if rest or not key or not ip or not (born.isdigit() and born.isascii() and uses.isdigit() and uses.isascii()):
        return None
    if len(born) > 18 or len(uses) > 9:
        return None
    keywords: Keywords = {}
    for line in blob.split(b"\n") if blob else []:
        words = line.split(b" ")
        if not all(is_word(w) for w in words) or words[0] in keywords or len(keywords) >= KEYWORDS_MAX:
            return None
        keywords[words[0]] = words[1:]
    return Record(key, ip, int(born) / 1000, int(uses), keywords, session)


def say_quit(fd: int) -> None:
    """Send QUIT without waiting (nor blocking) and close fd; errors are ignored."""
    import _socket
    try:
        sock = _socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return
    try:
        sock.send(QUIT, _socket.MSG_DONTWAIT | getattr(_socket, "MSG_NOSIGNAL", 0))
    except OSError:
        pass
    sock.close()


def is_socket(fd: int) -> bool:
    """True if fd is a socket (a descriptor received must be one)."""
    import stat
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def has_input(fd: int) -> bool:
    """True if fd can be read now: an idle SMTP server only speaks (421) or closes when it gives up."""
    import select
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class Lent:
    """A cached connection lent to one child: the descriptor and its record."""

    def __init__(self, fd: int, record: Record) -> None:
        self.fd = fd
        self.record = record


class Link:
    """The child's side: the connection it was lent (if any), and the way to hand one back."""

    def __init__(self, fd: int, lent: Lent | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.fd = fd  # our end of qmail-rspawn's datagram socketpair
        self.lent = lent
        self.clock = clock

    def take(self, key: bytes, session: bytes) -> Lent | None:
        """Return the lent connection, once, if it is for key and was opened as session (session_of) would open it
        now; else QUIT it: a changed helohost, port or AUTH user must not wait for the connection's expiry."""
        lent, self.lent = self.lent, None
        if lent is not None and (lent.record.key != key or lent.record.session != session):
            say_quit(lent.fd)
            return None
        return lent

    def give(self, sock_fd: int, record: Record) -> bool:
        """Send sock_fd with record to qmail-rspawn; True if it went (the caller then closes its copy, no QUIT)."""
        import socket
        data = encode(record)
        if data is None:
            return False
        try:
            link = socket.socket(fileno=os.dup(self.fd))
        except OSError:
            return False
        try:
            socket.send_fds(link, [data], [sock_fd], socket.MSG_DONTWAIT)
        except OSError:  # rspawn's queue is full or gone: QUIT as without a cache
            return False
        finally:
            link.close()
        return True


class Entry:
    """A cached connection: its descriptor, record and when it was saved."""

    def __init__(self, fd: int, record: Record, saved: float) -> None:
        self.fd = fd
        self.record = record
        self.saved = saved


class Cache:
    """qmail-rspawn's side: a bounded dict key → cached connections, lending, expiry."""

    def __init__(self, idle: float, cap: int, reuse_time: float = REUSE_TIME_LIMIT,
                 reuse_count: int = REUSE_COUNT_LIMIT, clock: Callable[[], float] = time.monotonic,
                 routes: Callable[[], Mapping[bytes, bytes]] = current_routes) -> None:
        import socket
        self.routes = routes
        self.idle = idle
        self.cap = max(1, cap)
        self.reuse_time = reuse_time
        self.reuse_count = reuse_count
        self.clock = clock
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ours.setblocking(False)
        self.entries: dict[bytes, list[Entry]] = {}
        self.total = 0
        self.lent: Lent | None = None  # chosen for the child about to be forked

    def fds(self) -> list[int]:
        """Return the descriptors the select loop watches: the receiving end."""
        return [self.ours.fileno()]

    def child_fds(self) -> list[int]:
        """Return the descriptors a forked child keeps: the sending end and the connection lent to it."""
        return [self.theirs.fileno()] + ([self.lent.fd] if self.lent is not None else [])

    def link(self) -> Link:
        """In the forked child: its Link."""
        return Link(self.theirs.fileno(), self.lent, self.clock)

    def usable(self, record: Record, now: float) -> bool:
        """True if a connection may still carry another transaction (reuse time and count limits)."""
        if now - record.born > self.reuse_time or record.born > now + 1:
            return False
        return not self.reuse_count or record.uses < self.reuse_count

    def lend(self, host: bytes) -> None:
        """Before a fork for host: choose its most recently saved live connection, if any, for the child."""
        self.lent = None
        if not self.total:
            return
        key = cache_key(self.routes(), host)
        entries = self.entries.get(key)
        now = self.clock()
        while entries:
            e = entries.pop()
            self.total -= 1
            if now - e.saved > self.idle or not self.usable(e.record, now):
                say_quit(e.fd)
            elif has_input(e.fd):  # closed or 421 while idle: dead
                os.close(e.fd)
            else:
                self.lent = Lent(e.fd, e.record)
                break
        if entries is not None and not entries:
            del self.entries[key]

    def forked(self) -> None:
        """After the fork (or its failure): the parent's copy of a lent connection is closed."""
        if self.lent is not None:
            os.close(self.lent.fd)
            self.lent = None

    def receive(self) -> None:
        """Take every connection children handed back; anything malformed is closed and ignored."""
        import socket
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(self.ours, RECORD_MAX + 1, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            record = decode(data) if not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) else None
            if record is None or len(fds) != 1 or not is_socket(fds[0]):
                for fd in fds:
                    os.close(fd)
                continue
            self.add(fds[0], record)

    def add(self, fd: int, record: Record) -> None:
        """Keep a connection (closing the oldest one if the cache is full, or this one if it is spent)."""
        now = self.clock()
        if not self.usable(record, now):
            say_quit(fd)
            return
        if self.total >= self.cap:
            oldest = min((e.saved, k) for k, es in self.entries.items() for e in es[:1])[1]
            self.drop(oldest, 0)
        self.entries.setdefault(record.key, []).append(Entry(fd, record, now))
        self.total += 1

    def drop(self, key: bytes, index: int) -> None:
        """Close (QUIT) the entry at index of key's list."""
        entries = self.entries[key]
        say_quit(entries.pop(index).fd)
        self.total -= 1
        if not entries:
            del self.entries[key]

    def timeout(self) -> float | None:
        """Return the seconds until the next entry expires, or None when the cache is empty."""
        if not self.total:
            return None
        first = min(es[0].saved for es in self.entries.values())  # each list is in the order saved
        return max(0.0, first + self.idle - self.clock()) + 0.01

    def expire(self) -> None:
        """Close every entry idle longer than the idle limit."""
        if not self.total:
            return
        now = self.clock()
        for key in list(self.entries):
            while key in self.entries and now - self.entries[key][0].saved > self.idle:
                self.drop(key, 0)

    def close_all(self) -> None:
        """At exit: QUIT and close every cached connection."""
        for key in list(self.entries):
            while key in self.entries:
                self.drop(key, 0)
        self.forked()
