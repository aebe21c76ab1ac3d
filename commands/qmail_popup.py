"""qmail-popup: the POP3 greeting and authorization, STLS when control/servercert.pem exists (or TLS from the
first byte with -s, POP3S); hands USER/PASS or APOP to a checkpassword program on fd 3, relaying TLS for it
(qmail-popup(8))."""

import os

from pyqmail.lib.config import control
from pyqmail.lib.pop3.pop3io import TIMEOUT, Closed, LineReader, LineTooLong, Output, parse
from pyqmail.lib.pop3.popup import DIE, TIMED_OUT, Popup, check_timeout, hand_over, plaintext_allowed
from pyqmail.lib.util.program import main, warn
from pyqmail.lib.util.sgetopt import BadOption, options
from pyqmail.lib.util.timedio import linger


def body(argv):
    """Greet, read commands until a login is handed over or the client leaves; always exit 1 (qmail's)."""
    out = Output(1, size=1024)
    try:
        try:
            flags, argv = options(argv, "s", "qmail-popup")
        except BadOption:
            argv = []
        if len(argv) < 2:
            out.err(b"usage: popup hostname subprogram")
            return DIE
        implicit = bool(flags)  # -s: POP3S, TLS before the greeting (clients without STLS, port 995)
        hostname = os.fsencode(argv[0])
        child = [os.fsencode(a) for a in argv[1:]]
        import time
        cert = control.path("control", "servercert.pem")
        certfile = cert if control.is_file(cert) else None
        if certfile:
            from pyqmail.lib.pop3.tlsrelay import can_tls
            if not can_tls(0):
                certfile = None
        plaintext = plaintext_allowed(os.environ, control.readint("pop3plaintext", 0))
        popup = Popup(hostname, os.getpid(), int(time.time()), tls_available=certfile is not None,
                      plaintext=plaintext)
        reader = LineReader(0, exact=True)  # what follows PASS is the subprogram's: never read ahead
        tls = None
        if implicit:
            if certfile is None:
                return DIE  # nothing can be said to a client that expects TLS at once
            from pyqmail.lib.pop3 import tlsrelay
            try:
                tls = tlsrelay.wrap(tlsrelay.context(certfile), 0, TIMEOUT)
            except (OSError, ValueError):
                return DIE
            popup.tls = True
            reader = LineReader(0)
            reader.recv = tls.recv
            out.send = tls.sendall
        out.reply(popup.greeting())
        while True:
            try:
                line = reader.line()
            except LineTooLong:
                out.err(b"line too long")
                linger(0, 1)  # so the reply is not destroyed by a reset for the unread rest
                return DIE
            reply, auth, end = popup.command(*parse(line))
            ctx = None
            if popup.start_tls and certfile:
                from pyqmail.lib.pop3 import tlsrelay
                try:
                    ctx = tlsrelay.context(certfile)
                except (OSError, ValueError):
                    popup.start_tls = False
                    reply = b"-ERR TLS not available\r\n"
            if reply:
                out.reply(reply)
            if ctx is not None:
                try:
                    tls = tlsrelay.wrap(ctx, 0, TIMEOUT)
                except OSError:
                    return DIE  # a failed handshake ends the session
                popup.start_tls, popup.tls = False, True
                # reads were one byte each: anything pipelined after STLS went into the handshake (RFC 2595)
                reader = LineReader(0)
                reader.recv = tls.recv
                out.send = tls.sendall
            if auth is not None:
                relay = None
                if tls is not None:
                    session, first = tls, bytes(reader.pending)

                    def relay(fd, deadline, session=session, first=first):
                        from pyqmail.lib.pop3.tlsrelay import relay as carry
                        said = carry(session, fd, first, TIMEOUT, deadline=deadline)
                        session.settimeout(TIMEOUT)  # for a reply after the subprogram ends
                        return said
                bound = check_timeout(os.environ)
                result = hand_over(child, auth, relay, bound)
                try:
                    if result:
                        out.reply(result)
                finally:
                    if result == TIMED_OUT:  # after the reply: under inetd fd 2 may be the client's socket
                        warn("qmail-popup", "killed %s: nothing said to the client within %d seconds"
                             % (os.fsdecode(child[0]), bound))
                return DIE
            if end:
                return DIE
    except Closed:
        return DIE


def run():
    """Console-script entry point."""
    main("qmail-popup", body, crash_code=DIE)
