"""qmail-getpw's rules: the account and extension a local part belongs to in the passwd database."""

from __future__ import annotations

import os
import pwd

from pyqmail.lib.config import users
from pyqmail.lib.util.errstr import is_temp
from pyqmail.lib.util.exits import QLX_NFS, QLX_NOALIAS, Exit

USERLEN = 32  # qmail-getpw only tries user names shorter than this


def getpwnam(name: bytes) -> pwd.struct_passwd | None:
    """Return the passwd entry for a byte-string name, or None."""
    try:
        return pwd.getpwnam(os.fsdecode(name))
    except (KeyError, ValueError):  # ValueError: a NUL, which no account name holds
        return None


def owns_home(pw: pwd.struct_passwd) -> bool:
    """Return True if pw's home exists and belongs to pw's uid; exit QLX_NFS if that cannot be known now."""
    try:
        st = os.stat(pw.pw_dir)
    except OSError as e:
        if is_temp(e.errno):
            raise Exit(QLX_NFS)
        return False
    return st.st_uid == pw.pw_uid


def user_ext(local: bytes) -> tuple[pwd.struct_passwd, bytes, bytes] | None:
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


def lookup(local: bytes) -> tuple[pwd.struct_passwd, bytes, bytes]:
    """Return (pw, dash, ext) for local: its mail user, else the alias account with the whole local part as
    extension; exit QLX_NOALIAS when there is no alias account either."""
    found = user_ext(local)
    if found is not None:
        return found
    alias = getpwnam(users.ALIAS.encode())
    if alias is None:
        raise Exit(QLX_NOALIAS)
    return alias, b"-", local


def assignment(local: bytes) -> users.Assignment:
    """Return qmail-getpw's answer for local as a users.Assignment (its exit codes raise Exit)."""
    pw, dash, ext = lookup(local)
    return users.Assignment(os.fsencode(pw.pw_name), pw.pw_uid, pw.pw_gid, os.fsencode(pw.pw_dir), dash, ext)
