"""QMTP packages as qmail-qmtpd(8) reads them: a bounded streaming reader, and the response netstrings."""

from __future__ import annotations

from pyqmail.lib.util.netstring import MAX_DIGITS, NetstringError, encode, parse_length
from pyqmail.lib.rfc822.quote import has_control

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable

    from pyqmail.lib.util.netstring import Reader

    Sink = Callable[[bytes], None]  # takes the decoded message bytes, chunk by chunk
    Begin = Callable[[bool], Sink | None]  # begin(crlf): called once the encoding is known

ADDR_MAX = 1000  # qmail-qmtpd: an address this long (RELAYCLIENT included) or longer is refused
HARD_MAX = 200000000  # qmail-qmtpd's cap on any netstring length
ENVELOPE_MAX = 1000000  # recipient-list bytes whose recipients are kept; later ones are answered Z

MESSAGE = "message"
SENDER = "sender"
RECIPIENTS = "recipient list"

TOO_LONG = "L"  # recipient verdict letters, as qmail-qmtpd keeps them
HAS_NUL = "N"
HAS_CONTROL = "C"  # a CR or LF (beyond qmail, which takes them)
NOT_RCPTHOST = "D"
TOO_MANY = "M"

REPLIES = {
    NOT_RCPTHOST: "Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
    TOO_LONG: "Dsorry, I can't handle that recipient (#5.1.3)",
    HAS_NUL: "Dsorry, I can't handle that recipient (#5.1.3)",
    HAS_CONTROL: "Dsorry, that recipient address contains a control character (#5.1.3)",
    TOO_MANY: "Zsorry, too many recipients in one package (#4.5.3)",
}
BAD_SENDER = "Dunacceptable sender (#5.1.7)"
CONTROL_SENDER = "Dsorry, that sender address contains a control character (#5.1.7)"
TOO_BIG = "Dsorry, that message size exceeds my databytes limit (#5.3.4)"


class PackageError(Exception):
    """The client broke the protocol or went away: kind is "format", "length", "encoding", "eof" or "timeout"."""

    def __init__(self, kind: str, where: str) -> None:
        super().__init__("%s while receiving the %s" % (kind, where))
        self.kind = kind
        self.where = where

    def reply(self) -> str:
        """Return the D text sent before hanging up on a broken package."""
        if self.kind == "encoding":
            return "Dmessage is neither LF (\\n) nor CRLF (\\r) encoded (#5.6.0)"
        what = "netstring length exceeds %d" % HARD_MAX if self.kind == "length" else "netstring format error"
        return "Dprotocol error: %s in the %s (#5.5.2)" % (what, self.where)


class Package:
    """One package as read: message encoding and size, sender, recipients (None = too long)."""

    def __init__(self) -> None:
        self.crlf = False
        self.length = 0  # message bytes after decoding
        self.sender = b""
        self.sender_ok = True
        self.sender_refusal = ""  # the D text every recipient gets when the sender is refused
        self.recipients: list[bytes | None] = []
        self.overflow = 0  # recipients past ENVELOPE_MAX, answered TOO_MANY


class CrlfDecoder:
    """Turns CRLF into LF across chunk boundaries; a lone CR is kept (qmail-qmtpd's encoding #1)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.held_cr = False

    def __call__(self, chunk: bytes) -> None:
        """Decode the next piece of the encoded message."""
        if self.held_cr:
            chunk = b"\r" + chunk
        self.held_cr = chunk.endswith(b"\r")
        if self.held_cr:
            chunk = chunk[:-1]
        self.sink(chunk.replace(b"\r\n", b"\n"))

    def close(self) -> None:
        """The message ended: a CR at its very end is part of it."""
        if self.held_cr:
            self.held_cr = False
            self.sink(b"\r")


def _byte(reader: Reader) -> bytes:
    """Read one byte (EOFError at the end of input)."""
    got: list[bytes] = []
    reader.skip(1, got.append)
    return got[0]


def _counting(package: Package, sink: Sink | None) -> Sink:
    """Return a sink that counts decoded bytes into package.length before passing them on."""
    def count(chunk: bytes) -> None:
        package.length += len(chunk)
        if sink is not None and chunk:
            sink(chunk)
    return count


def _message(reader: Reader, package: Package, length: int, begin: Begin) -> None:
    """Read the message netstring's payload, streaming its decoded bytes into the sink begin(crlf) returns."""
    if length == 0:
        raise PackageError("encoding", MESSAGE)
    first = _byte(reader)
    if first not in (b"\n", b"\r"):
        raise PackageError("encoding", MESSAGE)
    package.crlf = first == b"\r"
    sink = _counting(package, begin(package.crlf))
    if package.crlf:
        decoder = CrlfDecoder(sink)
        reader.skip(length - 1, decoder)
        decoder.close()
    else:
        reader.skip(length - 1, sink)
    reader.read_comma()


def _address(reader: Reader, limit: int) -> bytes | None:
    """Read one address netstring; return its bytes, or None if it is limit bytes or longer (skipped)."""
    length = reader.read_length(HARD_MAX)
    if length >= limit:
        reader.skip(length)
        reader.read_comma()
        return None
    parts: list[bytes] = []
    reader.skip(length, parts.append)
    reader.read_comma()
    return b"".join(parts)


def _recipients(reader: Reader, package: Package, limit: int) -> None:
    """Read the recipient list netstring, charging every byte of it against its stated length."""
    biglen = reader.read_length(HARD_MAX)
    reader.budget = biglen
    while reader.budget > 0:
        if biglen - reader.budget >= ENVELOPE_MAX:
            _address(reader, 0)
            package.overflow += 1
        else:
            package.recipients.append(_address(reader, limit))
    reader.budget = None
    reader.read_comma()


def sender_refusal(sender: bytes | None) -> str:
    """Return "" for a sender qmail-qmtpd takes, else the D text: too long (None) or NUL as qmail, CR or LF."""
    if sender is None or b"\0" in sender:
        return BAD_SENDER
    return CONTROL_SENDER if has_control(sender) else ""


def recipient_verdict(address: bytes) -> str:
    """Return the verdict letter for the bytes of one recipient: HAS_NUL (qmail's), HAS_CONTROL (CR, LF) or ""."""
    if b"\0" in address:
        return HAS_NUL
    return HAS_CONTROL if has_control(address) else ""


def _first_length(reader: Reader) -> int | None:
    """Read the length field that starts a package; return None at a clean end of input."""
    try:
        digits = _byte(reader)
    except EOFError:
        return None
    while True:  # each byte is checked as it comes: a client sending junk is not left waiting
        if not digits[-1:].isdigit() or len(digits) > MAX_DIGITS:
            raise NetstringError("format", "netstring length is not plain digits")
        parse_length(digits, HARD_MAX)
        c = _byte(reader)
        if c == b":":
            return parse_length(digits, HARD_MAX)
        digits += c


def read_package(reader: Reader, begin: Begin, relayclient_len: int = 0) -> Package | None:
    """Read the next package from a netstring Reader; return None at a clean end of input.

    begin(crlf) is called once the message's encoding is known and returns a sink for the
    decoded message bytes (or None to discard them). Nothing but the recipients below
    ENVELOPE_MAX bytes and the addresses shorter than ADDR_MAX is kept in memory.
    """
    package = Package()
    where = MESSAGE
    reader.budget = None  # a recipient list broken off earlier must not limit this package
    try:
        length = _first_length(reader)
        if length is None:
            return None
        _message(reader, package, length, begin)
        where = SENDER
        sender = _address(reader, ADDR_MAX)
        package.sender_refusal = sender_refusal(sender)
        package.sender_ok = not package.sender_refusal
        package.sender = sender or b""
        where = RECIPIENTS
        _recipients(reader, package, ADDR_MAX - relayclient_len)
    except NetstringError as e:
        raise PackageError(e.kind, where)
    except EOFError:
        raise PackageError("eof", where)
    except TimeoutError:
        raise PackageError("timeout", where)
    return package


def reply(text: str) -> bytes:
    """Return a response netstring for a K/Z/D text."""
    return encode(text.encode("latin-1", "replace"))

