"""qmail-getpw: find the account and extension for a local part in the passwd database (reference §1.27)."""

import errno
import os
import pwd

from pyqmail.lib import users
from pyqmail.lib.exits import Exit
from pyqmail.lib.program import main

USERLEN = 32  # qmail-getpw only tries user names shorter than this
QLX_USAGE = 100
QLX_NFS = 115
QLX_NOALIAS = 116
# djb's error_temp: errors worth retrying (an NFS server away, a full table), not "no such home"
TEMPORARY = {
    errno.EINTR, errno.ENOMEM, errno.ETXTBSY, errno.EIO, errno.ETIMEDOUT, errno.EAGAIN,
    errno.EDEADLK, errno.EBUSY, errno.ENFILE, errno.EMFILE, errno.EFBIG, errno.ENOSPC,
    errno.ENETDOWN, errno.ENETUNREACH, errno.ENETRESET, errno.ECONNABORTED, errno.ECONNRESET,
    errno.ENOBUFS, errno.ETOOMANYREFS, errno.ECONNREFUSED, errno.EHOSTDOWN, errno.EHOSTUNREACH,
    errno.EUSERS, errno.EDQUOT, errno.ESTALE, errno.ENOLCK,
}


def getpwnam(name):
    """Return the passwd entry for a byte-string name, or None."""
    try:
        return pwd.getpwnam(os.fsdecode(name))
    except (KeyError, ValueError):  # ValueError: a NUL, which no account name holds
        return None


def owns_home(pw):
    """Return True if pw's home exists and belongs to pw's uid; exit 115 if that cannot be known now."""
    try:
        st = os.stat(pw.pw_dir)
    except OSError as e:
        if e.errno in TEMPORARY:
            raise Exit(QLX_NFS)
        return False
    return st.st_uid == pw.pw_uid


def user_ext(local):
    """Return (pw, dash, ext) for the longest prefix of local, ending at its end or a break, that is a mail user."""
    end = len(local)
    while True:
        if end < USERLEN and (end == len(local) or local[end:end + 1] == users.BREAK):
            pw = getpwnam(users.lower(local[:end]))
            if pw is not None and pw.pw_uid != 0 and owns_home(pw):
                if end == len(local):
                    return pw, b"", b""
                return pw, b"-", local[end + 1:]
        if end == 0:
            return None
        end -= 1


def body(argv):
    """Print user, uid, gid, homedir, dash and ext for argv[0], each followed by a NUL."""
    if not argv:
        raise Exit(QLX_USAGE)
    local = os.fsencode(argv[0])
    found = user_ext(local)
    if found is None:
        found = getpwnam(users.ALIAS.encode()), b"-", local
    pw, dash, ext = found
    if pw is None:
        raise Exit(QLX_NOALIAS)
    fields = (os.fsencode(pw.pw_name), b"%d" % pw.pw_uid, b"%d" % pw.pw_gid, os.fsencode(pw.pw_dir), dash, ext)
    os.write(1, b"".join(field + b"\0" for field in fields))
    return 0


def run():
    """Console-script entry point."""
    main("qmail-getpw", body)
