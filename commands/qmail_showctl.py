"""qmail-showctl: describe the compile-time settings and every control file (qmail-showctl(8))."""

import grp
import os
import pwd
import sys

from pyqmail.lib.config import control, ctlreport, users
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main
from pyqmail.lib.util.regularfile import open_regular
from pyqmail.lib.queue.queue import SPLIT

PATERNALISM = 0o002  # conf-patrn
SPAWN = 120  # conf-spawn
QMAIL_USERS = ("alias", "qmaild", "qmaill", "root", "qmailp", "qmailq", "qmailr", "qmails")
QMAIL_GROUPS = ("nofiles", "qmail")  # qmail-showctl prints auto_gidn, then auto_gidq


def say(text):
    """Write bytes to stdout."""
    sys.stdout.buffer.write(text)


def tree_owner(home):
    """Return (uid, gid) owning the queue (or the tree): a single-user tree's one account."""
    for where in (os.path.join(home, "queue"), home):
        try:
            st = os.stat(where)
            return st.st_uid, st.st_gid
        except OSError:
            continue
    return os.getuid(), os.getgid()


def qmail_ids(home):
    """Return the uids of qmail's users and gids of its groups; absent accounts are the tree's owner."""
    uid, gid = tree_owner(home)
    uids = []
    for name in QMAIL_USERS:
        try:
            uids.append(pwd.getpwnam(name).pw_uid)
        except KeyError:
            uids.append(uid)
    gids = []
    for name in QMAIL_GROUPS:
        try:
            gids.append(grp.getgrnam(name).gr_gid)
        except KeyError:
            gids.append(gid)
    return uids, gids


def read(name):
    """Return a control file's bytes, None if absent; other errors raise OSError, as does anything but a
    regular file (a named pipe would hang the report, /dev/zero fill the memory)."""
    try:
        fd = open_regular(name, follow=True)
    except FileNotFoundError:
        return None
    with open(fd, "rb") as f:
        return f.read()


def absent(name):
    """Return True if the file does not exist (an unreadable one counts as present, as in qmail)."""
    try:
        return read(name) is None
    except OSError:
        return False


def mtime(name):
    """Return a file's mtime, or None if it cannot be stat'ed."""
    try:
        return os.stat(name).st_mtime
    except OSError:
        return None


def describe(kind, name, default, pre, post, me, rcpthosts_present):
    """Return one control file's entry."""
    if kind == "cdb":
        return ctlreport.cdb_entry(mtime("morercpthosts"), mtime("morercpthosts.cdb"))
    try:
        data = read(name)
    except OSError:
        return ctlreport.start(name) + b"Oops! Trouble reading this file.\n"
    if kind == "more":
        default, pre, post = (ctlreport.MORE_WITH_RCPTHOSTS if rcpthosts_present
                              else ctlreport.MORE_WITHOUT_RCPTHOSTS)
        kind = "list"
    if kind == "int":
        return ctlreport.int_entry(name, data, default, pre, post)
    if kind == "list":
        return ctlreport.list_entry(name, data, default, pre, post)
    return ctlreport.str_entry(name, data, default, pre, me if kind == "str-me" else None)


def body(argv):
    """Print the header, the known control files in qmail's order, then every other file in control/."""
    home = control.qmailhome()
    uids, gids = qmail_ids(home)
    say(ctlreport.header(home, users.BREAK.decode(), PATERNALISM, SPAWN, SPLIT, uids, gids))
    try:
        os.chdir(home)
    except OSError:
        say(b"Oops! Unable to chdir to %s.\n" % os.fsencode(home))
        raise Exit(TEMP_FAILURE)
    try:
        os.chdir("control")
    except OSError:
        say(b"Oops! Unable to chdir to control.\n")
        raise Exit(TEMP_FAILURE)
    try:
        others = sorted(set(os.listdir(".")) - ctlreport.KNOWN)
    except OSError:
        say(b"Oops! Unable to open current directory.\n")
        raise Exit(TEMP_FAILURE)
    try:
        me_data = read("me")
    except OSError:
        say(b"Oops! Trouble reading control/me.")
        raise Exit(TEMP_FAILURE)
    me = None if me_data is None else ctlreport.first_line(me_data)
    rcpthosts_present = None
    for kind, name, default, pre, post in ctlreport.ENTRIES:
        say(describe(kind, name, default, pre, post, me, rcpthosts_present))
        if name == "rcpthosts":
            rcpthosts_present = not absent("rcpthosts")
    for name in others:
        say(ctlreport.unknown_entry(name))
    return 0


def run():
    """Console-script entry point."""
    main("qmail-showctl", body)
