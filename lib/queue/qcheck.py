"""qmail-qctl -s: checking a queue without changing it (qmail-qctl(8)).

scan() reads queue/ into a Snapshot (every entry's lstat, the envelope files' bytes); check() is a pure
function from a Snapshot, the expected owners and the time to the defects found. The expected owners and
modes are qmail-setup's (lib/config/tree.make_queue); the consistency rules are qmail's states
(INTERNALS: S2..S5) and qmail-send's and qmail-clean's 36-hour rule for debris."""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from pyqmail.lib.config import tree
from pyqmail.lib.queue.queue import OSSIFIED, SPLIT
from pyqmail.lib.util.regularfile import NotRegularFile, open_regular

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable

SPLIT_DIRS = ("mess", "info", "local", "remote")
FLAT_DIRS = ("pid", "intd", "todo", "bounce", "hold")
CONTENT_DIRS = ("todo", "info", "local", "remote", "hold")  # whose bytes are checked
MAX_CONTENT = 1 << 24  # bytes read of one envelope file; a larger one is not checked for its records
LOCK_FILES = ("sendmutex", "tcpto", "trigger", "qctl")


class Node(NamedTuple):
    """One entry under queue/, as lstat shows it; path is relative to queue/ (`` for queue/ itself)."""

    path: str
    kind: str  # dir, file, fifo, link, other
    uid: int
    gid: int
    mode: int  # permission bits, setgid and sticky included
    ino: int
    size: int
    mtime: float
    atime: float


class Defect(NamedTuple):
    """A defect: the path (relative to queue/) and what is wrong with it."""

    path: str
    what: str


class Snapshot(NamedTuple):
    """What scan read: {path: Node}, and {path: bytes} for the envelope files no larger than MAX_CONTENT."""

    nodes: dict[str, Node]
    contents: dict[str, bytes]


# qmail-setup's layout (tree.make_queue): path, kind, owner role (an Owners field), mode
def layout() -> list[tuple[str, str, str, int]]:
    """Return the directories and lock files qmail-setup makes, with their owners' roles and modes."""
    out = [("", "dir", "queue", 0o750), ("pid", "dir", "queue", 0o700), ("intd", "dir", "queue", 0o700),
           ("todo", "dir", "queue", 0o750), ("bounce", "dir", "send", 0o700), ("mess", "dir", "queue", 0o750),
           ("hold", "dir", "send", 0o700), ("corrupt", "dir", "send", 0o700)]
    out += [(name, "dir", "send", 0o700) for name in ("info", "local", "remote")]
    for k in range(SPLIT):
        out.append(("mess/%d" % k, "dir", "queue", 0o750))
        out += [("%s/%d" % (name, k), "dir", "send", 0o700) for name in ("info", "local", "remote")]
    out += [("lock", "dir", "queue", 0o750), ("lock/sendmutex", "file", "send", 0o600),
            ("lock/tcpto", "file", "remote", 0o644), ("lock/trigger", "fifo", "send", 0o622),
            ("lock/qctl", "dir", "send", 0o700)]
    return out


def kind_of(mode: int) -> str:
    """Return a Node kind for an st_mode."""
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def node(path: str, st: os.stat_result) -> Node:
    """Return the Node of an lstat result."""
    return Node(path, kind_of(st.st_mode), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_ino,
                st.st_size, st.st_mtime, st.st_atime)


def scan(queue: str) -> Snapshot:
    """Read queue/ two levels deep (three in the split directories) without following links.

    An entry that vanishes while being read (a live queue) is left out; any other error is raised."""
    nodes: dict[str, Node] = {}
    contents: dict[str, bytes] = {}

    def visit(rel: str) -> Node | None:
        try:
            n = node(rel, os.lstat(os.path.join(queue, rel) if rel else queue))
        except FileNotFoundError:
            return None
        nodes[rel] = n
        return n

    def listdir(rel: str) -> list[str]:
        try:
            return sorted(os.listdir(os.path.join(queue, rel) if rel else queue))
        except (FileNotFoundError, NotADirectoryError):
            return []

    top = visit("")
    if top is None or top.kind != "dir":
        raise FileNotFoundError(2, "queue is not a directory", queue)
    for name in listdir(""):
        n = visit(name)
        if n is None or n.kind != "dir":
            continue
        for entry in listdir(name):
            rel = name + "/" + entry
            e = visit(rel)
            if e is None or e.kind != "dir" or name not in SPLIT_DIRS:
                if e is not None and e.kind == "file" and name in CONTENT_DIRS:
                    read_content(queue, e, contents)
                continue
            for leaf in listdir(rel):
                f = visit(rel + "/" + leaf)
                if f is not None and f.kind == "file" and name in CONTENT_DIRS:
                    read_content(queue, f, contents)
    return Snapshot(nodes, contents)


def read_content(queue: str, n: Node, contents: dict[str, bytes]) -> None:
    """Keep the bytes of an envelope file no larger than MAX_CONTENT (never through a link, never a FIFO)."""
    if n.size > MAX_CONTENT:
        return
    try:
        fd = open_regular(os.path.join(queue, n.path))
    except (FileNotFoundError, NotRegularFile):  # gone, or a link or FIFO planted since the walk: a defect there
        return
    try:
        data = b""
        while len(data) <= MAX_CONTENT:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) <= MAX_CONTENT:
        contents[n.path] = data


def expected_owners(queue_uid: int, queue_gid: int, accounts: dict[str, tuple[int, int]],
                    qmail_gid: int | None) -> tree.Owners:
    """Return the owners qmail-setup gave: qmail's accounts when queue/ belongs to qmailq, else single-user.

    accounts maps qmail's user names to (uid, gid) as the passwd file has them (empty when absent)."""
    q = accounts.get("qmailq")
    if q is None or q[0] != queue_uid or qmail_gid is None or any(
            name not in accounts for name in ("alias", "qmails", "qmailr", "qmaill")):
        return tree.single_owner(queue_uid, queue_gid)
    return tree.Owners(False, (0, 0), (0, qmail_gid), (accounts["alias"][0], qmail_gid), (q[0], qmail_gid),
                       (accounts["qmails"][0], qmail_gid), (accounts["qmailr"][0], qmail_gid), accounts["qmaill"])


def system_owners(queue_uid: int, queue_gid: int) -> tree.Owners:
    """expected_owners with this system's passwd and group files (read only: no account is created)."""
    import grp
    import pwd
    accounts = {}
    for name, _ in tree.QMAIL_USERS:
        try:
            pw = pwd.getpwnam(name)
            accounts[name] = (pw.pw_uid, pw.pw_gid)
        except KeyError:
            pass
    try:
        qmail_gid: int | None = grp.getgrnam("qmail").gr_gid
    except KeyError:
        qmail_gid = None
    return expected_owners(queue_uid, queue_gid, accounts, qmail_gid)


def check_layout(nodes: dict[str, Node], owners: tree.Owners) -> list[Defect]:
    """Defects of the directories and lock files: missing, wrong kind, owner or mode."""
    out = []
    for path, kind, role, mode in layout():
        n = nodes.get(path)
        shown = path or "."
        if n is None:
            out.append(Defect(shown, "missing (qmail-setup makes it)"))
            continue
        if n.kind != kind:
            out.append(Defect(shown, "is a %s, not a %s" % (n.kind, kind if kind != "fifo" else "FIFO")))
            continue
        uid, gid = getattr(owners, role)
        if (n.uid, n.gid) != (uid, gid):
            out.append(Defect(shown, "owned by %d:%d, not %d:%d" % (n.uid, n.gid, uid, gid)))
        if n.mode != mode:
            out.append(Defect(shown, "mode %04o, not %04o" % (n.mode, mode)))
    return out


def number(name: str) -> int | None:
    """Return a message number entry name's value, or None for any other name."""
    return int(name) if name.isascii() and name.isdigit() and name == str(int(name)) else None


def check_records(path: str, data: bytes) -> str | None:
    """Return what is wrong with an envelope file's records, or None."""
    directory = path.split("/", 1)[0]
    if data and not data.endswith(b"\0"):
        return "last record has no NUL (unfinished)"
    recs = data.split(b"\0")[:-1]
    kinds = [r[:1] for r in recs]
    if directory == "todo":
        if b"F" not in kinds:
            return "envelope has no F (sender) record"
        if any(k not in (b"u", b"p", b"F", b"T") for k in kinds):
            return "envelope has a record that is not u, p, F or T"
    elif directory in ("info", "hold"):
        if kinds[:1] != [b"F"]:
            return "does not start with an F (sender) record"
    elif any(k not in (b"T", b"D") for k in kinds):
        return "has a record that is not T (to do) or D (done)"
    return None


def check(snap: Snapshot, owners: tree.Owners, now: float) -> list[Defect]:
    """Return every defect of the queue snapshot, sorted by path."""
    nodes = snap.nodes
    out = check_layout(nodes, owners)
    message_owner = {"mess": owners.queue, "intd": owners.queue, "todo": owners.queue, "pid": owners.queue,
                     "info": owners.send, "local": owners.send, "remote": owners.send, "bounce": owners.send,
                     "hold": owners.send}
    made = {p for p, _, _, _ in layout()}
    known_top = {p.split("/", 1)[0] for p in made if p}
    present: dict[str, dict[int, Node]] = {d: {} for d in SPLIT_DIRS + FLAT_DIRS}
    for path, n in nodes.items():
        parts = path.split("/") if path else []
        if len(parts) == 1 and parts[0] not in known_top:
            out.append(Defect(path, "stray name in queue/"))
            continue
        if len(parts) == 2 and parts[0] == "lock":
            if parts[1] not in LOCK_FILES:
                out.append(Defect(path, "stray name in lock/"))
            continue
        if len(parts) == 2 and parts[0] == "corrupt":
            out.append(Defect(path, "damaged message set aside (look at it, then remove it)"))
            continue
        if len(parts) < 2 or parts[0] not in present:
            continue
        directory = parts[0]
        if directory in SPLIT_DIRS:
            if len(parts) == 2:
                if path not in made and not (n.kind == "dir" and parts[1].isdigit() and int(parts[1]) < SPLIT
                        and parts[1] == str(int(parts[1]))):
                    out.append(Defect(path, "stray name in %s/ (only split directories 0..%d)"
                                      % (directory, SPLIT - 1)))
                continue
            if len(parts) != 3:
                continue
        elif len(parts) != 2:
            continue
        name = parts[-1]
        if directory == "pid":
            if n.kind != "file":
                out.append(Defect(path, "not a regular file"))
            elif now - n.mtime > OSSIFIED:
                out.append(Defect(path, "injection debris older than 36 hours (qmail-clean removes it)"))
            continue
        k = number(name)
        if k is None:
            out.append(Defect(path, "stray name: not a message number"))
            continue
        if n.kind != "file":
            out.append(Defect(path, "not a regular file but a %s" % n.kind))
            continue
        if directory in SPLIT_DIRS and int(parts[1]) != k % SPLIT:
            out.append(Defect(path, "in the wrong split directory: belongs in %s/%d/" % (directory, k % SPLIT)))
            continue
        if directory == "mess" and n.ino != k:
            out.append(Defect(path, "named %d but its inode is %d" % (k, n.ino)))
        want = message_owner[directory]
        if n.uid != want[0]:
            out.append(Defect(path, "owned by uid %d, not %d" % (n.uid, want[0])))
        if n.mode & 0o022:
            out.append(Defect(path, "writable by group or others (mode %04o)" % n.mode))
        if path in snap.contents:
            why = check_records(path, snap.contents[path])
            if why:
                out.append(Defect(path, why))
        present[directory][k] = n
    out += check_states(present, now)
    return sorted(set(out))


def split_path(directory: str, n: int) -> str:
    """Return a message file's path relative to queue/."""
    if directory in SPLIT_DIRS:
        return "%s/%d/%d" % (directory, n % SPLIT, n)
    return "%s/%d" % (directory, n)


def check_states(present: dict[str, dict[int, Node]], now: float) -> list[Defect]:
    """Defects of the files of one message together: the states S2..S5 of qmail's INTERNALS."""
    out = []
    mess, intd, todo = present["mess"], present["intd"], present["todo"]
    info, local, remote, bounce = present["info"], present["local"], present["remote"], present["bounce"]
    hold = present["hold"]
    for n in sorted(todo):
        if n not in mess:
            out.append(Defect(split_path("todo", n), "todo without mess/%d/%d" % (n % SPLIT, n)))
    for n in sorted(intd):
        if n not in mess:
            out.append(Defect(split_path("intd", n), "intd without mess/%d/%d" % (n % SPLIT, n)))
        elif n not in todo and now - intd[n].mtime > OSSIFIED:
            out.append(Defect(split_path("intd", n), "intd without todo, older than 36 hours (never committed)"))
    for n in sorted(info):
        if n not in mess:
            out.append(Defect(split_path("info", n), "info without mess/%d/%d" % (n % SPLIT, n)))
    for n in sorted(hold):
        if n not in mess:
            out.append(Defect(split_path("hold", n), "hold without mess/%d/%d" % (n % SPLIT, n)))
        if n in info:
            out.append(Defect(split_path("hold", n), "held and in info/%d/%d at once" % (n % SPLIT, n)))
    for channel, files in (("local", local), ("remote", remote)):
        for n in sorted(files):
            if n not in info and n not in todo and n not in hold:
                out.append(Defect(split_path(channel, n), "%s without info/%d/%d" % (channel, n % SPLIT, n)))
    for n in sorted(bounce):
        if n not in info and n not in hold:
            out.append(Defect(split_path("bounce", n), "bounce without info/%d/%d" % (n % SPLIT, n)))
    for n in sorted(mess):
        if n not in info and n not in todo and n not in intd and n not in hold and now - mess[n].atime > OSSIFIED:
            out.append(Defect(split_path("mess", n), "mess without todo or info, older than 36 hours"))
    return out


def report(defects: Iterable[Defect]) -> bytes:
    """Return -s's lines: `queue/<path>: <what>`."""
    return b"".join(("queue/%s: %s\n" % (d.path or ".", d.what)).encode("utf-8", "backslashreplace")
                    for d in defects)


def owners_for(queue_uid: int, queue_gid: int) -> tree.Owners:
    """The owners -s expects and -S gives: system_owners of queue/'s owner, but qmail's accounts when queue/
    belongs to a uid no account has any more (the uids changed: qmailq was made again)."""
    import pwd
    try:
        pwd.getpwuid(queue_uid)
    except KeyError:
        try:
            q = pwd.getpwnam("qmailq")
        except KeyError:
            return system_owners(queue_uid, queue_gid)
        return system_owners(q.pw_uid, q.pw_gid)
    return system_owners(queue_uid, queue_gid)
