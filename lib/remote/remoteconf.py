"""qmail-remote's control files: qmail's four, and ours for DNS servers, TLS and AUTH (see qmail-remote(8))."""

from __future__ import annotations

import os

from pyqmail.lib.config import control
from pyqmail.lib.remote.remoteroute import parse_routes, route_keys
from pyqmail.lib.util.regularfile import open_regular

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable

AUTH_FILE = "remoteauth"


class ControlError(Exception):
    """A control file exists but cannot be read (qmail's temp_control)."""


class AuthFileExposed(Exception):
    """control/remoteauth can be read by others than its owner: its passwords are not used."""


class Config:
    """Everything qmail-remote reads from control/ before it looks anything up."""

    def __init__(self) -> None:
        try:
            self.timeout = control.readtimeout("timeoutremote", 1200)  # poll(2)'s milliseconds must not wrap
            self.timeoutconnect = control.readtimeout("timeoutconnect", 60)
            helohost = control.rldef("helohost", None)
            self.routes = parse_routes(control.readlist("smtproutes"))
            self.tls = parse_tls_destinations(control.readlist("tlsdestinations"))
            self.dnsservers = control.readlist("dnsservers")
        except OSError:
            raise ControlError()
        if helohost is None:
            raise ControlError()
        self.helohost: bytes = helohost

    def tls_policy(self, host: bytes) -> bytes | None:
        """Return None (opportunistic), b"encrypt" or b"verify" for a recipient domain (smtproutes matching)."""
        for key in route_keys(host.lower()):
            if key in self.tls:
                return b"verify" if self.tls[key].strip().lower() == b"verify" else b"encrypt"
        return None


def parse_tls_destinations(lines: Iterable[bytes]) -> dict[bytes, bytes]:
    """Return {lowercased key: value} from tlsdestinations lines `domain[:verify]`: unlike a route, a line without
    `:` counts (encryption required); of duplicate keys the first one wins; a trailing CR is no part of a line."""
    table: dict[bytes, bytes] = {}
    for line in lines:
        key, _, value = line.rstrip(control.BLANKS).partition(b":")
        table.setdefault(key.lower(), value)
    return table


def parse_auth_line(line: bytes) -> tuple[bytes, bytes, bytes] | None:
    """Split a remoteauth line `relay:user:password` ([..] relays may hold colons) into its three fields."""
    if line.startswith(b"["):
        end = line.find(b"]")
        if end < 0 or line[end + 1:end + 2] != b":":
            return None
        relay, rest = line[:end + 1], line[end + 2:]
    else:
        relay, colon, rest = line.partition(b":")
        if not colon:
            return None
    user, colon, password = rest.partition(b":")
    if not colon or not user:
        return None
    return relay.lower(), user, password


def auth_for(relay: bytes) -> tuple[bytes, bytes] | None:
    """Return (user, password) for a relay from control/remoteauth, or None; refuse a file others can read."""
    name = control.path("control", AUTH_FILE)
    try:
        fd = open_regular(name, follow=True)  # a FIFO there must not hold qmail-remote for ever
    except FileNotFoundError:
        return None
    except OSError:
        raise ControlError()
    try:
        if os.fstat(fd).st_mode & 0o077:
            raise AuthFileExposed()
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > control.FILE_MAX:
                raise ControlError()
            chunks.append(chunk)
        data = b"".join(chunks)
    except OSError:
        raise ControlError()
    finally:
        os.close(fd)
    for line in control.parse_list(data):
        fields = parse_auth_line(line)
        if fields and fields[0] == relay.lower():
            return fields[1], fields[2]
    return None
