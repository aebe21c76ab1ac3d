"""qmail-inject: give a message the header it needs, rewrite its addresses, and queue it (or print it: -n)."""

import os
import time

from pyqmail.lib.config import control
from pyqmail.lib.rfc822 import token822
from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.inject.injecthdr import Header, default_from, default_sender, die, refuse_controls, unparsable
from pyqmail.lib.inject.injectinput import Input, header
from pyqmail.lib.inject.injectrw import Rewriter
from pyqmail.lib.util.program import main
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.rfc822.quote import line_safe, quote2
from pyqmail.lib.util.sgetopt import BadOption, getopt

PROGRAM = "qmail-inject"


def env(*names):
    """Return the value of the first of names that is set (even empty), else None."""
    for name in names:
        value = os.environb.get(name)
        if value is not None:
            return value
    return None


MFT_MAX = 1 << 20  # bytes of $QMAILMFTFILE: a list of mailing lists, not /dev/zero


def followup_lists():
    """Return the lower-cased mailing lists of $QMAILMFTFILE (read before going to QMAILHOME), or None."""
    name = env(b"QMAILMFTFILE")
    if name is None:
        return None
    try:
        with open(name, "rb") as f:
            data = f.read(MFT_MAX + 1)
    except FileNotFoundError:
        return None
    except OSError:
        raise die(111, b"read error\n")
    if len(data) > MFT_MAX:
        raise die(111, b"QMAILMFTFILE is longer than %d bytes\n" % MFT_MAX)
    return {line.lower() for line in control.parse_list(data)}


def control_value(name):
    """Return control/name's first line, else control/me's, else the name itself; a line that is empty once
    its trailing blanks are gone (control.BLANKS: a file saved with CRLF, or left empty) counts as no file."""
    for filename in (name, "me"):
        try:
            value = control.readline(filename)
        except OSError:
            raise die(111, b"read error\n")
        if value:
            return value
    return name.encode()


def controls():
    """Go to QMAILHOME and return (Rewriter, idhost) from control files and their QMAIL* overrides."""
    try:
        os.chdir(control.qmailhome())
    except OSError:
        raise die(111, b"internal bug\n")
    values = []
    for name, variable in (("defaultdomain", b"QMAILDEFAULTDOMAIN"), ("defaulthost", b"QMAILDEFAULTHOST"),
                           ("plusdomain", b"QMAILPLUSDOMAIN"), ("idhost", b"QMAILIDHOST")):
        override = env(variable)
        values.append(control_value(name) if override is None else override)
    domain, host, plus, idhost = values
    rw = Rewriter(host, domain, plus)
    bad = rw.unparsable()
    if bad is not None:
        raise unparsable(bad)
    return rw, line_safe(idhost)  # the Message-ID line is written raw: no CR or LF may end it early


def one_address(rw, arg):
    """Return arg (quoted as qmail does) parsed and rewritten, or None if it does not parse."""
    tokens = token822.parse(quote2(arg))
    return None if tokens is None else token822.unquote(rw.address(tokens))


def options(argv, rw):
    """Return (strategy letter, queue?, -f sender or None, operands) from qmail-inject's options."""
    strategy, queue, sender = "A", True, None
    try:
        for letter, value in getopt(argv, "aAhHnNf:", PROGRAM):
            if letter is None:
                return strategy, queue, sender, value
            if letter in "aAhH":
                strategy = letter
            elif letter in "nN":
                queue = letter == "N"
            else:
                sender = one_address(rw, os.fsencode(value))
                if sender is None:
                    raise unparsable(quote2(os.fsencode(value)))
    except BadOption as e:
        raise Exit(PERM_FAILURE, str(e)[len(PROGRAM) + 2:])


class Output:
    """Where the message goes: a qmail-queue (or this process writing the queue), or fd 1 for -n."""

    def __init__(self, queue):
        self.qq = None
        if queue:
            from pyqmail.lib.queue.queuehere import open_queue
            try:
                self.qq = open_queue(".")
            except OSError:
                raise die(111, b"unable to run qmail-queue\n")

    def put(self, data):
        """Pass message bytes on."""
        if self.qq is not None:
            self.qq.put(data)
            return
        try:
            write_all(1, data)
        except OSError:
            raise die(111, b"unable to write output\n")

    def abort(self):
        """Queue nothing."""
        if self.qq is not None:
            self.qq.abort()


def body(argv):
    """Read the message on fd 0, complete its header, and queue or print it."""
    now, pid = int(time.time()), os.getpid()
    flags = (env(b"QMAILINJECT") or b"").decode("latin-1")
    host = env(b"QMAILHOST", b"MAILHOST")
    user = env(b"QMAILUSER", b"MAILUSER", b"USER", b"LOGNAME")
    user = b"anonymous" if user is None else user
    suser, shost = env(b"QMAILSUSER"), env(b"QMAILSHOST")
    followup = followup_lists()
    rw, idhost = controls()
    strategy, queue, sender, operands = options(argv, rw)
    if strategy == "A":
        strategy = "a" if operands else "h"
    recipients = []
    if strategy != "h":
        for arg in operands:
            address = one_address(rw, os.fsencode(arg))
            if address is None:
                raise die(100, b"unable to parse address: " + os.fsencode(arg) + b"\n")
            recipients.append(address)
    head = Header(rw, flags, sender, header_recipients=strategy != "a")
    source = Input(0)
    start = header(source, head.field)
    if head.sender is None:
        head.sender = default_sender(rw, user if suser is None else suser, host if shost is None else shost,
                                     flags, now, pid)
    if strategy != "a":
        recipients += head.recipients()
    refuse_controls(head.sender, recipients)
    if not queue:
        Output(False).put(b"Return-Path: <" + quote2(head.sender) + b">\n")
    out = Output(queue)
    try:
        def make_from():
            name = env(b"QMAILNAME", b"MAILNAME", b"NAME")
            return default_from(rw, line_safe(user), None if host is None else line_safe(host),
                                None if name is None else line_safe(name), "c" in flags)
        out.put(head.added(now, pid, idhost, make_from, followup))
        out.put(start)
        for chunk in source.chunks():
            out.put(chunk)
    except BaseException:
        out.abort()
        raise
    return finish(out, head.sender, recipients)


def finish(out, sender, recipients):
    """Close the queue and turn its answer into qmail-inject's message and exit code."""
    if out.qq is None:
        return 0
    result = out.qq.close(sender, recipients)
    if result:
        raise die(100 if result[0] == "D" else 111, result[1:].encode("latin-1") + b"\n")
    return 0


def run():
    """Launcher entry point."""
    main(PROGRAM, body, crash_code=TEMP_FAILURE)
