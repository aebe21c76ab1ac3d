"""tcpserver's rules.cdb as tcprules writes it: lookup keys for a client and the meaning of a value.

Keys, tried in this order until one exists (ucspi-tcp 0.88 rules.c): `info@ip`, `info@=host` (only
with an ident answer), `ip`, `=host` (only with a DNS name), then the IP cut after each `.` (or `:`
for IPv6) from the longest, `=.domain` suffixes of the host, `=`, and last the empty key. A value is
a sequence of NUL-terminated entries: `D` denies, `+NAME=value` sets a variable; anything else, and
bytes after the last NUL, are ignored as tcpserver ignores them. See qmail-tcpserver(8).
"""

from __future__ import annotations

import errno

from pyqmail.lib.config.access import NotCdb, open_cdb

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable

DENY = b"D"
SET = b"+"


class Unreadable(Exception):
    """The rules file cannot be read: tcpserver drops the connection."""


class Rule:
    """What the first matching key said: deny or not, the variables in order, and the key."""

    def __init__(self, key: bytes, deny: bool, env: list[tuple[bytes, bytes]]) -> None:
        self.key = key
        self.deny = deny
        self.env = env


def keys(ip: bytes, host: bytes | None = None, info: bytes | None = None) -> list[bytes]:
    """Return the cdb keys tcpserver tries for a client, most specific first (all bytes)."""
    out = []
    if info is not None:
        out.append(info + b"@" + ip)
        if host is not None:
            out.append(info + b"@=" + host)
    out.append(ip)
    if host is not None:
        out.append(b"=" + host)
    for n in range(len(ip), 0, -1):
        if ip[n - 1:n] in (b".", b":"):
            out.append(ip[:n])
    if host is not None:
        out.extend(b"=" + host[i:] for i in range(len(host)) if host[i:i + 1] == b".")
        out.append(b"=")
    out.append(b"")
    return out


def parse_value(data: bytes) -> tuple[bool, list[tuple[bytes, bytes]]]:
    """Return (deny, [(name, value)]) for one rules.cdb value, exactly as tcpserver's found() reads it."""
    deny = False
    env = []
    entries = data.split(b"\0")[:-1]  # the part after the last NUL is no entry
    for entry in entries:
        if entry[:1] == DENY:
            deny = True
        elif entry[:1] == SET:
            name, eq, value = entry[1:].partition(b"=")
            if eq:
                env.append((name, value))
    return deny, env


def lookup(get: Callable[[bytes], bytes | None], ip: bytes, host: bytes | None = None,
           info: bytes | None = None) -> Rule | None:
    """Return the Rule of the first key get(key) -> bytes|None knows, or None when no key matches."""
    for key in keys(ip, host, info):
        data = get(key)
        if data is not None:
            deny, env = parse_value(data)
            return Rule(key, deny, env)
    return None


def settable(name: bytes) -> bool:
    """Return True when a rule's variable name can go into an environment (no `=`, no NUL, not empty)."""
    return bool(name) and b"=" not in name and b"\0" not in name


def read(filename: str, ip: str, optional: bool = False) -> Rule | None:
    """Return the Rule for ip from a rules.cdb, None without a match (or file, if optional); else Unreadable."""
    from pyqmail.lib.util.errstr import error_str
    from pyqmail.lib.util.regularfile import NotRegularFile
    try:  # never waiting, as tcpserver's open_read: a FIFO given by mistake must not hold the connection for ever
        table = open_cdb(filename)
    except NotRegularFile:  # tcprules writes a regular file: a FIFO or a device is a mistake
        raise Unreadable("unable to read %s: not a regular file" % filename)
    except OSError as e:
        if e.errno == errno.ENOENT and optional:
            return None
        raise Unreadable("unable to read %s: %s" % (filename, error_str(e.errno)))
    except NotCdb:
        raise Unreadable("unable to read %s: format error" % filename)
    try:
        return lookup(table.get, ip.encode("ascii"))
    except Exception:
        raise Unreadable("unable to read %s: format error" % filename)
    finally:
        table.close()
