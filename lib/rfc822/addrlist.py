"""The addresses in an RFC 822 address-list header value, unquoted (what qreceipt compares), found as qmail's
qreceipt finds them: with the token822 tokenizer and the address-list walk (token822list) of qmail-inject."""

from __future__ import annotations

from pyqmail.lib.rfc822 import token822
from pyqmail.lib.rfc822.token822 import ATOM, COLON
from pyqmail.lib.rfc822.token822list import addrlist

MYPY = False
if MYPY:  # typing only: never imported at run time
    from pyqmail.lib.rfc822.token822 import Token

_FIELD_START = [(ATOM, b"X"), (COLON, b"")]  # the walk starts after a field's name and colon


def addresses(value: bytes) -> list[bytes]:
    """Return the unquoted addresses of an address-list value in order, groups included, an angle address's
    source route (`@r1,@r2:`) dropped; none when the value does not parse (an unbalanced quote, comment or
    bracket, or a malformed list)."""
    tokens = token822.parse(value)
    if tokens is None:
        return []
    found: list[bytes] = []

    def collect(address: list[Token]) -> list[Token]:
        kinds = [kind for kind, _ in address]
        route_end = kinds.index(COLON) + 1 if COLON in kinds else 0
        found.append(token822.unquote(address[route_end:]))
        return address
    if addrlist(_FIELD_START + tokens, collect) is None:
        return []
    return [a for a in reversed(found) if a]  # the walk goes right to left
