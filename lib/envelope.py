"""qmail-queue envelopes (F/T records) and queue envelope files (u/p/F/T records)."""

ADDR_MAX = 1003  # qmail-queue's ADDR: an address plus its NUL, the type letter not counted


class EnvelopeError(ValueError):
    """The envelope is malformed; `code` is the qmail-queue exit code to use."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def encode(sender, recipients):
    """Return the qmail-queue envelope for sender and recipients."""
    parts = [b"F" + sender + b"\0"]
    parts += [b"T" + r + b"\0" for r in recipients]
    parts.append(b"\0")
    return b"".join(parts)


def decode(data):
    """Parse a complete qmail-queue envelope; return (sender, [recipients])."""
    if not data.endswith(b"\0\0") and data != b"\0":
        raise EnvelopeError(54, "envelope ended before its final NUL")
    records = data[:-1].split(b"\0")[:-1]
    if not records or records[0][:1] != b"F":
        raise EnvelopeError(91, "envelope does not start with an F record")
    for record in records:
        if len(record) > ADDR_MAX:
            raise EnvelopeError(11, "envelope address too long")
    for record in records[1:]:
        if record[:1] != b"T":
            raise EnvelopeError(91, "envelope record is not a T record")
    return records[0][1:], [r[1:] for r in records[1:]]


def read(stream, limit=ADDR_MAX):
    """Read an envelope record by record from a binary stream; return (sender, [recipients])."""
    records = []
    buf = b""
    while True:
        nul = buf.find(b"\0")
        while nul < 0:
            if buf and buf[:1] != (b"T" if records else b"F"):
                # qmail-queue checks the type byte first: a bad record is 91 even if it never ends
                raise EnvelopeError(91, "envelope record has the wrong type")
            if len(buf) > limit:
                raise EnvelopeError(11, "envelope address too long")
            chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
            if not chunk:
                raise EnvelopeError(54, "envelope ended before its final NUL")
            buf += chunk
            nul = buf.find(b"\0")
        record, buf = buf[:nul], buf[nul + 1:]
        if len(record) > limit:
            raise EnvelopeError(11, "envelope address too long")
        if not record:
            break
        if record[:1] != (b"T" if records else b"F"):
            raise EnvelopeError(91, "envelope record has the wrong type")
        records.append(record[1:])
    if not records:
        raise EnvelopeError(91, "envelope has no F record")
    return records[0], records[1:]


def todo_record(uid, pid, sender, recipients):
    """Return the bytes qmail-queue writes to intd/N: u, p, F, T records, no final empty record."""
    parts = [b"u%d\0p%d\0F" % (uid, pid), sender, b"\0"]
    for r in recipients:
        parts += [b"T", r, b"\0"]
    return b"".join(parts)


def parse_todo(data):
    """Split a todo/N or intd/N file into a list of (type byte, value) records."""
    return [(r[:1], r[1:]) for r in data.split(b"\0")[:-1] if r]
