"""qmail-send ↔ spawner wire protocol, the spawners' reports and qmail-clean's commands (qmail-lspawn(8) PROTOCOL
and REPORTS, qmail-rspawn(8) REPORTS, qmail-clean(8); qmail's spawn.c)."""

from __future__ import annotations

import os
from typing import NamedTuple  # daemons only (qmail-send, the spawners, qmail-clean): not a per-message program

from pyqmail.lib.util.exits import QLX_TEXTS

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Container

SPAWN_LIMIT = 120  # conf-spawn: the concurrency byte a spawner announces
MESSID_MAX = 100  # messid length counting its NUL, as spawn.c checks it
FIELD_MAX = 65536  # our bound on a sender or recipient; qmail grows until malloc fails
LOCAL_TRUNC = 3000  # qmail-lspawn's truncreport
TRUNC_TEXT = b"\nError report too long, sorry.\n"
REMOTE_OUTPUT_MAX = 100000  # rspawn keeps everything in qmail; we keep this much (two reports fit easily)

OUT_OF_MEMORY = b"Zqmail-spawn out of memory. (#4.3.0)\n"


BATCH_FLAG = 0x80  # qmail-rspawn only: a delnum byte with this bit set starts a batch (delnums stay below 0x80)
BATCH_MAX = 1000  # recipients one batch request may carry
BATCH_BYTES = 1 << 20  # and the bytes its recipients may take, together

BATCH_CUT = b"Zqmail-remote's report was cut short. (#4.3.0)\n"


class Request(NamedTuple):
    """One delivery qmail-send asks for; overflow: a field was longer than the reader's bound (cut there)."""
    delnum: int
    messid: bytes
    sender: bytes
    recipient: bytes
    overflow: bool


class Batch(NamedTuple):
    """Several recipients of one message for one qmail-remote run (qmail-rspawn(8), BATCHES): one delnum, one
    report per recipient in their order; total: the recipients sent (recipients holds at most BATCH_MAX of them);
    overflow: a bound was passed (the whole batch is answered "out of memory")."""
    delnum: int
    messid: bytes
    sender: bytes
    recipients: tuple[bytes, ...]
    total: int
    overflow: bool


LOCAL_TEMPORARY = frozenset((111, 71, 74, 75))


class RequestReader:
    """Split qmail-send's byte stream into Requests: delnum byte, then messid, sender, recipient, each NUL-ended.
    With batch set (qmail-rspawn), a delnum byte with BATCH_FLAG starts a Batch instead: messid, sender, then
    recipients, each NUL-ended, ended by an empty field."""

    def __init__(self, field_max: int = FIELD_MAX, batch: bool = False) -> None:
        self.field_max = field_max
        self.batch = batch
        self.delnum: int | None = None
        self.in_batch = False
        self.fields: list[bytes] = []
        self.current = bytearray()
        self.overflow = False
        self.count = 0  # a batch's recipients so far
        self.size = 0  # and their bytes kept

    def end_batch_field(self, field: bytes, done: list[Request | Batch]) -> None:
        """A batch's field is complete: keep it, or end the batch at its empty terminator."""
        assert self.delnum is not None
        if len(self.fields) < 2:
            self.fields.append(field)
            return
        if field:
            self.count += 1
            self.size += len(field)
            if self.count > BATCH_MAX or self.size > BATCH_BYTES:
                self.overflow = True  # counted, not kept
            else:
                self.fields.append(field)
            return
        messid, sender = self.fields[:2]
        done.append(Batch(self.delnum & ~BATCH_FLAG, messid, sender, tuple(self.fields[2:]), self.count,
                          self.overflow))
        self.delnum, self.fields, self.overflow, self.in_batch, self.count, self.size = None, [], False, False, 0, 0

    def feed(self, data: bytes) -> list[Request | Batch]:
        """Consume data; return the Requests (and Batches) it completed, in order."""
        done: list[Request | Batch] = []
        pos = 0
        while pos < len(data):
            if self.delnum is None:
                self.delnum = data[pos]
                self.in_batch = self.batch and self.delnum & BATCH_FLAG != 0
                pos += 1
                continue
            nul = data.find(b"\0", pos)
            end = len(data) if nul < 0 else nul
            room = self.field_max - len(self.current)
            if end - pos > room:
                self.overflow = True  # keep the bound; the request will be answered "out of memory"
            self.current += data[pos:pos + max(0, min(end - pos, room))]
            if nul < 0:
                break
            pos = nul + 1
            if self.in_batch:
                self.end_batch_field(bytes(self.current), done)
                self.current.clear()
                continue
            self.fields.append(bytes(self.current))
            self.current.clear()
            if len(self.fields) == 3 and self.delnum is not None:  # (delnum is set: a field follows it)
                messid, sender, recipient = self.fields
                done.append(Request(self.delnum, messid, sender, recipient, self.overflow))
                self.delnum, self.fields, self.overflow = None, [], False
        return done


def encode_request(delnum: int, messid: bytes, sender: bytes, recipient: bytes) -> bytes:
    """Return the bytes qmail-send writes for one delivery."""
    return bytes([delnum]) + messid + b"\0" + sender + b"\0" + recipient + b"\0"


def encode_batch(delnum: int, messid: bytes, sender: bytes, recipients: list[bytes]) -> bytes:
    """Return the bytes qmail-send writes for one batch (delnum below BATCH_FLAG, recipients not empty)."""
    return (bytes([delnum | BATCH_FLAG]) + messid + b"\0" + sender + b"\0" + b"".join(r + b"\0" for r in recipients)
            + b"\0")


def request_error(req: Request, limit: int, in_use: Container[int]) -> bytes | None:
    """Return spawn.c's report text for a request it refuses before opening the message, or None."""
    if req.overflow:
        return OUT_OF_MEMORY
    if req.delnum >= limit:
        return b"ZInternal error: delnum too big. (#4.3.5)\n"
    if req.delnum in in_use:
        return b"ZInternal error: delnum in use. (#4.3.5)\n"
    for i, byte in enumerate(req.messid):
        if (i == 0 or byte != 0x2F) and not 0x30 <= byte <= 0x39:
            return b"DInternal error: messid has nonnumerics. (#5.3.5)\n"
    if len(req.messid) + 1 > MESSID_MAX:
        return b"DInternal error: messid too long. (#5.3.5)\n"
    if not req.messid:
        return b"DInternal error: messid too short. (#5.3.5)\n"
    if b"@" not in req.recipient:
        return b"DSorry, address must include host name. (#5.1.3)\n"
    return None


def split_recipient(recipient: bytes) -> tuple[bytes, bytes]:
    """Split an address at its last `@` into (local, domain)."""
    at = recipient.rindex(b"@")
    return recipient[:at], recipient[at + 1:]


def encode_report(delnum: int, text: bytes) -> bytes:
    """Return the response bytes: delnum, the report text, NUL."""
    return bytes([delnum]) + text + b"\0"


def append_output(output: bytearray, data: bytes, trunc: int = LOCAL_TRUNC) -> bytearray:
    """Append a child's output to the bytearray output, cutting it as spawn.c does once it passes trunc."""
    output += data
    if len(output) > trunc:
        del output[trunc - len(TRUNC_TEXT) - 3:]
        output += TRUNC_TEXT
    return output


def before_nul(data: bytes | bytearray) -> bytes:
    """Return data up to its first NUL."""
    nul = data.find(b"\0")
    return bytes(data) if nul < 0 else bytes(data[:nul])


def local_report(wstat: int, output: bytes | bytearray) -> bytes:
    """Return qmail-lspawn's report for qmail-local's wait status and output."""
    if os.WIFSIGNALED(wstat):
        return b"Zqmail-local crashed.\n"
    code = os.WEXITSTATUS(wstat)
    if code in QLX_TEXTS:
        return QLX_TEXTS[code]
    letter = b"K" if code == 0 else b"Z" if code in LOCAL_TEMPORARY else b"D"
    return letter + before_nul(output)


def remote_report(wstat: int, output: bytes | bytearray) -> bytes:
    """Return qmail-rspawn's report for qmail-remote's wait status and its NUL-ended r/h/s and K/Z/D reports."""
    if os.WIFSIGNALED(wstat):
        return b"Zqmail-remote crashed.\n"
    code = os.WEXITSTATUS(wstat)
    if code == 111:
        return b"ZUnable to run qmail-remote.\n"
    if code:
        return b"DUnable to run qmail-remote.\n"
    if not output:
        return b"Zqmail-remote produced no output.\n"
    output = bytes(output)
    result = -1
    for rep in output.split(b"\0")[:-1]:  # only NUL-ended reports count
        if rep[:1] in (b"K", b"Z"):
            result = 1 if rep[:1] == b"K" else 0
            break
        if rep[:1] == b"D":
            break
    emitted = {b"s": 0, b"h": -1}.get(output[:1], result)
    text = b""
    end = output.find(b"\0", 1)
    if end >= 0:
        text = output[1:end]
        nxt = output[end + 1:end + 2]
        if result <= emitted and nxt in (b"K", b"Z", b"D"):
            text += before_nul(output[end + 2:])
    return b"KZD"[1 - emitted:2 - emitted] + text


def remote_batch_reports(wstat: int, output: bytes | bytearray, count: int) -> list[bytes]:
    """Split one qmail-remote run for count recipients into count qmail-rspawn reports, in recipient order.

    qmail-remote writes one r/h/s report per recipient it reached, in order, then the message report. Recipient i
    gets remote_report() of its own report followed by the message report and what follows it, exactly as if it
    had been the only recipient; a recipient without a report of its own (the run ended before its RCPT) gets
    remote_report() of the message report alone. With no message report at all (the output was cut short),
    every recipient is deferred."""
    if os.WIFSIGNALED(wstat) or os.WEXITSTATUS(wstat) or not output:
        return [remote_report(wstat, output)] * count
    records = bytes(output).split(b"\0")[:-1]  # only NUL-ended reports count
    own: list[bytes] = []
    i = 0
    while i < len(records) and records[i][:1] in (b"r", b"h", b"s") and len(own) < count:
        own.append(records[i])
        i += 1
    if not any(r[:1] in (b"K", b"Z", b"D") for r in records[i:]):
        return [BATCH_CUT] * count
    rest = b"".join(r + b"\0" for r in records[i:])
    return [remote_report(wstat, own[k] + b"\0" + rest if k < len(own) else rest) for k in range(count)]


def clean_command(line: bytes) -> tuple[str, int] | None:
    """Parse one qmail-clean command (without its NUL): ("foop"|"todo", n), or None for `x`."""
    if len(line) + 1 < 7 or len(line) + 1 > 100:
        return None
    kind, digits = line[:5], line[5:]
    if kind not in (b"foop/", b"todo/") or not digits.isdigit() or not digits.isascii():
        return None
    return kind[:4].decode(), int(digits)
