"""SMTP client codecs for qmail-remote: DATA transparency, bounded reply parsing, report texts (see qmail-remote(8))."""

from __future__ import annotations

SMTPTEXT_MAX = 5000  # qmail's HUGESMTPTEXT: how much reply text a report quotes
REPLY_BYTES_MAX = 65536  # our bound on one reply (all its lines); more and the peer counts as gone
REPLY_LINES_MAX = 200  # our bound on the lines of one reply
MALFORMED_CODE = 400  # a reply not starting with three digits counts as a temporary refusal
SESSION_STEPS = 2  # a session may take timeoutremote × (SESSION_STEPS + recipients), its message aside
MIN_DATA_RATE = 500  # bytes a second (Postfix's smtpd_min_data_rate): each 500 message bytes add a second


class ReplyTooLong(Exception):
    """The peer sent a reply over our bounds."""


class DataEncoder:
    """Turn queued message bytes into the DATA stream, chunk by chunk.

    CRLF, a lone LF and a lone CR each become one CRLF line break; every line starting with `.` gets a second
    `.`; a partial last line is completed. So no byte sequence in a message can end DATA early.
    """

    def __init__(self) -> None:
        self.at_line_start = True
        self.held_cr = False  # a chunk ended in CR: it may be half of a CRLF

    def feed(self, data: bytes) -> bytes:
        """Return the wire bytes for the next chunk of the message."""
        if self.held_cr:
            data = b"\r" + data
            self.held_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self.held_cr = True
        if not data:
            return b""
        text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self.at_line_start and text[:1] == b".":
            text = b"." + text
        text = text.replace(b"\n.", b"\n..")
        self.at_line_start = text.endswith(b"\n")
        return text.replace(b"\n", b"\r\n")

    def end(self) -> bytes:
        """Return the bytes that finish DATA: a held CR as a line break, a completed last line, `.` CRLF."""
        out = b""
        if self.held_cr:
            out = b"\r\n"
            self.held_cr = False
            self.at_line_start = True
        if not self.at_line_start:
            out += b"\r\n"
        return out + b".\r\n"


class Reply:
    """One SMTP reply: its code (from the first line) and its text as qmail keeps it (CRs removed, ≤5000)."""

    def __init__(self, code: int, text: bytes, lines: list[bytes]) -> None:
        self.code = code
        self.text = text
        self.lines = lines  # the lines without CR LF, for EHLO keywords

    def __repr__(self) -> str:
        return "Reply(%d, %r)" % (self.code, self.text)


def reply_code(line: bytes) -> int:
    """Return the code of a reply line: its three leading digits if the first is 2 to 5, else MALFORMED_CODE."""
    head = line[:3]
    if len(head) == 3 and head.isdigit() and head.isascii() and head[:1] in b"2345":
        return int(head)
    return MALFORMED_CODE


def step_code(code: int, success: int) -> int:
    """Return code for a step that succeeds only with a reply of class success (2: 2xx, 3: 3xx): a code below
    400 of another class is not what the command asked for and counts as MALFORMED_CODE."""
    return code if code >= 400 or code // 100 == success else MALFORMED_CODE


class ReplyParser:
    """Collect reply lines fed as bytes until a line whose fourth byte is not `-`; bounded."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.lines: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> tuple[Reply, bytes] | None:
        """Consume data; return (Reply, leftover bytes) once complete, else None. Raises ReplyTooLong."""
        self.buffer += data
        while True:
            nl = self.buffer.find(b"\n")
            if nl < 0:
                if self.size + len(self.buffer) > REPLY_BYTES_MAX:
                    raise ReplyTooLong()
                return None
            line = bytes(self.buffer[:nl + 1])
            del self.buffer[:nl + 1]
            self.size += len(line)
            self.lines.append(line)
            if self.size > REPLY_BYTES_MAX or len(self.lines) > REPLY_LINES_MAX:
                raise ReplyTooLong()
            if line[3:4] != b"-":
                return self.reply(), bytes(self.buffer)

    def reply(self) -> Reply:
        """Return the Reply for the collected lines."""
        text = b"".join(self.lines).replace(b"\r", b"")[:SMTPTEXT_MAX]
        bare = [line.rstrip(b"\n").replace(b"\r", b"") for line in self.lines]
        return Reply(reply_code(self.lines[0]), text, bare)


def session_budget(timeout: int, recipients: int) -> int:
    """Return the seconds one SMTP session may take, its message aside: timeoutremote × (2 + recipients)."""
    return max(timeout, 1) * (SESSION_STEPS + recipients)


def data_allowance(size: int) -> float:
    """Return the seconds size bytes of the message add to the session's deadline (MIN_DATA_RATE)."""
    return size / MIN_DATA_RATE


def ehlo_keywords(reply: Reply) -> dict[bytes, list[bytes]]:
    """Return {KEYWORD: parameters} from an EHLO reply's lines after the first."""
    found: dict[bytes, list[bytes]] = {}
    for line in reply.lines[1:]:
        words = line[4:].split()
        if words:
            found[words[0].upper()] = words[1:]
    return found


def remote_said(text: bytes) -> bytes:
    """Return qmail's `Remote host said: ` quotation of reply text (NUL shown as `?`), or b"" if none."""
    if not text:
        return b""
    return b"Remote host said: " + text.replace(b"\0", b"?")


def outsafe(data: bytes) -> bytes:
    """Return data with bytes below 33 or above 126 shown as `?` (qmail's outsafe)."""
    return bytes(c if 33 <= c <= 126 else 63 for c in data)


def has_line_break(address: bytes) -> bool:
    """True if an address holds CR or LF: sent in a command, it would end that command early."""
    return b"\r" in address or b"\n" in address
