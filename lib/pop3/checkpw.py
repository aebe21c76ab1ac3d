"""qmail-checkpassword's checks: the request on fd 3 (login, password, timestamp), the tree's password
file users/pop3passwords (scrypt, a salt per entry, constant-time compare), the system's shadow entries
when root (libcrypt's crypt(3) through ctypes), and the change to the user's uid, gids and home."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

BAD_PASSWORD = 1  # checkpassword's interface: 1 refused, 2 misuse, 111 temporary (exits.TEMP_FAILURE)
MISUSE = 2
REQUEST_MAX = 512  # bytes of fd 3 that count, as DJB's checkpassword
PASSWORD_FILE = "users/pop3passwords"
N, R, P = 1 << 14, 8, 1  # scrypt's cost for new entries (16 MB, about 50 ms)
N_MAX = 1 << 20
DELAY = 2.0  # seconds before a refusal
ID_LIMIT = (1 << 32) - 1  # uid_t's largest value means "no change" to the kernel: ids are below it


class Entry:
    """One account of the password file, or of the system's passwd and shadow."""

    def __init__(self, login: bytes, hashed: bytes, uid: int, gid: int, home: bytes, shell: bytes,
                 name: str | None) -> None:
        self.login = login
        self.hashed = hashed
        self.uid = uid
        self.gid = gid
        self.home = home
        self.shell = shell
        self.name = name  # the system account whose supplementary groups apply, if any


def read_request(fd: int = 3) -> bytes:
    """Read fd to its end (keeping REQUEST_MAX + 1 bytes at most) and close it; OSError if unreadable."""
    kept = b""
    try:
        while True:
            data = os.read(fd, 4096)
            if not data:
                return kept
            if len(kept) <= REQUEST_MAX:
                kept = (kept + data)[:REQUEST_MAX + 1]
    finally:
        os.close(fd)


def parse_request(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """Return (login, password, timestamp) of `login\\0password\\0timestamp\\0...`, or None when misused
    (too long, or the login or password not ended by a NUL); a missing timestamp is empty."""
    if len(data) > REQUEST_MAX:
        return None
    parts = data.split(b"\0")
    if len(parts) < 3:
        return None
    return parts[0], parts[1], parts[2] if len(parts) > 3 else b""


def make_hash(password: bytes, salt: bytes | None = None) -> bytes:
    """Return a password file hash field: `scrypt$N$r$p$salt$key`, salt and key in base64."""
    salt = os.urandom(16) if salt is None else salt
    key = hashlib.scrypt(password, salt=salt, n=N, r=R, p=P, maxmem=128 * R * N * 2, dklen=32)
    return b"scrypt$%d$%d$%d$%s$%s" % (N, R, P, base64.b64encode(salt), base64.b64encode(key))


DUMMY = b"scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def verify_scrypt(password: bytes, field: bytes) -> bool:
    """Whether password matches a `scrypt$...` field (constant-time compare); False if malformed."""
    try:
        kind, n_s, r_s, p_s, salt_s, key_s = field.split(b"$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, key = base64.b64decode(salt_s, validate=True), base64.b64decode(key_s, validate=True)
    except ValueError:
        return False
    if kind != b"scrypt" or not (1 < n <= N_MAX and n & (n - 1) == 0 and 0 < r <= 32 and 0 < p <= 16):
        return False
    if not 16 <= len(key) <= 64:
        return False
    try:
        got = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=128 * r * n * 2 + (1 << 20),
                             dklen=len(key))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, key)


def parse_line(line: bytes) -> Entry | None:
    """One password file line `login:hash:uid:gid:home[:shell]`; None for comments, blanks, bad lines
    (a uid or gid that is not a number below 2^32 - 1 included)."""
    if not line.strip() or line.startswith(b"#"):
        return None
    fields = line.split(b":")
    if len(fields) not in (5, 6) or not fields[0]:
        return None
    try:
        uid, gid = int(fields[2]), int(fields[3])
    except ValueError:
        return None
    if not (0 <= uid < ID_LIMIT and 0 <= gid < ID_LIMIT) or not fields[4].startswith(b"/"):
        return None
    shell = fields[5] if len(fields) == 6 else b"/bin/sh"
    return Entry(fields[0], fields[1], uid, gid, fields[4], shell, None)


def file_entry(login: bytes, path: str) -> Entry | None:
    """The password file's entry for login (the first); None if none or no file; OSError if unreadable."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        for line in f:
            entry = parse_line(line.rstrip(b"\n"))
            if entry is not None and entry.login == login:
                return entry
    return None


def system_entry(login: bytes, shadow: str = "/etc/shadow") -> Entry | None:
    """The system account login with its shadow hash; None if there is none (or no shadow line)."""
    import pwd
    try:
        pw = pwd.getpwnam(os.fsdecode(login))
    except (KeyError, ValueError, UnicodeError):
        return None
    hashed = pw.pw_passwd.encode()
    try:
        with open(shadow, "rb") as f:
            for line in f:
                fields = line.rstrip(b"\n").split(b":")
                if len(fields) > 1 and fields[0] == login:
                    hashed = fields[1]
                    break
    except FileNotFoundError:
        pass
    return Entry(login, hashed, pw.pw_uid, pw.pw_gid, os.fsencode(pw.pw_dir), os.fsencode(pw.pw_shell),
                 pw.pw_name)


def crypt(password: bytes, setting: bytes) -> bytes | None:
    """libcrypt's crypt(3) (libxcrypt, in every Debian system) through ctypes; None if unavailable."""
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    fn = lib.crypt
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    result = fn(password, setting)
    if not result or result.startswith(b"*"):
        return None
    return bytes(result)


def verify_crypt(password: bytes, hashed: bytes) -> bool:
    """Whether password matches a crypt(3) hash; locked and empty hashes never match."""
    if not hashed or hashed[:1] in (b"!", b"*", b"x"):
        return False
    got = crypt(password, hashed)
    return got is not None and hmac.compare_digest(got, hashed)


def verify(entry: Entry | None, password: bytes) -> bool:
    """Whether password opens entry; the same scrypt work is done when there is no entry."""
    if entry is None:
        verify_scrypt(password, DUMMY)
        return False
    if entry.hashed.startswith(b"scrypt$"):
        return verify_scrypt(password, entry.hashed)
    return verify_crypt(password, entry.hashed)


def become(entry: Entry, login: bytes) -> None:
    """Take entry's gids and uid (when root), set USER, HOME and SHELL, and enter its home; OSError."""
    if os.getuid() == 0:
        name = entry.name
        if name is None:  # a password file entry: the groups of the account with its uid, if any
            import pwd
            try:
                name = pwd.getpwuid(entry.uid).pw_name
            except KeyError:
                pass
        groups = os.getgrouplist(name, entry.gid) if name else [entry.gid]
        os.setgroups(groups)
        os.setgid(entry.gid)
        os.setuid(entry.uid)
    os.environb[b"USER"] = login
    os.environb[b"HOME"] = entry.home
    os.environb[b"SHELL"] = entry.shell
    os.chdir(entry.home)
