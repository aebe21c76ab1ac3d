"""qmail-smtpd's DATA: start qmail-queue (or queue in this process), stream the message, answer (reference §1.12)."""

import time

from pyqmail.lib.smtpd.smtpdata import DataDecoder, StrayNewline
from pyqmail.lib.smtpd.smtpreply import REPLY, STRAY_NEWLINE, Quit

MAXHOPS = 100


def protocol(session):
    """Return the Received line's `with` word: SMTP as qmail, else RFC 3848/6531's for TLS, AUTH, SMTPUTF8."""
    tls, auth = session.io.tls is not None, session.user is not None
    if not (tls or auth or session.utf8):
        return b"SMTP"
    return (b"UTF8SMTP" if session.utf8 else b"ESMTP") + (b"S" if tls else b"") + (b"A" if auth else b"")


def blast(io, qq, databytes, minrate=0):
    """Copy the DATA into qq until CRLF.CRLF; return (hops, too big). Bytes after the end go back to io.
    With minrate, DATA must arrive at that many bytes per second on average after one timeout's grace."""
    decoder = DataDecoder()
    stored, failed = 0, False
    if minrate:
        io.data_deadline = time.monotonic() + io.timeout
    while True:
        chunk = io.read_chunk()
        if minrate:
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


def deliver(session):
    """Answer 354, queue the message with our Received line, then give qmail-smtpd's verdict."""
    from pyqmail.lib.queue.queuehere import open_queue
    from pyqmail.lib.queue.received import received
    io, conf = session.io, session.conf
    try:
        qq = open_queue()
    except OSError:
        return io.out(REPLY["qqt"])
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
        return io.out(b"250 ok %d qp %d\r\n" % (int(time.time()), qp))
    if hops >= MAXHOPS:
        return io.out(REPLY["hops"])
    if too_big:
        return io.out(REPLY["size"])
    io.out((b"554 " if result[:1] == "D" else b"451 ") + result[1:].encode("latin-1") + b"\r\n")
