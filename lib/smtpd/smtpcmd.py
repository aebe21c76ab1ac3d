"""qmail-smtpd's command-line parsers as pure functions over bytes (qmail-smtpd(8); qmail's commands.c, addrparse)."""

from __future__ import annotations

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Collection

ADDR_LIMIT = 900  # qmail counts the address plus its NUL: 900 bytes or more is a syntax error
PARAM_LIMIT = 32  # ESMTP parameters looked at per MAIL/RCPT (the line bound limits them anyway)


def split_command(line: bytes) -> tuple[bytes, bytes]:
    """Return (verb lowercased, argument) for one command line without its LF, as qmail's commands() does."""
    if line[-1:] == b"\r":
        line = line[:-1]
    nul = line.find(b"\0")
    if nul >= 0:  # qmail works on C strings: a NUL ends the command
        line = line[:nul]
    verb, _, arg = line.partition(b" ")
    return verb.lower(), arg.lstrip(b" ")


def _unquote(text: bytes, terminator: bytes) -> tuple[bytes, bytes]:
    """Copy text up to an unquoted terminator, dropping quotes and backslashes; return (address, rest)."""
    if b'"' not in text and b"\\" not in text:
        end = text.find(terminator)
        return (text, b"") if end < 0 else (text[:end], text[end + 1:])
    out = bytearray()
    escaped = quoted = False
    for i, ch in enumerate(text):
        if escaped:
            out.append(ch)
            escaped = False
        elif not quoted and ch == terminator[0]:
            return bytes(out), text[i + 1:]
        elif ch == 0x5C:  # backslash
            escaped = True
        elif ch == 0x22:  # double quote
            quoted = not quoted
        else:
            out.append(ch)
    return bytes(out), b""


def parse_address(arg: bytes) -> tuple[bytes, bytes]:
    """Return (address, rest after it) from a MAIL/RCPT argument, as qmail's addrparse reads it."""
    start = arg.find(b"<")
    if start >= 0:
        text, terminator = arg[start + 1:], b">"
    else:  # `MAIL FROM: a@b`: the address runs from after the colon to a space
        colon = arg.find(b":")
        text, terminator = (arg[colon + 1:] if colon >= 0 else b"").lstrip(b" "), b" "
    if text[:1] == b"@":  # a source route `@a,@b:user@c`
        colon = text.find(b":")
        text = text[colon + 1:] if colon >= 0 else b""
    return _unquote(text, terminator)


def too_long(address: bytes) -> bool:
    """True when qmail-smtpd would answer `555 syntax error` for this address."""
    return len(address) + 1 > ADDR_LIMIT


def parse_params(rest: bytes) -> list[tuple[bytes, bytes | None]]:
    """Return the ESMTP parameters after an address as [(KEYWORD, value or None)]; malformed ones are skipped."""
    params = []
    for token in rest.split(b" ")[:PARAM_LIMIT]:
        key, eq, value = token.partition(b"=")
        if key[:1].isalnum() and key.replace(b"-", b"").isalnum():  # RFC 5321 esmtp-keyword
            params.append((key.upper(), value if eq else None))
    return params


def size_param(params: list[tuple[bytes, bytes | None]]) -> int | None:
    """Return the SIZE= value as an int, or None when absent or not plain decimal digits."""
    for key, value in params:
        if key == b"SIZE" and value and value.isdigit() and value.isascii() and len(value) <= 20:
            return int(value)
    return None


def in_badmailfrom(address: bytes, entries: Collection[bytes]) -> bool:
    """True when the address or its @domain is listed (entries lowercased; qmail's constmap ignores case)."""
    if not entries:
        return False
    if address.lower() in entries:
        return True
    at = address.rfind(b"@")
    return at >= 0 and address[at:].lower() in entries


def ipv4_literal(text: bytes) -> str | None:
    """Return the IPv4 address of a `[a.b.c.d]` literal (qmail's ip_scanbracket, octets taken mod 256), or None."""
    if text[:1] != b"[" or text[-1:] != b"]":
        return None
    parts = text[1:-1].split(b".")
    if len(parts) != 4 or not all(p and p.isdigit() and p.isascii() for p in parts):
        return None
    return ".".join(str(int(p) % 256) for p in parts)


def ipv6_literal(text: bytes) -> str | None:
    """Return the canonical IPv6 address of a `[IPv6:...]` literal (RFC 5321), or None."""
    if text[:6].lower() != b"[ipv6:" or text[-1:] != b"]" or len(text) > 60:
        return None
    import _socket
    try:
        return _socket.inet_ntop(_socket.AF_INET6, _socket.inet_pton(_socket.AF_INET6, text[6:-1].decode("ascii")))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def replace_local_literal(address: bytes, liphost: bytes, mine: Callable[[str], bool], ipv6: bool = False) -> bytes:
    """Replace a domain literal naming one of my addresses (mine(ip) -> bool) by localiphost, as qmail does."""
    at = address.rfind(b"@")
    if at < 0 or address[at + 1:at + 2] != b"[":
        return address
    literal = address[at + 1:]
    ip = ipv4_literal(literal)
    if ip is None and ipv6:
        ip = ipv6_literal(literal)
    if ip is not None and mine(ip):
        return address[:at + 1] + liphost
    return address
