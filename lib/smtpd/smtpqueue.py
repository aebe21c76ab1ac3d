"""qmail-smtpd's DATA: start qmail-queue (or queue in this process), stream the message, answer (qmail-smtpd(8))."""

from __future__ import annotations

import time

from pyqmail.lib.smtpd.smtpdata import DataDecoder, StrayNewline
from pyqmail.lib.smtpd.smtpreply import REPLY, STRAY_NEWLINE, Quit

MYPY = False
if MYPY:  # typing only: never imported at run time
    from pyqmail.lib.queue.client import QmailQueue
    from pyqmail.lib.queue.queuehere import QueueHere
    from pyqmail.lib.smtpd.smtpio import Session, SmtpIO

MAXHOPS = 100


def protocol(session: Session) -> bytes:
    """Return the Received line's `with` word: SMTP as qmail, else RFC 3848/6531's for TLS, AUTH, SMTPUTF8."""
    tls, auth = session.io.tls is not None, session.user is not None
    if not (tls or auth or session.utf8):
        return b"SMTP"
    return (b"UTF8SMTP" if session.utf8 else b"ESMTP") + (b"S" if tls else b"") + (b"A" if auth else b"")


def blast(io: SmtpIO, qq: QueueHere | QmailQueue, databytes: int, minrate: int = 0) -> tuple[int, bool]:
    """Copy the DATA into qq until CRLF.CRLF; return (hops, too big). Bytes after the end go back to io.
    With minrate, DATA must arrive at that many bytes per second on average after one timeout's grace."""
    decoder = DataDecoder()
    stored, failed = 0, False
    if minrate:
        io.data_deadline = time.monotonic() + io.timeout
    while True:
        chunk = io.read_chunk()
        if minrate and io.data_deadline is not None:
            io.data_deadline += len(chunk) / minrate
        data, rest = decoder.feed(chunk)
        if data and not failed:
            stored += len(data)
            if databytes and stored > databytes:
                failed = True
                qq.fail()
            else:
                qq.put(data)
        if rest is not None:
            io.unread(rest)
            io.data_deadline = None
            return decoder.hops, failed


def deliver(session: Session) -> None:
    """Answer 354, queue the message with our Received line, then give qmail-smtpd's verdict."""
    from pyqmail.lib.queue.queuehere import open_queue
    from pyqmail.lib.queue.received import received
    io, conf = session.io, session.conf
    try:
        qq = open_queue()
    except OSError:
        io.out(REPLY["qqt"])
        return
    qp = qq.pid
    io.out(b"354 go ahead\r\n")
    qq.put(received(protocol(session), conf.local, conf.remoteip, conf.remotehost, conf.remoteinfo,
                    conf.remotehost if session.helo is None else session.helo))
    try:
        hops, too_big = blast(io, qq, conf.databytes, conf.minrate)
    except StrayNewline:
        qq.abort()
        io.out(STRAY_NEWLINE)
        raise Quit(1)
    except BaseException:
        qq.abort()
        raise
    if hops >= MAXHOPS:
        qq.fail()
    result = qq.close(session.mailfrom, session.rcptto)
    if not result:
        io.out(b"250 ok %d qp %d\r\n" % (int(time.time()), qp))
    elif hops >= MAXHOPS:
        io.out(REPLY["hops"])
    elif too_big:
        io.out(REPLY["size"])
    else:
        io.out((b"554 " if result[:1] == "D" else b"451 ") + result[1:].encode("latin-1") + b"\r\n")
