"""qmail-pop3d's maildir session: the listing (tmp/ cleaned, new/ and cur/ by mtime), message numbers,
the TRANSACTION commands and their replies, RETR/TOP output, and deletion on QUIT (qmail-pop3d(8))."""

from __future__ import annotations

import os
import time
from array import array

from pyqmail.lib.local.maildirscan import SCAN_MAX
from pyqmail.lib.util.regularfile import is_regular, open_regular

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Iterable, Iterator

OK = b"+OK \r\n"
ULONG = 1 << 64
ROOT_EXIT = 1  # qmail-pop3d's one nonzero exit: run as root
UID_BYTES = bytes(c if 0x21 <= c <= 0x7E else 0x3F for c in range(256))
NAME_MAX = 255  # bytes of a file name (Linux's NAME_MAX): a longer name in a listing is no message's
SLOT_MASK = 0xFFFFFFFF
UNLINK_FAILED = b"-ERR unable to unlink all deleted messages\r\n"


class ScanError(Exception):
    """new/ or cur/ could not be read."""


def scan_ulong(s: bytes) -> tuple[int, int]:
    """Return (value, digits used) of the decimal digits s starts with, wrapping as a C unsigned long."""
    n = 0
    used = 0
    for c in s:
        if not 48 <= c <= 57:
            break
        n = (n * 10 + c - 48) % ULONG
        used += 1
    return n, used


class Listing:
    """A session's messages as qmail keeps them (a name, a size; the deleted flags are Mailbox's), compactly:
    the paths in one blob with their end offsets, the sizes in an array, and the order of the messages as
    an array of path slots (a 100,000-message Maildir costs its names plus 16 bytes a message)."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.ends: array[int] = array("I")  # slot j's path is blob[ends[j - 1]:ends[j]]
        self.sizes: array[int] = array("q")  # by message number - 1
        self.order: array[int] = array("I")  # message number - 1 -> slot

    def add(self, path: bytes, size: int) -> None:
        """Append a message after the others."""
        self.order.append(len(self.ends))
        self.blob += path
        self.ends.append(len(self.blob))
        self.sizes.append(size)

    def sort(self, mtimes: array[int]) -> None:
        """Number the messages by mtimes (one per slot), oldest first, in slot order among equals."""
        keys = [(m << 32) | j for j, m in enumerate(mtimes)]  # fewer than 2**32 slots (SCAN_MAX)
        keys.sort()
        sizes = self.sizes
        self.order = array("I", (k & SLOT_MASK for k in keys))  # generators: no second list of n numbers
        del keys
        self.sizes = array("q", (sizes[j] for j in self.order))

    def path(self, i: int) -> bytes:
        """The path (new/X or cur/X) of message i + 1."""
        j = self.order[i]
        return bytes(self.blob[self.ends[j - 1] if j else 0:self.ends[j]])

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        """(path, size) of each message in order."""
        return ((self.path(i), self.sizes[i]) for i in range(len(self.order)))


def scan(now: float, limit: int = SCAN_MAX) -> Listing:
    """Return the new/ then cur/ messages (not dot files) modified before this second, oldest first (qmail's
    maildir_scan); only regular files (after symlinks): a FIFO, a directory or a device planted there is not
    a message. Bounded: names longer than NAME_MAX are skipped, and at most limit messages are listed (the
    first found: the rest wait for a later session)."""
    found = Listing()
    mtimes: array[int] = array("q")
    second = int(now)
    for sub in (b"new", b"cur"):
        try:
            with os.scandir(sub) as entries:  # an iterator: the directory is never held whole as a list
                for entry in entries:
                    if len(mtimes) >= limit:
                        break
                    name = entry.name
                    if name.startswith(b".") or len(name) > NAME_MAX:
                        continue
                    try:
                        st = entry.stat()
                    except OSError:
                        continue
                    mtime = int(st.st_mtime)
                    if is_regular(st.st_mode) and mtime < second:
                        found.add(sub + b"/" + name, st.st_size)
                        mtimes.append(mtime)
        except OSError as e:
            raise ScanError(str(e))
    found.sort(mtimes)
    return found


def blast(read: Callable[[int], bytes], limit: int) -> Iterator[bytes]:
    """Yield a message as RETR/TOP send it: each line with CRLF (a CR already before the LF is not doubled),
    a leading dot doubled, after the header's end (an empty line, or one that is only a CR) only limit - 1
    lines (limit 0: all), then `\\r\\n.\\r\\n`. Streams: no line is held whole."""
    inheaders = True
    at_start = True
    held_cr = False  # a CR ending a piece: held back until it is known whether an LF follows it
    length = 0  # bytes of the current line sent so far
    chunk = b""
    pos = 0
    while True:
        if pos >= len(chunk):
            chunk = read(65536)
            pos = 0
            if not chunk:
                if not at_start:
                    yield b"\r\r\n" if held_cr else b"\r\n"
                break
        if at_start:
            if limit and not inheaders:
                limit -= 1
                if not limit:
                    break
            at_start = False
            length = 0
            if chunk[pos] == 46:
                yield b"."
        lf = chunk.find(b"\n", pos)
        piece = chunk[pos:] if lf < 0 else chunk[pos:lf]
        pos = len(chunk) if lf < 0 else lf + 1
        if held_cr:
            piece = b"\r" + piece
        held_cr = piece.endswith(b"\r")
        if held_cr:
            piece = piece[:-1]
        if lf < 0:
            if piece:
                length += len(piece)
                yield piece
            continue
        held_cr = False  # the CR of a CRLF already in the file
        if not length and not piece:
            inheaders = False
        yield piece + b"\r\n"
        at_start = True
    yield b"\r\n.\r\n"


class Mailbox:
    """One session's messages: numbered from 1 in listing order; deletions kept until QUIT."""

    def __init__(self, messages: Listing | Iterable[tuple[bytes, int]]) -> None:
        if not isinstance(messages, Listing):
            listing = Listing()
            for path, size in messages:
                listing.add(path, size)
            messages = listing
        self.messages = messages
        self.count = len(messages)
        self.sizes = messages.sizes
        self.deleted = bytearray(self.count)
        self.last = 0

    def path(self, i: int) -> bytes:
        """The path of message i + 1."""
        return self.messages.path(i)

    def number(self, arg: bytes) -> int | bytes:
        """Return the index of message arg, or the -ERR reply (qmail's msgno)."""
        n, used = scan_ulong(arg)
        if not used:
            return b"-ERR syntax error\r\n"
        if not n:
            return b"-ERR messages are counted from 1\r\n"
        if n - 1 >= self.count:
            return b"-ERR not that many messages\r\n"
        if self.deleted[n - 1]:
            return b"-ERR already deleted\r\n"
        return n - 1

    def uid(self, i: int) -> bytes:
        """The unique id: the file name after new/ or cur/, up to its first colon, each byte outside
        0x21..0x7E (RFC 1939's range) made `?`: a space, CR or LF in a planted name would break the reply."""
        return self.path(i)[4:].split(b":", 1)[0].translate(UID_BYTES)

    def stat(self) -> bytes:
        """`+OK count octets`: count includes deleted messages, octets do not (qmail's)."""
        total = sum(s for s, d in zip(self.sizes, self.deleted) if not d)
        return b"+OK %d %d\r\n" % (self.count, total)

    def listing_pieces(self, arg: bytes, uidl: bool) -> Iterator[bytes]:
        """LIST or UIDL, of one message or of every undeleted one, in pieces (a whole listing is never
        held at once)."""
        def entry(i: int) -> bytes:
            return b"%d %s\r\n" % (i + 1, self.uid(i) if uidl else b"%d" % self.sizes[i])
        if arg:
            i = self.number(arg)
            yield i if isinstance(i, bytes) else b"+OK " + entry(i)
            return
        yield OK
        deleted = self.deleted
        for i in range(self.count):
            if not deleted[i]:
                yield entry(i)
        yield b".\r\n"

    def listing(self, arg: bytes, uidl: bool) -> bytes:
        """LIST's or UIDL's whole reply (listing_pieces joined)."""
        return b"".join(self.listing_pieces(arg, uidl))

    def dele(self, arg: bytes) -> bytes:
        """Mark a message deleted; LAST becomes the highest number deleted."""
        i = self.number(arg)
        if isinstance(i, bytes):
            return i
        self.deleted[i] = 1
        self.last = max(self.last, i + 1)
        return OK

    def rset(self) -> bytes:
        """Undelete everything; LAST goes back to 0."""
        self.deleted = bytearray(self.count)
        self.last = 0
        return OK

    def top(self, arg: bytes) -> tuple[bytes, int, int]:
        """Parse RETR's or TOP's argument: (error reply or b"", index, line limit for blast). As qmail's,
        RETR takes a line count too, and `TOP n` without one sends the whole message."""
        i = self.number(arg)
        if isinstance(i, bytes):
            return i, -1, 0
        _, used = scan_ulong(arg)
        rest = arg[used:].lstrip(b" ")
        lines, used = scan_ulong(rest)
        limit = (lines + 1) % ULONG if used else 0
        return b"", i, limit

    def quit(self) -> bytes:
        """Unlink deleted messages, move the others from new/X to cur/X:2, and say goodbye."""
        failures = 0
        for i in range(self.count):
            path = self.path(i)
            if self.deleted[i]:
                try:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        if not path.startswith(b"new/"):
                            raise
                        os.unlink(seen(path))  # another session's QUIT moved it meanwhile
                except OSError:
                    failures += 1
            elif path.startswith(b"new/"):
                try:
                    os.rename(path, seen(path))
                except OSError:
                    pass  # as qmail: if it fails, bummer
        return UNLINK_FAILED * failures + OK


def seen(path: bytes) -> bytes:
    """Where QUIT moves new/X: cur/X:2, (qmail's)."""
    return b"cur/" + path[4:] + b":2,"


def open_message(path: bytes) -> int:
    """Open a listed message for reading (new/X moved to cur/X:2, by another session's QUIT meanwhile is
    looked for there): never blocks (a FIFO put there since the listing), and only a regular file
    (regularfile.open_regular; the user's own symbolic links are followed); OSError otherwise."""
    try:
        return open_regular(path, follow=True)
    except FileNotFoundError:
        if not path.startswith(b"new/"):
            raise
        return open_regular(seen(path), follow=True)


def now() -> float:
    """The current time (a seam for tests)."""
    return time.time()
