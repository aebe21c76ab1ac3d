"""RFC 822 header tokens as qmail-inject sees them (qmail's token822): parse, print, unquote, address lists.

A token is (kind, text). Kinds: ATOM, QUOTE, LITERAL, COMMENT carry their unescaped text; the specials
`. , @ < > : ;` are their own kind with empty text.
"""

from __future__ import annotations

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable

    Token = tuple[str, bytes]  # (kind, text)

ATOM, QUOTE, LITERAL, COMMENT = "atom", "quote", "literal", "comment"
DOT, COMMA, AT, LEFT, RIGHT, COLON, SEMI = ".", ",", "@", "<", ">", ":", ";"
WORDS = (ATOM, QUOTE, LITERAL, COMMENT)
_SPECIALS = {ord(c): c for c in ".,@<>:;"}
_BLANKS = frozenset(b" \t\r\n")
_ATOM_END = frozenset(b" \t\r\n([\"<>;:@,.")
_QUOTE_IF = frozenset(b")]\\") | frozenset(range(32)) | frozenset(range(127, 256))
_ESCAPE = frozenset(b"\"[]()\\\r\n")
_ENCLOSE = {QUOTE: (b'"', b'"'), LITERAL: (b"[", b"]"), COMMENT: (b"(", b")"), ATOM: (b"", b"")}
_CLOSERS = {ord('"'): (QUOTE, ord('"'), None), ord("["): (LITERAL, ord("]"), None), ord("("): (COMMENT, ord(")"), ord("("))}


class TooManyTokens(ValueError):
    """The text has more tokens than the caller's limit: a parse would hold hundreds of bytes per input byte."""


def parse(data: bytes, limit: int | None = None) -> list[Token] | None:
    """Return the tokens of data, or None if it has an unbalanced `)` or `]` or an unfinished (, " or [.

    With limit, raise TooManyTokens as soon as there are more than limit tokens."""
    tokens: list[Token] = []
    i, n = 0, len(data)
    while i < n:
        if limit is not None and len(tokens) > limit:
            raise TooManyTokens("more than %d tokens" % limit)
        c = data[i]
        if c in _SPECIALS:
            tokens.append((_SPECIALS[c], b""))
            i += 1
        elif c in _BLANKS:
            i += 1
        elif c == 0x29 or c == 0x5D:  # `)` `]` cannot start a token
            return None
        elif c in _CLOSERS:
            kind, close, nest = _CLOSERS[c]
            enclosed, i = _enclosed(data, i + 1, close, nest)
            if enclosed is None:
                return None
            tokens.append((kind, enclosed))
        else:
            text, i = _atom(data, i)
            quote = any(ch in _QUOTE_IF for ch in text)
            tokens.append((QUOTE if quote else ATOM, text))
    if limit is not None and len(tokens) > limit:
        raise TooManyTokens("more than %d tokens" % limit)
    return tokens


def _enclosed(data: bytes, i: int, close: int, nest: int | None) -> tuple[bytes | None, int]:
    """Return (text, index after close) from just inside a comment, quoted string or domain literal.

    Backslash escapes are resolved; in comments the nested parentheses themselves are dropped (as qmail)."""
    out = bytearray()
    depth, n = 1, len(data)
    while True:
        if i >= n:
            return None, i
        c = data[i]
        if c == nest:
            depth += 1
        elif c == close:
            depth -= 1
            if not depth:
                return bytes(out), i + 1
        else:
            if c == 0x5C:
                i += 1
                if i >= n:
                    return None, i
            out.append(data[i])
        i += 1


def _atom(data: bytes, i: int) -> tuple[bytes, int]:
    """Return (text, index after the atom): bytes up to a blank or special, `\\` escaping the next byte."""
    out = bytearray()
    n = len(data)
    while True:
        if data[i] == 0x5C:
            i += 1
            if i >= n:
                return bytes(out), i
        out.append(data[i])
        i += 1
        if i >= n or data[i] in _ATOM_END:
            return bytes(out), i


def _needspace(last: str | None, kind: str) -> bool:
    """True if printing puts a space between tokens of kinds last and kind."""
    if last is None:
        return False
    if last in (COLON, COMMA) or kind == LEFT:
        return True
    return last in WORDS and kind in WORDS


def _escaped(text: bytes) -> bytes:
    """Return text with a backslash before each byte that token822 escapes."""
    if not any(c in _ESCAPE for c in text):
        return text
    out = bytearray()
    for c in text:
        if c in _ESCAPE:
            out.append(0x5C)
        out.append(c)
    return bytes(out)


def unparse(tokens: Iterable[Token], linelen: int = 80) -> bytes:
    """Print tokens as a header field ending in `\\n`, folding after commas at linelen (0: never)."""
    segments: list[bytes] = []
    kept: list[bool] = []
    current: list[bytes] = []
    pending, line, since = False, 0, 0
    last: str | None = None
    for kind, text in tokens:
        piece = b" " if _needspace(last, kind) else b""
        last = kind
        if kind in _ENCLOSE:
            opening, closing = _ENCLOSE[kind]
            piece += opening + _escaped(text) + closing
        else:
            piece += kind.encode()
        current.append(piece)
        line += len(piece)
        since += len(piece)
        if kind == COMMA:
            pending, line = _fold(kept, pending, line, since, linelen)
            segments.append(b"".join(current))
            current, since = [], 0
    _fold(kept, pending, line, since, linelen)
    segments.append(b"".join(current))
    out = [segments[0]]
    for keep, segment in zip(kept, segments[1:]):
        out.append(b"\n " + segment if keep else segment)
    out.append(b"\n")
    return b"".join(out)


def _fold(kept: list[bool], pending: bool, line: int, since: int, linelen: int) -> tuple[bool, int]:
    """Decide the previous tentative line break at a fold point; return (pending, line length so far)."""
    if not pending:
        return True, line + 2
    if not linelen or line <= linelen:
        kept.append(False)
        return True, line
    kept.append(True)
    return True, since + 3


def unquote(tokens: Iterable[Token]) -> bytes:
    """Return the plain address of tokens: texts without quotes, literals in brackets, no comments."""
    out = []
    for kind, text in tokens:
        if kind == LITERAL:
            out.append(b"[" + text + b"]")
        elif kind in (ATOM, QUOTE):
            out.append(text)
        elif kind != COMMENT:
            out.append(kind.encode())
    return b"".join(out)
