"""RFC 822 address lists as qmail-inject walks them (qmail's token822_addrlist), over lib/rfc822/token822 tokens."""

from __future__ import annotations

from pyqmail.lib.rfc822.token822 import AT, ATOM, COLON, COMMA, COMMENT, DOT, LEFT, LITERAL, QUOTE, RIGHT, SEMI

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable

    from pyqmail.lib.rfc822.token822 import Token

_PHRASE = (COMMENT, ATOM, QUOTE, AT, DOT)
_COMMA_TOKEN = (COMMA, b"")


def addrlist(tokens: list[Token], rewrite: Callable[[list[Token]], list[Token]]) -> list[Token] | None:
    """Rewrite each address of a field's tokens (name and colon first) with rewrite(tokens) -> tokens.

    Walks right to left as qmail does (so rewrite sees the last address first), inserts commas between
    addresses separated only by blanks; returns the new token list, or None if the list is malformed."""
    out: list[Token] = []
    addr: list[Token] = []
    ingroup, wordok = False, True
    i = len(tokens) - 1

    def flush(comma: bool = False) -> None:
        if addr:
            out.extend(reversed(rewrite(addr[::-1])))
            addr.clear()
            if comma:
                out.append(_COMMA_TOKEN)

    while i >= 2:
        token = tokens[i]
        kind = token[0]
        if kind == SEMI:
            flush(True)
            if ingroup:
                return None
            ingroup, wordok = True, True
        elif kind == COLON:
            flush()
            if not ingroup:
                return None
            ingroup, wordok = False, True
            while i >= 2 and tokens[i][0] != COMMA:
                out.append(tokens[i])
                i -= 1
            if i >= 2:
                out.append(tokens[i])
                i -= 1
            continue
        elif kind == RIGHT:
            flush(True)
            out.append(token)
            i -= 1
            while i >= 2 and tokens[i][0] != LEFT:
                addr.append(tokens[i])
                i -= 1
            out.extend(reversed(rewrite(addr[::-1])))  # even when empty: <>
            addr.clear()
            if i < 2:
                return None
            out.append(tokens[i])
            i -= 1
            while i >= 2 and tokens[i][0] in _PHRASE:
                out.append(tokens[i])
                i -= 1
            wordok = False
            continue
        elif kind in (ATOM, QUOTE, LITERAL):
            if not wordok:
                flush(True)
            wordok = False
            addr.append(token)
            i -= 1
            continue
        elif kind == COMMA:
            flush()
            wordok = True
        elif kind != COMMENT:
            wordok = True
            addr.append(token)
            i -= 1
            continue
        out.append(token)
        i -= 1
    flush()
    out.extend(reversed(tokens[:2]))
    out.reverse()
    return out
