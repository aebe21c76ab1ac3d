"""qmail-smtpd: receive mail via SMTP and hand it to qmail-queue (see qmail-smtpd(8))."""

import posix  # not os: start-up cost (lib/config/control)
import time

from pyqmail.lib.smtpd import smtpcmd
from pyqmail.lib.util.program import call
from pyqmail.lib.rfc822.quote import has_control
from pyqmail.lib.smtpd.smtpconf import Config, ControlError
from pyqmail.lib.smtpd.smtpio import Gone, LineTooLong, SmtpIO
from pyqmail.lib.smtpd.smtpreply import REPLY, Quit


class Session:
    """One SMTP conversation: qmail-smtpd's state (seenmail, mailfrom, rcptto) and its replies."""

    def __init__(self, conf, io):
        self.conf, self.io = conf, io
        self.helo = None
        self.seenmail = self.barf = self.utf8 = False
        self.mailfrom, self.rcptto = b"", []
        self.user = None  # the authenticated login
        self.ipme = None

    def greet(self, code, end=b"\r\n"):
        """Queue `<code><greeting><end>`."""
        self.io.out(code + self.conf.greeting + end)

    def address(self, arg, control_reply):
        """Return (address, ESMTP parameters), or None after replying 555 or control_reply (a CR in it)."""
        addr, rest = smtpcmd.parse_address(arg)
        if has_control(addr):  # qmail would store it, and qmail-local write it into Delivered-To
            self.io.out(REPLY[control_reply])
            return None
        if self.conf.liphost is not None and b"@[" in addr:
            if self.ipme is None:
                from pyqmail.lib.config.ipme import IpMe
                self.ipme = IpMe()
            try:
                addr = smtpcmd.replace_local_literal(addr, self.conf.liphost, self.ipme, self.conf.ipv6)
            except OSError:
                self.io.out(REPLY["ipme"])
                raise Quit(1)
        if smtpcmd.too_long(addr):
            self.io.out(REPLY["syntax"])
            return None
        return addr, rest

    def smtp_helo(self, arg):
        """HELO: greet, forget the transaction, remember the name for the Received line."""
        self.greet(b"250 ")
        self.seenmail, self.helo = False, arg

    def smtp_ehlo(self, arg):
        """EHLO: as HELO, listing the extensions."""
        self.greet(b"250-", b"\r\n250-PIPELINING\r\n" + b"".join(b"250-%s\r\n" % x for x in self.extensions()) +
                   b"250 8BITMIME\r\n")
        self.seenmail, self.helo = False, arg

    def extensions(self):
        """Return the EHLO keywords beyond qmail's, as the control files allow."""
        conf, found = self.conf, []
        if conf.size:
            found.append(b"SIZE %d" % conf.databytes if conf.databytes else b"SIZE")
        if conf.utf8:
            found.append(b"SMTPUTF8")
        if conf.certfile and self.io.tls is None and self.io.can_tls():
            found.append(b"STARTTLS")
        if conf.checkpassword and self.io.tls is not None and self.user is None:
            found.append(b"AUTH LOGIN PLAIN")
        return found

    def smtp_rset(self, arg):
        """RSET: forget the transaction."""
        self.seenmail = False
        self.io.out(b"250 flushed\r\n")

    def smtp_mail(self, arg):
        """MAIL: start a transaction; a badmailfrom sender is refused at each RCPT, as qmail does."""
        parsed = self.address(arg, "ctlmail")
        if parsed is None:
            return
        addr, rest = parsed
        params = smtpcmd.parse_params(rest) if rest else []
        if self.conf.size and self.conf.databytes and (smtpcmd.size_param(params) or 0) > self.conf.databytes:
            self.io.out(REPLY["size"])
            return
        self.utf8 = self.conf.utf8 and any(key == b"SMTPUTF8" for key, _ in params)
        self.barf = smtpcmd.in_badmailfrom(addr, self.conf.badmailfrom)
        self.seenmail, self.mailfrom, self.rcptto = True, addr, []
        self.io.out(REPLY["ok"])

    def smtp_rcpt(self, arg):
        """RCPT: rcpthosts (unless RELAYCLIENT or AUTH), limits and the optional recipient check."""
        if not self.seenmail:
            return self.io.out(REPLY["wantmail"])
        parsed = self.address(arg, "ctlrcpt")
        if parsed is None:
            return
        addr = parsed[0]
        if self.barf:
            return self.io.out(REPLY["bmf"])
        if len(self.rcptto) >= self.conf.maxrcpt:
            return self.io.out(REPLY["toomany"])
        if self.conf.relayclient is not None:
            addr += self.conf.relayclient
        elif self.user is None and not self.allowed(addr):
            return self.io.out(REPLY["nogateway"])
        if self.conf.rcptcheck:
            from pyqmail.lib.smtpd.smtprcpt import check
            refusal = check(addr)
            if refusal:
                return self.io.out(REPLY[refusal] if refusal in REPLY else refusal)
        self.rcptto.append(addr)
        self.io.out(REPLY["ok"])

    def allowed(self, addr):
        """rcpthosts; a morercpthosts.cdb read error ends the session as qmail's die_control."""
        try:
            return self.conf.host_allowed(addr)
        except OSError:
            self.io.out(REPLY["controls"])
            raise Quit(1)

    def smtp_data(self, arg):
        """DATA: queue the message (lib/smtpd/smtpqueue)."""
        if not self.seenmail:
            return self.io.out(REPLY["wantmail"])
        if not self.rcptto:
            return self.io.out(REPLY["wantrcpt"])
        self.seenmail = False
        from pyqmail.lib.smtpd.smtpqueue import deliver
        deliver(self)

    def smtp_quit(self, arg):
        """QUIT: say goodbye and exit 0."""
        self.greet(b"221 ")
        raise Quit(0)

    def smtp_help(self, arg):
        """HELP: notqmail's text."""
        self.io.out(b"214 notqmail home page: https://notqmail.org\r\n")

    def smtp_noop(self, arg):
        """NOOP."""
        self.io.out(REPLY["ok"])

    def smtp_vrfy(self, arg):
        """VRFY: qmail never verifies."""
        self.io.out(b"252 send some mail, i'll try my best\r\n")

    def smtp_starttls(self, arg):
        """STARTTLS: only when control/servercert.pem exists and fd 0 is a socket."""
        if not self.conf.certfile or self.io.tls is not None or not self.io.can_tls():
            return self.io.out(REPLY["unimpl"])
        from pyqmail.lib.smtpd.smtptls import start
        start(self, self.conf.certfile)

    def smtp_auth(self, arg):
        """AUTH: PLAIN and LOGIN, over TLS only (lib/smtpd/smtpauth)."""
        from pyqmail.lib.smtpd.smtpauth import auth
        auth(self, arg)

    def smtp_unknown(self, arg):
        """Anything else."""
        self.io.out(REPLY["unimpl"])


COMMANDS = {verb.encode(): "smtp_" + verb for verb in (
    "helo", "ehlo", "mail", "rcpt", "data", "rset", "quit", "help", "noop", "vrfy", "starttls", "auth")}
PIPELINED = {b"mail", b"rcpt", b"rset"}  # qmail flushes after every other command


def serve(session):
    """Read and answer commands until QUIT (Quit) or the end of the connection (Gone)."""
    io = session.io
    while True:
        verb, arg = smtpcmd.split_command(io.readline())
        getattr(session, COMMANDS.get(verb, "smtp_unknown"))(arg)
        if verb not in PIPELINED:
            io.flush()


def body(argv):
    """Greet, serve commands, and map how the session ended to qmail-smtpd's exit codes."""
    from pyqmail.lib.util.netlog import Log
    Log("qmail-smtpd")  # only for its guard: fd 2 must never be the client's socket
    io = SmtpIO(0, 1)
    try:
        return converse(io)
    finally:
        io.close()  # TLS state and socket objects: a reused worker must find nothing of the session after it


def converse(io):
    """Read the controls and hold the session; return the exit code."""
    linger = False
    conf = None
    try:
        try:
            conf = Config()
        except ControlError:
            io.out(REPLY["controls"])
            raise Quit(1)
        io.timeout, io.deadline = conf.timeout, time.monotonic() + conf.deadline if conf.deadline else None
        session = Session(conf, io)
        session.greet(b"220 ", b" ESMTP\r\n")
        serve(session)
    except Quit as q:
        code = q.code
    except TimeoutError:
        io.out(b"451 timeout (#4.4.2)\r\n")
        code = 1
    except LineTooLong:  # a command or AUTH line over the bound: answer at once and hang up, never wait for its LF
        io.out(REPLY["longline"])
        code, linger = 1, True
    except Gone:
        return 1
    except MemoryError:
        io.out(b"421 out of memory (#4.3.0)\r\n")
        code = 1
    finally:
        if conf is not None:
            conf.close()  # morercpthosts.cdb, opened for this session
    io.deadline = io.data_deadline = None  # the last reply gets the per-read timeout after any deadline
    try:
        io.flush(last=True)  # after TLS, with the close_notify
    except (Gone, TimeoutError):
        return code
    if linger:
        from pyqmail.lib.util.timedio import linger as drain
        drain()  # the client is still sending its line: closing now could reset the reply away
    return code


def connection():
    """Serve the connection on fds 0 and 1 and return the exit code (qmail-tcpserver reuses its workers)."""
    return call("qmail-smtpd", body, crash_code=1)


def run():
    """Entry point."""
    posix._exit(connection())
