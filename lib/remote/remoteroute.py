"""qmail-remote's control/smtproutes and address literals (see qmail-remote(8))."""

from __future__ import annotations

from pyqmail.lib.config import control

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable, Mapping

PORT_SMTP = 25


class Route:
    """Where to send: a relay (name or literal) and port; relay None means "look up the MX"."""

    def __init__(self, relay: bytes | None, port: int = PORT_SMTP) -> None:
        self.relay = relay
        self.port = port

    def __repr__(self) -> str:
        return "Route(%r, %d)" % (self.relay, self.port)


def parse_routes(lines: Iterable[bytes]) -> dict[bytes, bytes]:
    """Return {lowercased domain key: value} from smtproutes lines `domain:value`, read as qmail's constmap does:
    a line without `:` is no route, and of duplicate keys the last one wins (constmap chains it in front); a line's
    trailing CR (a file saved with CRLF) is no part of it."""
    table: dict[bytes, bytes] = {}
    for line in lines:
        key, colon, value = line.rstrip(control.BLANKS).partition(b":")
        if colon:
            table[key.lower()] = value
    return table


def route_keys(host: bytes) -> list[bytes]:
    """Return the keys qmail tries for host: the host, each `.suffix` (longest first), then the empty key."""
    keys = [host]
    keys += [host[i:] for i in range(1, len(host)) if host[i:i + 1] == b"."]
    keys.append(b"")
    return keys


def parse_relay(value: bytes) -> tuple[bytes | None, int]:
    """Split a route's value into (relay or None, port): `relay[:port]`, `[literal][:port]`, `:port`."""
    if value.startswith(b"["):
        end = value.find(b"]")
        if end > 0:
            relay, rest = value[:end + 1], value[end + 1:]
            return relay, port_of(rest[1:]) if rest.startswith(b":") else PORT_SMTP
    colon = value.find(b":")
    relay, port = (value, PORT_SMTP) if colon < 0 else (value[:colon], port_of(value[colon + 1:]))
    return relay or None, port


def port_of(text: bytes) -> int:
    """Return the port in text as qmail's scan_ulong reads it (leading digits; none → 0, as qmail)."""
    digits = len(text) - len(text.lstrip(b"0123456789"))
    return int(text[:digits]) & 0xFFFF if digits else 0


def find_route(table: Mapping[bytes, bytes], host: bytes) -> Route:
    """Return the Route for host: the first matching key; no match → MX lookup on port 25."""
    for key in route_keys(host.lower()):
        if key in table:
            relay, port = parse_relay(table[key])
            return Route(relay, port)
    return Route(None)


def literal_ip(text: bytes) -> str | None:
    """Return the address in `[1.2.3.4]`, `[IPv6:..]`, `[::1]` or a bare IPv4 address as text, else None."""
    import _socket
    inner = text[1:-1] if text.startswith(b"[") and text.endswith(b"]") else text
    if inner[:5].lower() == b"ipv6:":
        inner = inner[5:]
    try:
        name = inner.decode("ascii")
    except UnicodeDecodeError:
        return None
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            packed = _socket.inet_pton(family, name)
        except (OSError, ValueError):
            continue
        if family == _socket.AF_INET6 and not text.startswith(b"["):
            return None  # a bare IPv6 address would be ambiguous with `relay:port`
        return _socket.inet_ntop(family, packed)
    return None
