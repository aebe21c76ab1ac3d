"""The addresses in an RFC 822 address-list header value, unquoted (what qreceipt compares)."""

SPECIALS = b"()<>@,;:\\\".[]"


def tokens(value):
    """Split a header value into (kind, bytes) tokens; comments are dropped, quoted strings unquoted."""
    out = []
    i, n = 0, len(value)
    while i < n:
        c = value[i:i + 1]
        if c in (b" ", b"\t", b"\r", b"\n"):
            i += 1
        elif c == b"(":
            depth = 0
            while i < n:
                ch = value[i:i + 1]
                if ch == b"\\":
                    i += 1
                elif ch == b"(":
                    depth += 1
                elif ch == b")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        elif c == b'"':
            text, i = _until(value, i + 1, b'"')
            out.append(("quoted", text))
        elif c == b"[":
            text, i = _until(value, i + 1, b"]")
            out.append(("literal", b"[" + text + b"]"))
        elif c in SPECIALS:
            out.append(("special", c))
            i += 1
        else:
            j = i
            while j < n and value[j:j + 1] not in SPECIALS and value[j:j + 1] not in b" \t\r\n":
                j += 1
            out.append(("atom", value[i:j]))
            i = j
    return out


def _until(value, i, end):
    """Return (text with backslash escapes removed, index after the closing byte) from i."""
    text = bytearray()
    while i < len(value):
        c = value[i:i + 1]
        if c == b"\\" and i + 1 < len(value):
            text += value[i + 1:i + 2]
            i += 2
            continue
        i += 1
        if c == end:
            break
        text += c
    return bytes(text), i


def _address(toks):
    """Return the addr-spec of one address's tokens: the part in <>, without a source route."""
    kinds = [t for t in toks]
    if ("special", b"<") in kinds:
        start = kinds.index(("special", b"<")) + 1
        end = kinds.index(("special", b">"), start) if ("special", b">") in kinds[start:] else len(kinds)
        kinds = kinds[start:end]
        if ("special", b":") in kinds:
            kinds = kinds[kinds.index(("special", b":")) + 1:]
    return b"".join(text for _, text in kinds)


def addresses(value):
    """Return the unquoted addresses of an address-list value, groups included."""
    out = []
    current = []
    angle = 0
    for tok in tokens(value):
        if tok == ("special", b"<"):
            angle += 1
        elif tok == ("special", b">"):
            angle = max(0, angle - 1)
        if angle == 0 and tok[0] == "special" and tok[1] in b",;:":
            if tok[1] != b":" and current:
                out.append(_address(current))
            current = []
            continue
        current.append(tok)
    if current:
        out.append(_address(current))
    return [a for a in out if a]
