"""The .qmail language (dot-qmail(5)): file lookup order, line types, and the address-derived values."""

from __future__ import annotations

DEFAULT = b"default"
QMAIL_MAX = 1 << 20  # a .qmail file larger than this is refused (qmail has no limit)
# qmail strips spaces and tabs; a CR too here, so that a .qmail saved with CRLF line ends does not deliver to an
# mbox named `Maildir/<CR>`, forward to `addr<CR>` or run `cmd<CR>` (the control files' rule, control.BLANKS)
TRAILING = b" \t\r"

# instruction kinds, in dot-qmail(5) terms
BLANK, FIRST_BLANK, COMMENT, MBOX, MAILDIR, PROGRAM, FORWARD, LIST, PLUS = (
    "blank", "first-blank", "comment", "mbox", "maildir", "program", "forward", "+list", "plus")


def safe_ext(ext: bytes) -> bytes:
    """Return the extension as used in file names: ASCII lower-cased, every `.` turned into `:`."""
    return ext.lower().replace(b".", b":")


def candidates(dash: bytes, ext: bytes) -> list[tuple[bytes, bytes | None]]:
    """Return [(file name, DEFAULT value or None)] in qmail-local's search order (qmesearch)."""
    safe = safe_ext(ext)
    exact_default = ext[len(safe) - len(DEFAULT):] if safe.endswith(DEFAULT) else None
    out = [(b".qmail" + dash + safe, exact_default)]
    for i in range(len(safe), -1, -1):
        if i == 0 or safe[i - 1:i] == b"-":
            out.append((b".qmail" + dash + safe[:i] + DEFAULT, ext[i:]))
    return out


def owner_files(dash: bytes, ext: bytes) -> tuple[bytes, bytes]:
    """Return the names of the -owner and -owner-default files that choose NEWSENDER."""
    base = b".qmail" + dash + safe_ext(ext)
    return base + b"-owner", base + b"-owner-default"


def new_sender(sender: bytes, local: bytes, host: bytes, has_owner: bool, has_owner_default: bool) -> bytes:
    """Return the envelope sender for forwards (dot-qmail(5) "-owner" rules)."""
    if not sender or sender == b"#@[]" or not has_owner:
        return sender
    if has_owner_default:
        return local + b"-owner-@" + host + b"-@[]"
    return local + b"-owner@" + host


def ext_parts(ext: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (EXT2, EXT3, EXT4): ext after its first, second and third `-` (empty when fewer)."""
    parts = []
    rest = ext
    for _ in range(3):
        dash = rest.find(b"-")
        rest = rest[dash + 1:] if dash >= 0 else b""
        parts.append(rest)
    return parts[0], parts[1], parts[2]


def host_parts(host: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (HOST2, HOST3, HOST4): host before its last, 2nd-to-last, 3rd-to-last `.` (whole if none)."""
    parts = []
    end = len(host)
    for _ in range(3):
        dot = host.rfind(b".", 0, end)
        end = dot if dot >= 0 else end
        parts.append(host[:end])
    return parts[0], parts[1], parts[2]


def _cstring(value: bytes) -> bytes:
    """Return value up to its first NUL, as qmail's C strings see it."""
    nul = value.find(b"\0")
    return value if nul < 0 else value[:nul]


def classify(line: bytes, first: bool) -> tuple[str, bytes]:
    """Return (kind, value) for one .qmail line whose trailing spaces, tabs and CRs are already stripped."""
    head = line[:1]
    if head in (b"", b"\0"):
        return (FIRST_BLANK if first else BLANK), b""
    if head == b"#":
        return COMMENT, line
    if head in (b".", b"/"):
        return (MAILDIR if line.endswith(b"/") else MBOX), _cstring(line)
    if head == b"|":
        return PROGRAM, _cstring(line[1:])
    if head == b"+":
        return (LIST if line == b"+list" else PLUS), line
    if head == b"&":
        return FORWARD, _cstring(line[1:])
    return FORWARD, _cstring(line)


def parse(text: bytes) -> list[tuple[str, bytes, bytes]]:
    """Split .qmail contents into [(kind, value, shown)]; `shown` is what -n prints for the line."""
    if not text.endswith(b"\n"):
        text += b"\n"
    out = []
    for n, raw in enumerate(text.split(b"\n")[:-1]):
        line = raw.rstrip(TRAILING)
        kind, value = classify(line, n == 0)
        shown = line[1:] if kind == PROGRAM or (kind == FORWARD and line[:1] == b"&") else line
        out.append((kind, value, shown))
    return out
