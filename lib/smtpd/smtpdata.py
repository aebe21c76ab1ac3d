"""qmail-smtpd's DATA reader (qmail's blast()) as a chunk decoder: only CRLF.CRLF ends the message.

Same result as qmail's byte-at-a-time state machine, line by line: every LF must follow a CR (a bare LF
is fatal), CRLF becomes LF, lone CRs are kept, a leading dot is removed unless a CR follows it, and a
line that is just `.` ends the data. Header lines starting with `Received` or `Delivered` are counted.
Complete lines are decoded in bulk (bytes.replace / split); at most LONG bytes of a line are held.
"""

from __future__ import annotations

LONG = 65536  # a line without LF longer than this is passed on in pieces, never held whole


class StrayNewline(Exception):
    """A bare LF in the data: qmail answers 451 and drops the connection."""


def _unstuff(text: bytes) -> bytes:
    """Remove the leading dot of every line (LF-terminated, CRs already folded) unless a CR follows it."""
    if text[:1] == b"." and text[1:2] != b"\r":
        text = text[1:]
    if b"\n." not in text:
        return text
    parts = text.split(b"\n.")
    return parts[0] + b"".join((b"\n." if p[:1] == b"\r" else b"\n") + p for p in parts[1:])


class DataDecoder:
    """Feed raw DATA bytes; get back the bytes to store, and, once the end is seen, what follows it."""

    def __init__(self) -> None:
        self.tail = b""  # start of an incomplete line (or a held-back CR in the middle of a long line)
        self.midline = False  # the current line's start has been decoded already
        self.in_header = True
        self.hops = 0

    def feed(self, chunk: bytes) -> tuple[bytes, bytes | None]:
        """Return (stored bytes, rest): rest is None until the end line, then the bytes after it."""
        data = self.tail + chunk if self.tail else chunk
        self.tail = b""
        out: list[bytes] = []
        if self.midline:
            nl = data.find(b"\n")
            if nl < 0:
                self._pass_long(data, out)
                return b"".join(out), None
            if nl == 0 or data[nl - 1] != 13:
                raise StrayNewline()
            out.append(data[:nl - 1] + b"\n")
            self.midline = False
            data = data[nl + 1:]
        last = data.rfind(b"\n") + 1
        block, tail = data[:last], data[last:]
        pos = 0
        while self.in_header and pos < len(block):
            nl = block.index(b"\n", pos) + 1
            if self._header_line(block[pos:nl], out):
                return b"".join(out), block[nl:] + tail
            pos = nl
        if pos < len(block):
            end = self._body(block[pos:] if pos else block, out)
            if end >= 0:
                return b"".join(out), block[pos + end + 3:] + tail
        if len(tail) > max(LONG, 9):  # its first 9 bytes decide the hop count
            self._start_long(tail, out)
        else:
            self.tail = tail
        return b"".join(out), None

    def _header_line(self, line: bytes, out: list[bytes]) -> bool:
        """Decode one complete header line; True if it is the end line."""
        if len(line) < 2 or line[-2] != 13:
            raise StrayNewline()
        if line == b".\r\n":
            return True
        if line == b"\r\n":
            self.in_header = False
        else:
            self._count_hop(line)
        content = line[:-2]
        if content[:1] == b"." and content[1:2] != b"\r":
            content = content[1:]
        out.append(content + b"\n")
        return False

    def _count_hop(self, start: bytes) -> None:
        """Count a header line starting with Received or Delivered (any case)."""
        head = start[:9].lower()
        if head[:8] == b"received" or head == b"delivered":
            self.hops += 1

    def _body(self, block: bytes, out: list[bytes]) -> int:
        """Decode complete body lines in bulk; return the offset of the end line, or -1."""
        if block[:3] == b".\r\n":
            end = 0
        else:
            end = block.find(b"\r\n.\r\n")
            end = end + 2 if end >= 0 else -1
        region = block if end < 0 else block[:end]
        if region.count(b"\n") != region.count(b"\r\n"):
            raise StrayNewline()
        out.append(_unstuff(region.replace(b"\r\n", b"\n")))
        return end

    def _start_long(self, tail: bytes, out: list[bytes]) -> None:
        """Begin passing on a line too long to hold: its start decides hops and dot-unstuffing now."""
        if self.in_header:
            self._count_hop(tail)
        if tail[:1] == b"." and tail[1:2] != b"\r":
            tail = tail[1:]
        self.midline = True
        self._pass_long(tail, out)

    def _pass_long(self, data: bytes, out: list[bytes]) -> None:
        """Pass on the middle of a long line, holding back a final CR that may start the CRLF."""
        if data[-1:] == b"\r":
            data, self.tail = data[:-1], b"\r"
        out.append(data)
