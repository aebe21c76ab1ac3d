"""qmail-users(5): the users/assign parser, users/cdb records (qmail-newu(8)), and qmail-lspawn's lookup
(qmail-lspawn(8))."""

from __future__ import annotations

import os
from collections import namedtuple

from pyqmail.lib.config.control import scan_ulong
from pyqmail.lib.util.exits import QLX_CDB, QLX_USAGE

BREAK = b"-"  # conf-break: the user-extension delimiter
ALIAS = "alias"  # conf-users' first account: the catch-all for local parts without a user
WILDCHARS_KEY = b""

MYPY = False
if MYPY:  # typing only: the same tuples with typed fields (typing.NamedTuple costs start-up)
    from collections.abc import Callable
    from typing import NamedTuple

    class Entry(NamedTuple):
        wild: bool
        local: bytes
        fields: tuple[bytes, ...]  # user uid gid homedir dash ext, as in users/assign

    class Assignment(NamedTuple):
        user: bytes
        uid: int
        gid: int
        homedir: bytes
        dash: bytes
        ext: bytes
else:
    Entry = namedtuple("Entry", "wild local fields")  # fields: user uid gid homedir dash ext, as bytes
    Assignment = namedtuple("Assignment", "user uid gid homedir dash ext")


class AssignError(ValueError):
    """users/assign is not in qmail-users(5) format."""


class UsersCdbError(Exception):
    """users/cdb exists but cannot be used; `code` is the QLX exit code qmail-lspawn's child uses."""

    def __init__(self, message: str, code: int = QLX_CDB) -> None:
        super().__init__(message)
        self.code = code


def lower(data: bytes) -> bytes:
    """Lowercase ASCII letters only, as qmail's case_lowerb."""
    return data.lower()  # bytes.lower touches A-Z only


def parse_line(line: bytes) -> Entry:
    """Parse one assign line (without its newline) into an Entry."""
    if b"\0" in line:
        raise AssignError("NUL in users/assign")
    colon = line.find(b":")
    if colon <= 0:
        raise AssignError("missing or leading colon in users/assign")
    fields = line[colon + 1:].split(b":")
    if len(fields) < 7:  # six colon-terminated fields; whatever follows the sixth colon is ignored
        raise AssignError("fewer than six fields in users/assign")
    return Entry(line[:1] == b"+", line[1:colon], tuple(fields[:6]))


def parse_assign(data: bytes) -> list[Entry]:
    """Parse users/assign's bytes into a list of Entry; everything after the `.` line is ignored."""
    entries: list[Entry] = []
    start = 0
    while True:
        end = data.find(b"\n", start)
        line = data[start:] if end < 0 else data[start:end]
        if line[:1] == b".":
            return entries
        if end < 0:
            raise AssignError("users/assign does not end with a `.` line")
        entries.append(parse_line(line))
        start = end + 1


MAX_ID = 0xFFFFFFFE  # the largest uid_t/gid_t; 0xFFFFFFFF is (uid_t)-1, "no change" to setuid


def is_id(field: bytes) -> bool:
    """True if field is decimal digits worth at most MAX_ID (leading zeros allowed, as scan_ulong reads them)."""
    digits = field.lstrip(b"0")
    return field.isdigit() and len(digits) <= 10 and int(digits or b"0") <= MAX_ID


def unusable(entry: Entry) -> str | None:
    """Return why entry is a typo no delivery could use (a uid or gid that is no 32-bit number, a home that
    is not absolute), or None; qmail-newu refuses these, qmail's accepts them. An explicit uid 0 passes:
    qmail-lspawn refuses to deliver as root, as qmail's does."""
    user, uid, gid, homedir = entry.fields[:4]
    if not is_id(uid):
        return "uid %r is not a number from 0 to %d" % (uid[:20].decode("latin-1"), MAX_ID)
    if not is_id(gid):
        return "gid %r is not a number from 0 to %d" % (gid[:20].decode("latin-1"), MAX_ID)
    if homedir[:1] != b"/":
        return "home %r is not an absolute path" % homedir[:60].decode("latin-1")
    return None


def cdb_records(entries: list[Entry]) -> list[tuple[bytes, bytes]]:
    """Return users/cdb's (key, value) pairs in qmail-newu's order, the wildcard-character record last."""
    records = []
    wildchars = bytearray()
    for entry in entries:
        if entry.wild:
            key = b"!" + lower(entry.local)
            last = entry.local[-1:]  # the original case, as qmail-newu stores it
            if last and last not in wildchars:
                wildchars += last
        else:
            key = b"!" + lower(entry.local) + b"\0"
        records.append((key, b"\0".join(entry.fields)))
    records.append((WILDCHARS_KEY, bytes(wildchars)))
    return records


def split_assignment(data: bytes) -> Assignment:
    """Split NUL-separated user, uid, gid, homedir, dash, ext into an Assignment."""
    fields = data.split(b"\0", 5)
    if len(fields) < 6:
        raise UsersCdbError("users/cdb record has fewer than six fields", code=QLX_USAGE)
    user, uid, gid, homedir, dash, ext = fields
    return Assignment(user, scan_ulong(uid, 0), scan_ulong(gid, 0), homedir, dash, ext.split(b"\0", 1)[0])


def search(get: Callable[[bytes], bytes | None], local: bytes) -> Assignment | None:
    """qmail-lspawn's search with get(key) -> bytes or None: exact key, then wildcard prefixes, longest first."""
    wildchars = get(WILDCHARS_KEY)
    if wildchars is None:
        raise UsersCdbError("users/cdb has no wildcard-character record")
    key = b"!" + lower(local) + b"\0"
    i = len(key)
    wild = False
    while i:
        if not wild or i == 1 or key[i - 1:i] in wildchars:
            data = get(key[:i])
            if data is not None:
                return split_assignment(data + (local[i - 1:] if wild else b""))
        i -= 1
        wild = True
    return None


CACHED = 1024  # answers kept per users/cdb version in a long-running process (qmail-lspawn)
_version: tuple[str, int, int, int, int] | None = None  # the users/cdb _answers come from
_answers: dict[bytes, Assignment | None] = {}


def lookup(home: str, local: bytes | str) -> Assignment | None:
    """Look local up in home/users/cdb: an Assignment, or None (no cdb, or no entry: ask qmail-getpw).
    Answers are remembered while users/cdb is the same file (qmail-newu renames a new one into place)."""
    if isinstance(local, str):
        local = os.fsencode(local)
    path = os.path.join(home, "users", "cdb")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UsersCdbError("unable to read users/cdb: %s" % e)
    version = (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    global _version
    if _version != version or len(_answers) >= CACHED:
        _answers.clear()
        _version = version
    if local not in _answers:
        _answers[local] = read_answer(path, local)
    return _answers[local]


def read_answer(path: str, local: bytes) -> Assignment | None:
    """Search users/cdb at path for local (UsersCdbError when it cannot be read)."""
    import cdbx
    from pyqmail.lib.util.regularfile import open_regular
    try:
        fd = open_regular(path, follow=True)  # a FIFO there must not hold every local delivery
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UsersCdbError("unable to read users/cdb: %s" % e)
    try:
        db = cdbx.CDB(fd, mmap=False, close=True)
    except (OSError, ValueError) as e:
        os.close(fd)
        raise UsersCdbError("unable to read users/cdb: %s" % e)
    try:
        return search(db.get, local)
    except (OSError, ValueError) as e:
        raise UsersCdbError("unable to read users/cdb: %s" % e)
    finally:
        db.close()
