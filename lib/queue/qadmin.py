"""The queue administrator's changes (qmail-qctl(8)): the control requests qmail-qctl sends qmail-send, and
the file steps of hold, release, delete, requeue and of setting a damaged message aside in corrupt/, done by
qmail-send while it runs or by qmail-qctl holding lock/sendmutex while it does not.

Every function works on the queue directory `queue` (the cwd by default) and names files relative to it.
A held message is its info/N renamed to hold/N (the mtime, its birth, kept); its mess/N and channel files stay
where they are. A damaged message goes to corrupt/N.T/ (T the time in seconds; .T.2, .T.3 if taken): the
files qmail-send owns are renamed there, todo/N and mess/N are copied (the caller then removes them)."""

from __future__ import annotations

import os
import time

from pyqmail.lib.queue.queue import SPLIT, split_name
from pyqmail.lib.util import netstring
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.regularfile import open_regular

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Iterable

SOCKET = "lock/qctl/socket"  # qmail-send's control socket; lock/qctl/ is qmail-send's user's, mode 0700
REQUEST_MAX = 1 << 16  # bytes of one request
REPLY_MAX = 1 << 24  # bytes of one reply
VERBS = ("hold", "release", "delete", "requeue", "flush")
ALL = "ALL"
CHANNELS = ("local", "remote")
COPY_MAX = 1 << 30  # bytes copied of one damaged file
DELETED = b"This message was deleted from the queue by the administrator.\n"


class BadRequest(ValueError):
    """A control request that breaks the format."""


class Request:
    """One control request: verb, the message ids (None: ALL), for delete the recipients (None: all), and the
    verb's option: for delete, bounce the recipients; for requeue, read the routing again (`reroute`)."""
    __slots__ = ("verb", "ids", "recipients", "option")

    def __init__(self, verb: str, ids: list[int] | None, recipients: list[bytes] | None = None,
                 option: bool = False) -> None:
        self.verb, self.ids, self.recipients, self.option = verb, ids, recipients, option

    @property
    def bounce(self) -> bool:
        """True for a delete that bounces its recipients."""
        return self.option and self.verb == "delete"

    @property
    def reroute(self) -> bool:
        """True for a requeue that sorts the remote recipients again by the current locals and virtualdomains."""
        return self.option and self.verb == "requeue"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and (self.verb, self.ids, self.recipients, self.option) == (
            other.verb, other.ids, other.recipients, other.option)


def parse_id(word: str) -> int | None:
    """Return a message id given as qmail-qread prints it (`123` or `#123`), or None if it is not one."""
    digits = word[1:] if word.startswith("#") else word
    if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > 20:
        return None
    return int(digits)


def encode_request(r: Request) -> bytes:
    """Return the request as one netstring: NUL-separated fields verb, ids (`ALL` or comma-separated),
    the verb's option (`0`/`1`: delete's bounce, requeue's reroute), then the recipients (none: all of them)."""
    ids = ALL if r.ids is None else ",".join(str(i) for i in r.ids)
    fields = [r.verb.encode(), ids.encode(), b"1" if r.option else b"0"] + list(r.recipients or [])
    return netstring.encode(b"\0".join(fields))


def decode_request(payload: bytes) -> Request:
    """Parse a request's payload (the netstring's contents); BadRequest if it breaks the format."""
    fields = payload.split(b"\0")
    if len(fields) < 3:
        raise BadRequest("too few fields")
    try:
        verb, idtext = fields[0].decode("ascii"), fields[1].decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("not ASCII")
    if verb not in VERBS or fields[2] not in (b"0", b"1"):
        raise BadRequest("unknown request")
    ids: list[int] | None = None
    if idtext != ALL:
        ids = []
        for word in idtext.split(",") if idtext else []:
            n = parse_id(word)
            if n is None or word.startswith("#"):
                raise BadRequest("bad id")
            ids.append(n)
    rcpts = fields[3:] or None
    if rcpts is not None and (verb != "delete" or not all(rcpts)):
        raise BadRequest("recipients only for delete")
    return Request(verb, ids, rcpts, fields[2] == b"1")


def result_line(letter: bytes, n: int | None, text: str) -> bytes:
    """Return one line of a reply: K (done), Z (try again) or D (refused), `#n: ` and the text."""
    head = b"" if n is None else b"#%d: " % n
    return letter + head + text.encode("utf-8", "backslashreplace").replace(b"\n", b" ") + b"\n"


def exit_code(reply: bytes) -> int:
    """Return qmail-qctl's exit code for a reply's lines: 111 if any says Z, else 100 if any says D, else 0."""
    letters = {line[:1] for line in reply.split(b"\n") if line}
    if b"Z" in letters or not letters:
        return 111
    return 100 if b"D" in letters else 0


def path(queue: str, name: str) -> str:
    """Return a queue file's path."""
    return name if queue == "." else os.path.join(queue, name)


def exists(name: str) -> bool:
    """True if name exists (lstat: a link counts)."""
    try:
        os.lstat(name)
    except FileNotFoundError:
        return False
    return True


def hold_name(n: int) -> str:
    """Return hold/N."""
    return "hold/%d" % n


def numbers_in(directory: str) -> list[int]:
    """Return the message numbers in one flat directory, ascending (none if it is missing)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(x) for x in names if x.isascii() and x.isdigit() and x == str(int(x)))


def queued_numbers(queue: str = ".") -> list[int]:
    """Return the numbers of the preprocessed messages (info/*) and those in todo/, ascending."""
    found = set(numbers_in(path(queue, "todo")))
    for k in range(SPLIT):
        found.update(numbers_in(path(queue, "info/%d" % k)))
    return sorted(found)


def held_numbers(queue: str = ".") -> list[int]:
    """Return the numbers of the held messages, ascending."""
    return numbers_in(path(queue, "hold"))


def corrupt_count(queue: str = ".") -> int:
    """Return how many damaged messages corrupt/ holds (one directory each)."""
    try:
        return sum(1 for e in os.scandir(path(queue, "corrupt")) if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return 0


def channels_of(n: int, queue: str = ".") -> list[str]:
    """Return the channels whose file for message n exists."""
    return [c for c in CHANNELS if exists(path(queue, split_name(c, n)))]


def to_do(n: int, queue: str = ".") -> list[str]:
    """Return the channels whose file for message n still has a recipient to do (T)."""
    out = []
    for c in CHANNELS:
        try:
            with open(path(queue, split_name(c, n)), "rb") as f:
                if has_todo(f.read(COPY_MAX)):
                    out.append(c)
        except FileNotFoundError:
            pass
    return out


def hold(n: int, queue: str = ".") -> bytes:
    """Rename info/N to hold/N (the caller made sure nothing delivers it); return the reply line."""
    if exists(path(queue, hold_name(n))):
        return result_line(b"K", n, "held already")
    if exists(path(queue, "todo/%d" % n)):
        return result_line(b"Z", n, "not preprocessed yet (qmail-send does that)")
    try:
        os.rename(path(queue, split_name("info", n)), path(queue, hold_name(n)))
    except FileNotFoundError:
        return result_line(b"D", n, "no such message in the queue")
    return result_line(b"K", n, "held")


def release(n: int, queue: str = ".", due: float | None = None) -> bytes:
    """Rename hold/N back to info/N (a channel file's mtime is set to due, if given: its next try); return
    the reply line."""
    try:
        os.rename(path(queue, hold_name(n)), path(queue, split_name("info", n)))
    except FileNotFoundError:
        return result_line(b"D", n, "not held")
    if due is not None:
        touch(n, due, queue)
    return result_line(b"K", n, "released")


def touch(n: int, due: float, queue: str = ".") -> list[str]:
    """Set message n's channel files' mtimes to due (qmail-send's next try at its start); return the channels."""
    done = []
    for c in CHANNELS:
        try:
            os.utime(path(queue, split_name(c, n)), (due, due), follow_symlinks=False)  # root: never a target
            done.append(c)
        except FileNotFoundError:
            pass
    return done


def recipient_positions(data: bytes, wanted: set[bytes] | None) -> list[tuple[int, bytes]]:
    """Return (position, address) of the T records of a channel file's complete records that are wanted
    (all of them if wanted is None)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while True:
        nul = data.find(b"\0", pos)
        if nul < 0:
            return out
        if data[pos:pos + 1] == b"T" and (wanted is None or data[pos + 1:nul] in wanted):
            out.append((pos, data[pos + 1:nul]))
        pos = nul + 1


def has_todo(data: bytes) -> bool:
    """True if a channel file's complete records hold a T record."""
    return bool(recipient_positions(data, None))


def bounce_text(recip: bytes) -> bytes:
    """Return the bounce/N entry for a recipient deleted with a bounce (qmail-send's format)."""
    return b"<" + recip.replace(b"\n", b"_") + b">:\n" + DELETED + b"\n"


def delete(n: int, wanted: Iterable[bytes] | None, bounce: bool, queue: str = ".",
           entry: Callable[[bytes], bytes] = bounce_text) -> tuple[int, list[str]]:
    """Mark message n's wanted recipients (None: all) done in its channel files, after appending their bounce
    entries to bounce/N (fsynced) if bounce; unlink a channel file with nothing left to do. Return (recipients
    deleted, channels still with work). OSError on trouble (what was marked stays marked)."""
    want = None if wanted is None else set(wanted)
    deleted = 0
    left = []
    for c in CHANNELS:
        name = path(queue, split_name(c, n))
        try:
            fd = open_regular(name, os.O_RDWR, one_link=True)
        except FileNotFoundError:
            continue
        try:
            data = read_fd(fd, COPY_MAX)
            hits = recipient_positions(data, want)
            if hits and bounce:
                append(path(queue, "bounce/%d" % n), b"".join(entry(r) for _, r in hits))
            for pos, _ in hits:
                if os.pwrite(fd, b"D", pos) != 1:
                    raise OSError(5, "short write", name)
            deleted += len(hits)
            marked = bytearray(data)
            for pos, _ in hits:
                marked[pos] = 0x44  # D
        finally:
            os.close(fd)
        if has_todo(bytes(marked)):
            left.append(c)
        else:
            os.unlink(name)
    return deleted, left


def reroute(n: int, route: Callable[[bytes], tuple[str, bytes]], queue: str = ".") -> int:
    """Sort message n's remote recipients still to do again: each that route (the current locals and
    virtualdomains, qmail-send's rewriting) now gives to the local channel is appended to local/N (fsynced)
    before it is marked done in remote/N, so a crash between the two can deliver it twice, never lose it.
    Local recipients stay: local/N holds them as virtualdomains rewrote them, and a prepend that was since
    changed or removed cannot be recovered. Return the number of recipients moved; OSError on trouble."""
    name = path(queue, split_name("remote", n))
    try:
        fd = open_regular(name, os.O_RDWR, one_link=True)
    except FileNotFoundError:
        return 0
    try:
        data = read_fd(fd, COPY_MAX)
        moves = [(pos, new) for pos, recip in recipient_positions(data, None)
                 for channel, new in [route(recip)] if channel == "local"]
        if not moves:
            return 0
        append(path(queue, split_name("local", n)), b"".join(b"T" + new + b"\0" for _, new in moves))
        marked = bytearray(data)
        for pos, _ in moves:
            if os.pwrite(fd, b"D", pos) != 1:
                raise OSError(5, "short write", name)
            marked[pos] = 0x44  # D
        os.fsync(fd)
    finally:
        os.close(fd)
    if not has_todo(bytes(marked)):
        os.unlink(name)
    return len(moves)


def append(name: str, data: bytes) -> None:
    """Append data to a file (created 0600, owned as its directory when root makes it) and fsync it; never
    through a link planted there (root would append to, and give away, another file)."""
    fd = open_regular(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600, one_link=True)
    try:
        if os.geteuid() == 0:  # qmail-qctl as root: bounce/N must stay readable by qmail-send's user
            st = os.stat(os.path.dirname(name) or ".")
            os.fchown(fd, st.st_uid, st.st_gid)
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_fd(fd: int, limit: int) -> bytes:
    """Read fd to its end, at most limit bytes (OSError EFBIG beyond)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise OSError(27, "file too large")
        chunks.append(chunk)


def corrupt_dir(n: int | str, queue: str = ".", now: float | None = None) -> str:
    """Make and return a new directory corrupt/N.T (mode 0700) for message n's files (or stray entries'),
    owned as corrupt/ when root makes it."""
    base = "corrupt/%s.%d" % (n, int(time.time() if now is None else now))
    name, k = base, 1
    while True:
        try:
            os.mkdir(path(queue, name), 0o700)
            if os.geteuid() == 0:
                st = os.stat(path(queue, "corrupt"))
                os.chown(path(queue, name), st.st_uid, st.st_gid)
            return name
        except FileExistsError:
            k += 1
            name = "%s.%d" % (base, k)


def copy_file(source: str, target: str) -> bool:
    """Copy a file (never through a link) to a new file and fsync it; False if source is missing."""
    try:
        # not regularfile's open: a FIFO planted in todo/ is damage to set aside, copied as what it holds
        # (nothing); never through a link, never waiting
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            copied = 0
            while True:
                chunk = os.read(src, 65536)
                if not chunk:
                    break
                copied += len(chunk)
                if copied > COPY_MAX:
                    raise OSError(27, "file too large")
                write_all(dst, chunk)
            os.fsync(dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return True


def set_aside(n: int, why: str, queue: str = ".", now: float | None = None) -> str:
    """Put damaged message n in a new corrupt/N.T/: `why` (the reason), copies of todo and mess (fsynced), then
    info (or hold), local, remote and bounce renamed there. Return the directory; the caller removes todo/N
    and mess/N afterwards (qmail-clean, for qmail-send). OSError on trouble: nothing was renamed yet unless
    the copies were made."""
    where = corrupt_dir(n, queue, now)
    target = path(queue, where)
    with open(os.path.join(target, "why"), "w") as f:
        f.write(why + "\n")
        f.flush()
        os.fsync(f.fileno())
    copy_file(path(queue, "todo/%d" % n), os.path.join(target, "todo"))
    copy_file(path(queue, split_name("mess", n)), os.path.join(target, "mess"))
    for kind, name in (("info", split_name("info", n)), ("info", hold_name(n)), ("local", split_name("local", n)),
                       ("remote", split_name("remote", n)), ("bounce", "bounce/%d" % n)):
        try:
            os.rename(path(queue, name), os.path.join(target, kind))
        except FileNotFoundError:
            pass
    dirfd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    return where
