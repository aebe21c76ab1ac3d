"""The optional recipient check at RCPT (control/smtprcptcheck): refuse local parts nobody receives.

A recipient in a domain of control/locals (default: me) is known when qmail-lspawn would find an account
for it (users/cdb, else qmail-getpw's passwd rules) and, if that leaves an extension, the account has a
.qmail file for it (qmail-local's search, .qmail-default included). Other domains (virtualdomains,
remote) are not checked. When a home cannot be read, the recipient is accepted: qmail-local will decide.
"""

from __future__ import annotations

import os

from pyqmail.lib.config import control, dotqmail, users
from pyqmail.lib.util.exits import QLX_NOALIAS


def local_domains() -> set[bytes]:
    """Return control/locals lowercased (absent: control/me), as qmail-send reads it."""
    me = control.me()
    return set(d.lower() for d in control.readlist("locals", [me] if me else []))


def assignment(local: bytes) -> users.Assignment:
    """Return the Assignment qmail-lspawn would use for local, or None for nobody but alias's .qmail files."""
    found = users.lookup(control.qmailhome(), local)
    if found is not None:
        return found
    from pyqmail.lib.config import getpw
    return getpw.assignment(local)


def has_dotqmail(homedir: bytes, dash: bytes, ext: bytes) -> bool:
    """True when one of qmail-local's candidate .qmail files for ext exists in homedir (or it cannot be read)."""
    try:
        names = set(os.listdir(os.fsencode(homedir)))
    except OSError:
        return True
    return any(name in names for name, _ in dotqmail.candidates(dash, ext))


def check(address: bytes) -> str | bytes:
    """Return "" when the recipient may be accepted, else the reply key or reply bytes to refuse it with."""
    at = address.rfind(b"@")
    if at < 0 or address[at + 1:].lower() not in local_domains():
        return ""
    try:
        a = assignment(address[:at])
    except users.UsersCdbError:
        return b"451 unable to check recipient (#4.3.0)\r\n"
    except Exception as e:  # qmail-getpw's temporary troubles (Exit(QLX_NFS) ...), a missing alias account
        if getattr(e, "code", 0) == QLX_NOALIAS:  # no alias account: nobody would receive it
            return "nomailbox"
        return b"451 unable to check recipient (#4.3.0)\r\n"
    if not a.dash:  # the account's own .qmail, or the default delivery
        return ""
    return "" if has_dotqmail(a.homedir, a.dash, a.ext) else "nomailbox"
