"""qmail-pop3d: the POP3 transaction state over a maildir, run by a checkpassword program as the
user (qmail-pop3d(8))."""

import os

from pyqmail.lib.local.maildirscan import clean_tmp
from pyqmail.lib.pop3 import pop3d
from pyqmail.lib.pop3.pop3io import Closed, LineReader, LineTooLong, Output, parse
from pyqmail.lib.pop3.pop3d import OK, ROOT_EXIT, Mailbox, ScanError, blast, open_message
from pyqmail.lib.util.program import main, warn
from pyqmail.lib.util.timedio import linger


def retrieve(out, mailbox, arg):
    """RETR or TOP: the message's lines, dot-stuffed, then `\\r\\n.\\r\\n`."""
    error, i, limit = mailbox.top(arg)
    if error:
        out.reply(error)
        return
    try:
        fd = open_message(mailbox.path(i))
    except OSError:
        out.err(b"unable to open that message")
        return
    try:
        out.put(OK)
        for piece in blast(lambda n: os.read(fd, n), limit):
            out.put(piece)
        out.flush()
    except OSError as e:  # a read error midway: the reply cannot be ended well; end the session
        warn("qmail-pop3d", "unable to read %s: %s" % (os.fsdecode(mailbox.path(i)), e.strerror))
        raise Closed("read error")
    finally:
        os.close(fd)


def serve(out, mailbox):
    """Answer commands until QUIT or the client leaves."""
    reader = LineReader(0)
    while True:
        try:
            line = reader.line()
        except LineTooLong:
            out.err(b"line too long")  # and end the session: nothing is deleted
            linger(0, 1)  # so the reply is not destroyed by a reset for the unread rest
            return
        verb, arg = parse(line)
        if verb == b"quit":
            out.reply(mailbox.quit())
            return
        if verb == b"stat":
            out.reply(mailbox.stat())
        elif verb in (b"list", b"uidl"):
            for piece in mailbox.listing_pieces(arg, verb == b"uidl"):
                out.put(piece)
            out.flush()
        elif verb == b"dele":
            out.reply(mailbox.dele(arg))
        elif verb in (b"retr", b"top"):
            retrieve(out, mailbox, arg)
        elif verb == b"rset":
            out.reply(mailbox.rset())
        elif verb == b"last":
            out.reply(b"+OK %d\r\n" % mailbox.last)
        elif verb == b"noop":
            out.reply(OK)
        else:
            out.err(b"unimplemented")


def body(argv):
    """Refuse root (real or effective), enter the maildir, list it, serve; exit 0 (qmail's) except for root."""
    if os.getuid() == 0 or os.geteuid() == 0:  # the effective uid too: a checkpassword that set only one
        try:
            os.write(2, b"qmail-pop3d invoked as uid 0, terminating\n")
        except OSError:
            pass
        return ROOT_EXIT
    out = Output(1)
    try:
        try:
            if not argv:
                raise OSError("no maildir")
            os.chdir(os.fsencode(argv[0]))
        except OSError:
            out.err(b"this user has no $HOME/Maildir")
            return 0
        now = pop3d.now()
        clean_tmp(now)
        try:
            mailbox = Mailbox(pop3d.scan(now))
        except ScanError:
            out.err(b"unable to scan $HOME/Maildir")
            return 0
        out.reply(OK)
        serve(out, mailbox)
    except Closed:
        pass
    return 0


def run():
    """Console-script entry point."""
    main("qmail-pop3d", body, crash_code=0)
