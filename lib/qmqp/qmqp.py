"""QMQP requests (qmail-qmqpd(8), qmail-qmqpc(8)): a bounded streaming reader and its replies."""

from __future__ import annotations

from pyqmail.lib.queue.envelope import Recipients
from pyqmail.lib.util.netstring import NetstringError, Reader, encode

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Iterable
    from pyqmail.lib.queue.envelope import BinaryInput

ADDR_MAX = 1000  # qmail-qmqpd: an address of this many bytes or more (or with a NUL) spoils the message
HARD_MAX = 200000000  # qmail-qmqpd's cap on any netstring length
ENVELOPE_MAX = 1000000  # recipient bytes kept in memory; beyond it the request is refused
TOO_MANY_RECIPIENTS = "DError: too many recipients"
BAD_ADDRESS = "Dsorry, I can't accept addresses like that (#5.1.3)"

HEADER = "receiving QMQP packet header"
CONTENT = "receiving message content"
SENDER = "receiving sender address"
RECIPIENT = "receiving recipient address"
TRAILER = "receiving QMQP packet trailer"


class RequestError(Exception):
    """The client broke the protocol or went away: kind is "format", "length", "eof" or "timeout"."""

    def __init__(self, kind: str, where: str) -> None:
        super().__init__("%s while %s" % (kind, where))
        self.kind = kind
        self.where = where

    def reply(self) -> str:
        """Return the D text for this error (Postfix qmqpd's wording)."""
        if self.kind == "length" and self.where == HEADER:
            return "DError: message too large"
        what = "netstring length exceeds storage limit" if self.kind == "length" else "netstring format error"
        return "D%s while %s" % (what, self.where)


class Request:
    """One request as read: envelope, message length, and whatever spoils it."""

    def __init__(self) -> None:
        self.length = 0
        self.sender: bytes | None = b""  # None: the sender address was refused
        self.recipients = Recipients()  # one buffer of T records, as qmail-queue's envelope takes them
        self.bad_address = False
        self.too_large = False
        self.too_many_recipients = False

    def refusal(self) -> str:
        """Return the D text that refuses this request, or "" if it may be queued."""
        if self.too_large:
            return "DError: message too large"
        if self.bad_address:
            return BAD_ADDRESS
        if self.too_many_recipients:
            return TOO_MANY_RECIPIENTS
        return ""  # zero recipients is queued, as qmail-qmqpd does (Postfix refuses it)


def _address(reader: Reader, request: Request) -> bytes | None:
    """Read one address netstring; long ones are skipped and addresses with NUL refused (qmail)."""
    length = reader.read_length(HARD_MAX)
    if length >= ADDR_MAX:
        reader.skip(length)
        reader.read_comma()
        request.bad_address = True
        return None
    address = reader.read_payload(length)
    if b"\0" in address:
        request.bad_address = True
        return None
    return address


def read_request(stream: BinaryInput, maxbytes: int, begin: Callable[[int], Callable[[bytes], object] | None],
                 maxrcpt: int = ENVELOPE_MAX) -> Request:
    """Read one request; begin(length) returns a sink for the message bytes, or None to discard them.

    Every byte is charged against the outer netstring; its length may not exceed
    maxbytes + ENVELOPE_MAX. A message longer than maxbytes is read and discarded; so are the
    recipients after the first maxrcpt or past ENVELOPE_MAX bytes, and the request is refused.
    """
    reader = Reader(stream)
    request = Request()
    where = HEADER
    try:
        reader.budget = reader.read_length(min(maxbytes, HARD_MAX) + ENVELOPE_MAX)
        where = CONTENT
        request.length = reader.read_length(HARD_MAX)
        if request.length > reader.budget:
            raise NetstringError("format", "message overruns the request")
        request.too_large = request.length > maxbytes
        reader.skip(request.length, None if request.too_large else begin(request.length))
        reader.read_comma()
        where = SENDER
        request.sender = _address(reader, request)
        where = RECIPIENT
        kept = count = 0
        while reader.budget > 0:
            before = reader.budget
            address = _address(reader, request)
            kept += before - reader.budget
            count += 1
            if kept > ENVELOPE_MAX or count > maxrcpt:
                request.too_many_recipients = True
            elif address is not None:
                request.recipients.append(address)
        where = TRAILER
        reader.budget = None
        reader.read_comma()
    except NetstringError as e:
        raise RequestError(e.kind, where)
    except EOFError:
        raise RequestError("eof", where)
    except TimeoutError:
        raise RequestError("timeout", where)
    return request


def encode_request(message: bytes, sender: bytes, recipients: Iterable[bytes]) -> bytes:
    """Return the request bytes a QMQP client sends."""
    return encode(encode(message) + encode(sender) + b"".join(encode(r) for r in recipients))


def reply(text: str) -> bytes:
    """Return a reply netstring for a K/Z/D text."""
    return encode(text.encode("latin-1", "replace"))


class HopCounter:
    """Counts Received: and Delivered-To: lines in a message's header, fed in chunks, in bounded memory."""

    PREFIXES = (b"received:", b"delivered-to:")

    def __init__(self) -> None:
        self.count = 0
        self.head = b""
        self.in_header = True

    def feed(self, chunk: bytes) -> None:
        """Account for the next piece of the message."""
        pos = 0
        while self.in_header and pos < len(chunk):
            nl = chunk.find(b"\n", pos)
            end = len(chunk) if nl < 0 else nl
            if len(self.head) < 14:
                self.head += chunk[pos:min(end, pos + 14 - len(self.head))]
            if nl < 0:
                return
            self._line_done()
            pos = nl + 1

    def _line_done(self) -> None:
        """Count a finished header line; a blank line ends the header."""
        head, self.head = self.head.lower(), b""
        if head in (b"", b"\r"):
            self.in_header = False
        elif head.startswith(self.PREFIXES):
            self.count += 1
