"""qmail-popup: the POP3 greeting and authorization; hands USER/PASS or APOP to a checkpassword program
on fd 3 (qmail-popup(8))."""

import os

from pyqmail.lib.pop3.pop3io import Closed, LineReader, LineTooLong, Output, parse
from pyqmail.lib.pop3.popup import DIE, Popup, hand_over
from pyqmail.lib.util.program import main
from pyqmail.lib.util.timedio import linger


def body(argv):
    """Greet, read commands until a login is handed over or the client leaves; always exit 1 (qmail's)."""
    out = Output(1, size=1024)
    try:
        if len(argv) < 2:
            out.err(b"usage: popup hostname subprogram")
            return DIE
        hostname = os.fsencode(argv[0])
        child = [os.fsencode(a) for a in argv[1:]]
        import time
        popup = Popup(hostname, os.getpid(), int(time.time()))
        out.reply(popup.greeting())
        reader = LineReader(0, exact=True)  # what follows PASS is the subprogram's: never read ahead
        while True:
            try:
                line = reader.line()
            except LineTooLong:
                out.err(b"line too long")
                linger(0, 1)  # so the reply is not destroyed by a reset for the unread rest
                return DIE
            reply, auth, end = popup.command(*parse(line))
            if reply:
                out.reply(reply)
            if auth is not None:
                result = hand_over(child, auth)
                if result:
                    out.reply(result)
                return DIE
            if end:
                return DIE
    except Closed:
        return DIE


def run():
    """Console-script entry point."""
    main("qmail-popup", body, crash_code=DIE)
