"""qmail's address quoting (quote.c): quote the box part only when RFC 821/822 need it."""

from __future__ import annotations

# bytes that may stand unquoted in a box part (qmail's `ok` table)
_ATOM_SAFE = frozenset(
    b"!#$%&'*+-./0123456789=?ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~")


def quote_need(box: bytes) -> bool:
    """Return True if the box part must be put in double quotes."""
    if not box:
        return True
    if any(c not in _ATOM_SAFE for c in box):
        return True
    return box[:1] == b"." or box[-1:] == b"." or b".." in box


def quote(box: bytes) -> bytes:
    """Return the box part, double-quoted with backslashes before CR, LF, `"` and `\\` if needed."""
    if not quote_need(box):
        return box
    out = bytearray(b'"')
    for c in box:
        if c in b'\r\n"\\':
            out += b"\\"
        out.append(c)
    out += b'"'
    return bytes(out)


def quote2(address: bytes) -> bytes:
    """Return address with the part before its last `@` quoted; an empty address stays empty."""
    if not address:
        return address
    at = address.rfind(b"@")
    if at < 0:
        return quote(address)
    return quote(address[:at]) + address[at:]


def has_control(address: bytes) -> bool:
    """True when address holds a CR, LF or NUL: bytes that would end or split a header line it is written into."""
    return b"\r" in address or b"\n" in address or b"\0" in address


# CR, LF and NUL in an address would end a header line early (a parser that splits on CR, as Python's
# email does, would then read the rest as a header the sender chose): they become `_` in every line built
LINE_SAFE = bytes.maketrans(b"\r\n\0", b"___")


def line_safe(value: bytes) -> bytes:
    """Return value with every CR, LF and NUL turned into `_`."""
    return value.translate(LINE_SAFE)
