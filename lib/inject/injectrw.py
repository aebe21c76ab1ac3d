"""qmail-inject's address rewriting (qmail-header(5)) and the header fields it knows by name (hfield)."""

from __future__ import annotations

from pyqmail.lib.rfc822 import token822
from pyqmail.lib.rfc822.token822 import AT, ATOM, COLON, DOT, LITERAL

MYPY = False
if MYPY:  # typing only: never imported at run time
    from pyqmail.lib.rfc822.token822 import Token

KNOWN = (
    b"sender", b"from", b"reply-to", b"to", b"cc", b"bcc", b"date", b"message-id", b"subject",
    b"resent-sender", b"resent-from", b"resent-reply-to", b"resent-to", b"resent-cc", b"resent-bcc",
    b"resent-date", b"resent-message-id", b"return-receipt-to", b"errors-to", b"apparently-to", b"received",
    b"return-path", b"delivered-to", b"content-length", b"content-type", b"content-transfer-encoding",
    b"notice-requested-upon-delivery-to", b"mail-followup-to",
)
_KNOWN = frozenset(KNOWN)


def known(field: bytes) -> bytes | None:
    """Return the lower-case name of a field qmail knows (`Name`, blanks, `:`; any case), else None."""
    colon = field.find(b":")
    if colon < 0:
        return None
    name = field[:colon].rstrip(b" \t").lower()
    return name if name in _KNOWN else None


class Rewriter:
    """The rewriting rules for one run: default host, default domain and plus domain as tokens."""

    def __init__(self, defaulthost: bytes, defaultdomain: bytes, plusdomain: bytes) -> None:
        lines = (b"." + defaultdomain, b"@" + defaulthost, b"." + plusdomain)
        parsed = [token822.parse(line) for line in lines]
        self.bad = next((line for line, tokens in zip(lines, parsed) if tokens is None), None)
        self.domain, self.host, self.plus = (tokens or [] for tokens in parsed)  # used only when bad is None

    def unparsable(self) -> bytes | None:
        """Return the first of `.defaultdomain`, `@defaulthost`, `.plusdomain` that does not parse, else None."""
        return self.bad

    def address(self, tokens: list[Token]) -> list[Token]:
        """Return the tokens of one address rewritten by qmail-inject's rules (qmail-header(5))."""
        if not tokens:
            return tokens  # <> stays <>
        if len(tokens) >= 2 and tokens[-2][0] == AT and tokens[-1] == (LITERAL, b""):
            return tokens  # foo@[] is qmail-send's per-recipient VERP marker
        if tokens[0][0] == AT:  # a source route: drop through its colon
            kinds = [t[0] for t in tokens]
            tokens = tokens[kinds.index(COLON) + 1:] if COLON in kinds else []
            if not tokens:
                return tokens
        for trailing in (DOT, AT):
            if tokens[-1][0] == trailing:
                tokens = tokens[:-1]
                if not tokens:
                    return tokens
        if not any(t[0] == AT for t in tokens):
            tokens = tokens + self.host
        last = tokens[-1]
        if last[0] == ATOM and last[1].endswith(b"+"):
            tokens = tokens[:-1] + [(ATOM, last[1][:-1])] + self.plus
        return tokens if self._qualified(tokens) else tokens + self.domain

    @staticmethod
    def _qualified(tokens: list[Token]) -> bool:
        """True if the host part (after the last @) has a dot or is a domain literal."""
        for kind, _ in reversed(tokens):
            if kind == AT:
                return False
            if kind in (DOT, LITERAL):
                return True
        return False
