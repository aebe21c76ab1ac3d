"""control/qmqpservers lines as (host, port): literal IPv4/IPv6 addresses only, never DNS (qmail-qmqpc(8))."""

from __future__ import annotations

from _socket import AF_INET6, inet_pton

from pyqmail.lib.config.control import parse_list

QMQP_PORT = 628
_DIGITS = b"0123456789"
_BLANKS = b" \t"


def _ipv4(text: bytes) -> str | None:
    """Return text as a normalised dotted quad, or None; octets are decimal 0..255 as qmail's ip_scan reads them."""
    octets = text.split(b".")
    if len(octets) != 4:
        return None
    values = []
    for octet in octets:
        if not octet or len(octet) > 3 or octet.strip(_DIGITS):
            return None
        value = int(octet)
        if value > 255:
            return None  # qmail silently wraps it modulo 256: a typo, not an address
        values.append(value)
    return "%d.%d.%d.%d" % tuple(values)


def _ipv6(text: bytes) -> str | None:
    """Return text as an IPv6 literal if inet_pton accepts it, else None."""
    if not text or not text.isascii() or b"%" in text:
        return None
    try:
        inet_pton(AF_INET6, text.decode("ascii"))
    except (OSError, ValueError):
        return None
    return text.decode("ascii")


def _port(text: bytes) -> int | None:
    """Return a decimal port 1..65535, or None."""
    if not text or len(text) > 5 or text.strip(_DIGITS) or text[:1] == b"0":
        return None
    value = int(text)
    return value if value <= 65535 else None


def parse_line(line: bytes, default_port: int = QMQP_PORT) -> tuple[str, int] | None:
    """Return (host, port) for one qmqpservers line, or None if the line is not an address.

    Forms: `1.2.3.4`, `1.2.3.4:6628`, `::1`, `[::1]`, `[::1]:6628`. Anything after the address
    and a space, tab or CR is ignored, as qmail ignores what follows a dotted quad.
    """
    line = line.strip(_BLANKS).replace(b"\t", b" ").replace(b"\r", b" ").split(b" ", 1)[0]
    if line[:1] == b"[":
        close = line.find(b"]")
        if close < 0:
            return None
        host, rest = _ipv6(line[1:close]), line[close + 1:]
        if host is None:
            return None
        if not rest:
            return host, default_port
        port = _port(rest[1:]) if rest[:1] == b":" else None
        return (host, port) if port else None
    if line.count(b":") == 1:
        address, _, port_text = line.partition(b":")
        host, port = _ipv4(address), _port(port_text)
        return (host, port) if host and port else None
    if b":" in line:
        host = _ipv6(line)
        return (host, default_port) if host else None
    host = _ipv4(line)
    return (host, default_port) if host else None


def parse(data: bytes, default_port: int = QMQP_PORT) -> list[tuple[str, int]]:
    """Return the usable (host, port) pairs of a qmqpservers file's bytes, in file order."""
    servers = (parse_line(line, default_port) for line in parse_list(data))
    return [server for server in servers if server is not None]
