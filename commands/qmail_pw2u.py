"""qmail-pw2u: turn a V7 passwd file (stdin) into qmail-users(5) assignments (stdout) (qmail-pw2u(8))."""

import os
import sys

from pyqmail.lib.config import control, users
from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main
from pyqmail.lib.util.sgetopt import BadOption, options

USAGE = "usage: qmail-pw2u [ -/ohHuUC ] [ -c char ]"
SKIP_MISSING, STOP_MISSING, NO_HOME_CHECK = "o", "h", "H"


class Settings:
    """The options, applied in order so that the last of conflicting ones wins, as getopt(3) gives them."""

    def __init__(self, argv):
        self.dashcolon = b"-:"
        self.homes = SKIP_MISSING
        self.no_upper = True
        self.brk = users.BREAK
        try:
            flags, _ = options(argv, "/ohHuUc:C", "qmail-pw2u")
        except BadOption as e:
            raise Exit(PERM_FAILURE, "%s\n%s" % (e.why, USAGE))
        for flag, value in flags:
            if flag == "/":
                self.dashcolon = b"-/:"
            elif flag in ("o", "h", "H"):
                self.homes = flag
            elif flag in ("u", "U"):
                self.no_upper = flag == "U"
            elif flag == "c":
                self.brk = os.fsencode(value)[:1]
            elif flag == "C":
                self.brk = b""


def fatal(text):
    """Return the Exit qmail-pw2u dies with: `fatal: <text>`, exit 111."""
    return Exit(TEMP_FAILURE, "fatal: " + text)


def read_users_file(name):
    """Return users/<name>'s bytes, or None if it does not exist (a regular file only: a FIFO would hold the run
    for ever)."""
    from pyqmail.lib.util.regularfile import open_regular
    try:
        with open(open_regular(os.path.join("users", name), follow=True), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError:
        raise fatal("unable to read controls")


def name_set(name):
    """Return users/<name> (include, exclude) as a set of lowercased names, or None if absent."""
    data = read_users_file(name)
    return None if data is None else {users.lower(line) for line in control.parse_list(data)}


def mailnames_map():
    """Return users/mailnames as {lowercased user: b"name1:name2..."}; the last line for a user wins."""
    data = read_users_file("mailnames")
    lines = control.parse_list(data) if data is not None else []
    return {users.lower(k): v for k, sep, v in (line.partition(b":") for line in lines) if sep}


def home_is_mine(home, uid, homes):
    """Apply the home-directory strategy: True to keep the account."""
    if homes == NO_HOME_CHECK:
        return True
    try:
        st = os.stat(home)
    except FileNotFoundError:
        if homes == STOP_MISSING:
            raise fatal("unable to stat " + os.fsdecode(home))
        return False
    except OSError:
        raise fatal("unable to stat " + os.fsdecode(home))
    return st.st_uid == uid


def account_lines(line, s, include, exclude, mailnames, allusers):
    """Return the assign lines for one passwd line (possibly none), recording the account in allusers."""
    fields = line.split(b":")
    if b"\0" in line or len(fields) < 7:
        return []
    user, uidstr, gidstr, home = fields[0], fields[2], fields[3], fields[5]
    uid = control.scan_ulong(uidstr, 0)
    if uid == 0 or (s.no_upper and user != user.lower()):
        return []
    if users.unusable(users.Entry(False, user, (user, uidstr, gidstr, home, b"", b""))) is not None:
        return []  # qmail-newu would refuse the whole file for it (a relative home, a uid beyond 32 bits)
    if include is not None and users.lower(user) not in include:
        return []
    if exclude is not None and users.lower(user) in exclude:
        return []
    if not home_is_mine(home, uid, s.homes):
        return []
    uugh = b":%s:%s:%s:%s:" % (user, uidstr, gidstr, home)
    allusers[users.lower(user)] = uugh
    out = []
    if user == users.ALIAS.encode():
        out.append(b"+" + uugh + s.dashcolon + b":\n")
    for name in mailnames.get(users.lower(user), user).split(b":"):
        if not name:
            continue
        out.append(b"=" + name + uugh + b"::\n")
        if s.brk:
            out.append(b"+" + name + s.brk + uugh + s.dashcolon + b":\n")
    return out


def subuser_lines(line, s, allusers):
    """Return the assign lines for one users/subusers line `sub:user:pre:`."""
    fields = line.split(b":")
    if len(fields) < 3:
        return []
    sub, user = fields[0], fields[1]
    uugh = allusers.get(users.lower(user))
    if uugh is None:
        raise fatal("unable to find %s user for subuser" % os.fsdecode(user))
    if len(fields) < 4:
        return []
    pre = fields[2]
    out = [b"=" + sub + uugh + s.dashcolon + pre + b":\n"]
    if s.brk:
        out.append(b"+" + sub + s.brk + uugh + s.dashcolon + pre + b"-:\n")
    return out


def body(argv):
    """Convert passwd on stdin, then add users/subusers and users/append, and the final `.`."""
    s = Settings(argv)
    try:
        os.chdir(control.qmailhome())
    except OSError:
        raise fatal("unable to chdir")
    include, exclude, mailnames = name_set("include"), name_set("exclude"), mailnames_map()
    try:
        passwd = sys.stdin.buffer.read()
    except OSError:
        raise fatal("unable to read input")
    out, allusers = [], {}
    for line in passwd.split(b"\n"):
        out += account_lines(line, s, include, exclude, mailnames, allusers)
    if not any(line[:2] == b"+:" for line in out):
        raise fatal("unable to find %s user" % users.ALIAS)
    subusers = read_users_file("subusers")
    for line in (subusers.split(b"\n") if subusers is not None else []):
        out += subuser_lines(line, s, allusers)
    append = read_users_file("append") or b""
    if append and not append.endswith(b"\n"):
        append += b"\n"  # else the `.` line would be glued to its last line
    out += [append, b".\n"]
    try:
        sys.stdout.buffer.write(b"".join(out))
        sys.stdout.buffer.flush()
    except OSError:
        raise fatal("unable to write output")
    return 0


def run():
    """Console-script entry point."""
    main("qmail-pw2u", body)
