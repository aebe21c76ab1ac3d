"""qmail-local: deliver the message on fd 0 to one local recipient as the user's .qmail file says (qmail-local(8))."""

import os
import time

from pyqmail.lib.config import dotqmail
from pyqmail.lib.local import msgfd
from pyqmail.lib.local.qmailfile import PATRN, exists, find_qmail, read_qmail
from pyqmail.lib.local.delivery_env import Delivery
from pyqmail.lib.util.program import default_signals
from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.program import main
from pyqmail.lib.util.sgetopt import BadOption, options

USAGE = "qmail-local: usage: qmail-local [ -nN ] user homedir local dash ext domain sender aliasempty"
STICKY = 0o1000
HARD_EXITS = frozenset((100, 64, 65, 70, 76, 77, 78, 112))


def parse_args(argv):
    """Return (deliver?, [8 operands as bytes]) from `[-nN] user homedir local dash ext domain sender dd`
    (str, or bytes as a qmail-lspawn worker passes them, `--` first)."""
    if argv[:1] == [b"--"]:  # no options: the operands as they are, without a round trip through str
        doit, operands = True, argv[1:]
    else:
        try:
            flags, rest = options([os.fsdecode(a) for a in argv], "nN", "qmail-local")
        except BadOption:
            raise Exit(PERM_FAILURE, USAGE)
        doit = not flags or flags[-1][0] == "N"
        operands = [os.fsencode(a) for a in rest]
    if len(operands) != 8 or not operands[1].startswith(b"/"):
        raise Exit(PERM_FAILURE, USAGE)
    return doit, operands


def say(text):
    """Write one report line to fd 1."""
    write_all(1, text + b"\n")


def enter_home(home, doit):
    """chdir to the home directory and refuse a writable one; a sticky one defers delivery."""
    try:
        os.chdir(home)
    except OSError as e:
        raise Exit(TEMP_FAILURE, "Unable to switch to %s: %s. (#4.3.0)" % (os.fsdecode(home), error_str(e.errno)))
    try:
        mode = os.stat(".").st_mode
    except OSError as e:
        raise Exit(TEMP_FAILURE, "Unable to stat home directory: %s. (#4.3.0)" % error_str(e.errno))
    if mode & PATRN:
        raise Exit(TEMP_FAILURE, "Uh-oh: home directory is writable. (#4.7.0)")
    if mode & STICKY:
        if doit:
            raise Exit(TEMP_FAILURE, "Home directory is sticky: user is editing his .qmail file. (#4.2.1)")
        os.write(2, b"Warning: home directory is sticky.\n")


def run_program(command, env):
    """Run `/bin/sh -c command` on the rewound message; return True if it asked to stop (exit 99)."""
    msgfd.rewind(0)
    try:
        pid = os.fork()
    except OSError as e:
        raise Exit(TEMP_FAILURE, "Unable to fork: %s. (#4.3.0)" % error_str(e.errno))
    if pid == 0:
        try:
            default_signals()  # SIGPIPE as qmail-command(8) says, and SIGXFSZ, both ignored by Python
            os.execve(b"/bin/sh", [b"/bin/sh", b"-c", command], env)
        except OSError as e:
            os.write(2, b"Unable to run /bin/sh: %s. (#4.3.0)\n" % error_str(e.errno).encode())
        finally:
            os._exit(111)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise Exit(TEMP_FAILURE, "Aack, child crashed. (#4.3.0)")
    code = os.WEXITSTATUS(status)
    if code in HARD_EXITS:
        raise Exit(PERM_FAILURE)
    if code not in (0, 99):
        raise Exit(TEMP_FAILURE)
    return code == 99


def forward(dtline, sender, recipients):
    """Queue DTLINE + message to every forward recipient in one qmail-queue run; return its pid."""
    from pyqmail.lib.queue.queuehere import open_queue
    msgfd.rewind(0)
    try:
        qq = open_queue()
    except OSError as e:
        raise Exit(TEMP_FAILURE, "Unable to fork: %s. (#4.3.0)" % error_str(e.errno))
    qq.put(dtline)
    try:
        for chunk in msgfd.chunks(0):
            qq.put(chunk)
    except msgfd.MessageReadError:
        qq.fail()
    result = qq.close(sender, recipients)
    if result:
        raise Exit(PERM_FAILURE if result[0] == "D" else 111, "Unable to forward message: %s." % result[1:])
    return qq.pid


def execute(lines, d, doit, forward_only, env):
    """Carry out the .qmail lines in order; return (files, forwards, programs, forward recipients)."""
    from pyqmail.lib.local import maildir, mbox
    counts = {"file": 0, "forward": 0, "program": 0}
    recipients = []
    for kind, value, shown in lines:
        stop = False
        if kind == dotqmail.FIRST_BLANK:
            raise Exit(TEMP_FAILURE, "Uh-oh: first line of .qmail file is blank. (#4.2.1)")
        if kind in (dotqmail.MBOX, dotqmail.MAILDIR):
            counts["file"] += 1
            if forward_only:
                raise Exit(TEMP_FAILURE, "Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)")
            if not doit:
                say(kind.encode() + b" " + shown)
            elif kind == dotqmail.MAILDIR:
                maildir.deliver(value, d.rpline + d.dtline, 0)
            else:
                mbox.deliver(value, d.ufline + d.rpline + d.dtline, 0)
        elif kind == dotqmail.PROGRAM:
            counts["program"] += 1
            if forward_only:
                raise Exit(TEMP_FAILURE, "Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)")
            if doit:
                stop = run_program(value, env)
            else:
                say(b"program " + shown)
        elif kind == dotqmail.LIST:
            forward_only = True
        elif kind == dotqmail.FORWARD:
            counts["forward"] += 1
            if doit:
                recipients.append(value)
            else:
                say(b"forward " + shown)
        if stop:
            break
    return counts, recipients


def deliver(argv):
    """Deliver (or with -n describe) the message; return 0, or raise Exit with the report."""
    os.umask(0o077)
    doit, (user, home, local, dash, ext, host, sender, aliasempty) = parse_args(argv)
    if doit and (os.getuid() == 0 or os.geteuid() == 0):
        raise Exit(TEMP_FAILURE, "Not allowed to perform deliveries as root. (#4.3.0)")
    enter_home(home, doit)
    d = Delivery(user, home, local, ext, host, sender, time.time())
    if doit:
        try:
            if msgfd.header_has_line(0, d.dtline):
                raise Exit(PERM_FAILURE, "This message is looping: it already has my Delivered-To line. (#5.4.6)")
        except msgfd.MessageReadError as e:
            raise Exit(TEMP_FAILURE, msgfd.read_text(e))
    name, fd, forward_only, default = find_qmail(dash, ext)
    if fd is None and dash:
        raise Exit(PERM_FAILURE, "Sorry, no mailbox here by that name. (#5.1.1)")
    owner, owner_default = dotqmail.owner_files(dash, ext)
    has_owner = bool(sender) and sender != b"#@[]" and exists(owner)
    newsender = dotqmail.new_sender(sender, local, host, has_owner, has_owner and exists(owner_default))
    text = read_qmail(name, fd) if fd is not None else b""
    if not text:
        text, forward_only = aliasempty, False
    lines = dotqmail.parse(text)
    # built only for |program lines: the copy of the whole environment is a quarter of a maildir delivery
    env = d.program_env(os.environb, default, newsender) if any(
        kind == dotqmail.PROGRAM for kind, _, _ in lines) else None
    counts, recipients = execute(lines, d, doit, forward_only, env)
    qp = forward(d.dtline, newsender, recipients) if recipients else None
    say(b"did %d+%d+%d" % (counts["file"], counts["forward"], counts["program"]))
    if qp:
        say(b"qp %d" % qp)
    return 0


def body(argv):
    """Run the delivery; reports go to fd 2 without a program-name prefix, as qmail-local's do."""
    try:
        return deliver(argv)
    except Exit as e:
        if e.message:
            os.write(2, e.message.encode("utf-8", "surrogateescape") + b"\n")
        raise Exit(e.code)


def run():
    """Console-script entry point."""
    from pyqmail.lib.util.envsnapshot import undo_locale_coercion
    undo_locale_coercion()  # |program lines get our environment: not the interpreter's LC_CTYPE
    main("qmail-local", body, crash_code=TEMP_FAILURE)
