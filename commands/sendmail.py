"""sendmail: the sendmail command line for programs that expect it, run as qmail-inject (or qmail-qread, qmail-smtpd)."""

import os
import sys

from pyqmail.lib.config import control
from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main, warn
from pyqmail.lib.util.sgetopt import BadOption, getopt

USAGE = "usage: sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]"
SPEC = "vimte:f:p:o:B:F:EJxb:"
SMTPD_ENV = {"RELAYCLIENT": "", "DATABYTES": "0", "PROTO": "TCP", "TCPLOCALIP": "127.0.0.1",
             "TCPLOCALHOST": "localhost", "TCPREMOTEIP": "127.0.0.1", "TCPREMOTEHOST": "localhost",
             "TCPREMOTEINFO": "sendmail-bs"}


def run_program(name, argv):
    """Exec bin/<name> (we are in QMAILHOME) with argv; if that fails, exit 111 saying so."""
    try:
        os.execv("bin/" + name, ["bin/" + name] + argv)
    except OSError:
        pass
    raise Exit(TEMP_FAILURE, "fatal: unable to run " + name)


def smtpd():
    """Talk SMTP on fd 0/1 through qmail-smtpd, as a trusted local client unless PROTO says otherwise."""
    if "PROTO" not in os.environ:
        os.environ.update(SMTPD_ENV)
    run_program("qmail-smtpd", [])


def set_sender_environment(sender):
    """Make qmail-inject's default From match the -f sender: QMAILUSER and QMAILHOST from it, no names."""
    for name in (b"QMAILNAME", b"MAILNAME", b"NAME", b"QMAILHOST", b"MAILHOST"):
        os.environb.pop(name, None)
    at = sender.rfind(b"@")
    if at < 0:
        os.environb[b"QMAILUSER"] = sender
        return
    os.environb[b"QMAILHOST"] = sender[at + 1:]
    os.environb[b"QMAILUSER"] = sender[:at]


def body(argv):
    """Take sendmail's options and run qmail-inject -H or -a with the recipients."""
    try:
        os.chdir(control.qmailhome())
    except OSError:
        raise Exit(TEMP_FAILURE, "fatal: unable to switch to qmail home directory")
    progname = os.path.basename(sys.argv[0])
    header, sender = False, None
    try:
        for letter, value in getopt(argv, SPEC, progname, rest="EJ"):
            if letter is None:
                operands = value
            elif letter == "t":
                header = True
            elif letter == "f":
                sender = value
            elif letter == "F":
                os.environ["MAILNAME"] = value
            elif letter == "b":
                if value[:1] == "p":
                    run_program("qmail-qread", [])
                if value[:1] == "s":
                    smtpd()
                if value[:1] != "m":
                    raise Exit(PERM_FAILURE, USAGE)
    except BadOption as e:
        warn(progname, str(e)[len(progname) + 2:])
        raise Exit(PERM_FAILURE, USAGE)
    if progname == "mailq":
        run_program("qmail-qread", [])
    if progname == "newaliases":
        raise Exit(PERM_FAILURE, "fatal: please use fastforward/newaliases instead")
    args = ["-H" if header else "-a"]
    if sender is not None:
        if sender[:1] == "<" and sender[-1:] == ">":
            sender = sender[1:-1]  # Sendmail's and Postfix's `-f '<>'`, `-f '<a@b>'`
        args += ["-f", sender]
        if sender:  # the null sender has no address for a From to match
            set_sender_environment(os.fsencode(sender))
    run_program("qmail-inject", args + ["--"] + operands)


def run():
    """Launcher entry point."""
    main("sendmail", body, crash_code=TEMP_FAILURE)
