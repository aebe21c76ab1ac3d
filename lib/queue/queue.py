"""Writing one message into qmail's queue, exactly in qmail-queue's order (qmail-queue(8))."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)
import time

from pyqmail.lib.queue import envelope, queuepool
from pyqmail.lib.config.control import join
from pyqmail.lib.util.exits import HOME, QUEUE_DIR, QUEUE_INTD, QUEUE_MESS, QUEUE_PID, QUEUE_TODO, WRITE_ERROR, Exit
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.procid import getpid

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable
    from typing import NoReturn

SPLIT = 23
DEATH = 86400  # qmail-queue's whole-run alarm; the orphan rule (36 h) depends on it
OSSIFIED = 129600  # 36 hours: longer than DEATH, so no live injection still owns a file this old (qmail-clean(8))
WHO_BY_NAME = {"alias": "by alias", "qmaild": "from network", "qmails": "for bounce"}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def split_name(directory: str, n: int) -> str:
    """Return the split path of message n in a split directory (mess, info, local, remote)."""
    return "%s/%d/%d" % (directory, n % SPLIT, n)


def date822(t: float) -> str:
    """Return qmail's RFC 822 date: GMT, day not zero-padded, `-0000` zone."""
    g = time.gmtime(t)
    return "%d %s %d %02d:%02d:%02d -0000" % (
        g.tm_mday, MONTHS[g.tm_mon - 1], g.tm_year, g.tm_hour, g.tm_min, g.tm_sec)


# uid -> phrase: a reused worker queues many messages, and getpwuid reads /etc/passwd each time
_who: dict[int, str] = {}


def who_for_uid(uid: int) -> str:
    """Return qmail-queue's `invoked ...` phrase for the injecting uid."""
    if uid not in _who:
        import pwd
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = ""
        _who[uid] = WHO_BY_NAME.get(name, "by uid %d" % uid)
    return _who[uid]


def received_line(pid: int, uid: int, now: float) -> bytes:
    """Return the Received line qmail-queue prepends."""
    return b"Received: (qmail %d invoked %s); %s\n" % (pid, who_for_uid(uid).encode(), date822(now).encode())


def write_parts(fd: int, parts: list[bytes | bytearray]) -> None:
    """Write every byte of parts to fd in turn: one writev when the kernel takes them all, no joined copy."""
    done = posix.writev(fd, parts)
    for part in parts:
        if done >= len(part):
            done -= len(part)
        else:
            write_all(fd, memoryview(part)[done:])
            done = 0


def fsync_dir(name: str, dir_fd: int | None = None) -> None:
    """fsync a directory so that the entries the commit depends on survive a crash (Linux)."""
    fd = posix.open(name, posix.O_RDONLY | posix.O_DIRECTORY, dir_fd=dir_fd)
    try:
        posix.fsync(fd)
    finally:
        posix.close(fd)


_journal_less: dict[int, bool] = {}  # st_dev -> names_need_dir_sync's answer (a reused worker asks once)
JOURNAL_LESS_TYPES = ("ext2", "ext3", "ext4")  # ext2/3/4 mounted without a jbd2 journal (/proc/fs/jbd2 lists each)


def names_need_dir_sync(dev: int) -> bool:
    """True when a new name of an old file on device dev is durable only once its directory is fsynced: ext2, or
    ext4 without a journal, whose fsync of a file syncs the directory of the file's name only for a file created
    since its last fsync (fs/ext4/fsync.c, ext4_sync_parent: EXT4_STATE_NEWENTRY, set when the inode is made). A
    journaling file system commits the link with the file's own fsync. Unknown (no /proc): True."""
    if dev not in _journal_less:
        _journal_less[dev] = _probe_journal_less(dev)
    return _journal_less[dev]


def _probe_journal_less(dev: int) -> bool:
    """Read /proc/self/mountinfo for dev's file system type and source; True for ext2/3/4 with no jbd2 journal."""
    key = b"%d:%d" % (posix.major(dev), posix.minor(dev))
    try:
        fd = posix.open("/proc/self/mountinfo", posix.O_RDONLY)
    except OSError:
        return True
    try:
        data = b""
        while True:
            chunk = posix.read(fd, 65536)
            if not chunk or len(data) > 4 << 20:  # bounded: a host with thousands of mounts still fits
                break
            data += chunk
    except OSError:
        return True
    finally:
        posix.close(fd)
    for line in data.split(b"\n"):
        fields = line.split(b" ")
        if len(fields) < 5 or fields[2] != key or b"-" not in fields:
            continue
        rest = fields[fields.index(b"-") + 1:]
        if len(rest) < 2 or rest[0].decode("ascii", "replace") not in JOURNAL_LESS_TYPES:
            return False
        source = rest[1].rsplit(b"/", 1)[-1].decode("latin-1")
        try:
            posix.stat("/proc/fs/jbd2/%s-8" % source)
            return False
        except OSError:
            return True
    return True


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing fd's dirty pages now (fadvise DONTNEED starts writeback, without
    waiting; pages still being written stay cached): a hint, so errors are ignored."""
    try:
        posix.posix_fadvise(fd, 0, 0, posix.POSIX_FADV_DONTNEED)
    except (OSError, AttributeError):
        pass


class Injection:
    """One message being queued; files it made are removed if it fails before the commit. Its names are
    relative to dir_fd, the queue directory opened by the caller, or else to the working directory."""

    def __init__(self, pid: int, uid: int, dir_fd: int | None = None) -> None:
        self.pid = pid
        self.uid = uid
        self.dir_fd = dir_fd
        self.now = time.time()
        self.created: list[str] = []
        self.reused: set[int] = set()  # fds of files taken from the pool: truncated to what was written
        self.unsynced = -1  # mess/N's fd, written but not yet fsynced (sync_behind)
        self.mess_dir_sync = False  # mess/N's directory must be fsynced too (a pooled file, no journal)

    def fail(self, code: int) -> NoReturn:
        """Remove what was created (intd, then mess), and raise Exit(code)."""
        fd, self.unsynced = self.unsynced, -1
        if fd >= 0:
            try:
                posix.close(fd)
            except OSError:
                pass
        for name in reversed(self.created):
            try:
                truncate(name, self.dir_fd)
                posix.unlink(name, dir_fd=self.dir_fd)
            except OSError:
                pass
        raise Exit(code)

    def open_mess(self) -> tuple[int, int]:
        """Take a pooled file or create the pid file, link it to mess/<inode>, and return (fd, inode)."""
        fd = -1
        for seq in range(1, 10):
            pidfn = "pid/%d.%d.%d" % (getpid(), int(self.now), seq)
            try:
                fd = self.open_new(pidfn, "mess")
                break
            except FileExistsError:
                continue
            except OSError:
                raise Exit(QUEUE_PID)
        if fd < 0:
            raise Exit(QUEUE_PID)
        st = posix.fstat(fd)
        n = st.st_ino
        self.messfn = split_name("mess", n)
        try:
            if fd not in self.reused:
                self.set_mode(fd, st)
            posix.link(pidfn, self.messfn, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except OSError:
            posix.unlink(pidfn, dir_fd=self.dir_fd)
            raise Exit(QUEUE_MESS)
        self.created.append(self.messfn)
        try:
            posix.unlink(pidfn, dir_fd=self.dir_fd)
        except OSError:
            self.fail(QUEUE_PID)
        self.number = n
        # a pooled file's new name mess/N is not synced by its fsync on a journal-less ext4 (names_need_dir_sync)
        self.mess_dir_sync = fd in self.reused and names_need_dir_sync(st.st_dev)
        return fd, n

    def open_new(self, name: str, kind: str) -> int:
        """Open name for writing as a new file: a pooled one renamed to it, else created (O_EXCL)."""
        if queuepool.take(kind, name, self.dir_fd):
            try:
                fd = posix.open(name, posix.O_WRONLY | posix.O_NOFOLLOW, dir_fd=self.dir_fd)
            except OSError:
                fd = -1
            if fd >= 0 and queuepool.reusable(posix.fstat(fd)):
                self.reused.add(fd)
                return fd
            if fd >= 0:
                posix.close(fd)
            queuepool.discard(name, self.dir_fd)  # not a file of ours to overwrite: create one instead
        return posix.open(name, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL, 0o644, dir_fd=self.dir_fd)

    def set_mode(self, fd: int, st: posix.stat_result | None = None) -> None:
        """Give a file this injection created qmail-queue's mode, 0644 (umask 033), whatever the process's umask:
        with a queue directory descriptor the caller keeps its umask (no umask calls per message)."""
        if self.dir_fd is None:
            return  # enter_queue set qmail-queue's umask
        if st is None:
            st = posix.fstat(fd)
        if st.st_mode & 0o7777 != 0o644:
            posix.fchmod(fd, 0o644)

    def cut(self, fd: int) -> None:
        """Cut a file taken from the pool to what was written (once; a file created new has nothing beyond)."""
        if fd in self.reused:
            self.reused.discard(fd)
            posix.ftruncate(fd, posix.lseek(fd, 0, 1))  # 1: SEEK_CUR

    def sync(self, fd: int) -> None:
        """Cut a reused file to what was written, fsync and close fd."""
        self.cut(fd)
        posix.fsync(fd)
        posix.close(fd)

    def sync_behind(self, fd: int) -> None:
        """Cut a reused file to what was written and start its writeback; commit fsyncs it (settle)."""
        try:
            self.cut(fd)
        except OSError:
            posix.close(fd)
            raise
        start_writeback(fd)
        self.unsynced = fd

    def settle(self) -> None:
        """fsync and close the file sync_behind left (if any); raise its OSError."""
        fd, self.unsynced = self.unsynced, -1
        if fd >= 0:
            try:
                posix.fsync(fd)
            finally:
                posix.close(fd)

    def write_message(self, fd: int, chunks: Iterable[bytes]) -> None:
        """Write the Received line and the message chunks to mess and start its writeback (commit fsyncs it)."""
        try:
            write_all(fd, received_line(self.pid, self.uid, self.now))
        except OSError:
            self.fail(WRITE_ERROR)
        try:
            for chunk in chunks:
                write_all(fd, chunk)
        except Exit as e:
            self.fail(e.code)
        except OSError:
            self.fail(WRITE_ERROR)
        try:
            self.sync_behind(fd)
        except OSError:
            self.fail(WRITE_ERROR)

    def commit(self, sender: bytes, recipients: Iterable[bytes]) -> None:
        """Write intd/N, fsync mess/N and intd/N, link intd/N to todo/N, fsync todo/: after this the message is
        queued."""
        intdfn = "intd/%d" % self.number
        try:
            fd = self.open_new(intdfn, "intd")
        except OSError:
            self.fail(QUEUE_INTD)
        self.created.append(intdfn)
        try:
            if fd not in self.reused:
                self.set_mode(fd)
            write_parts(fd, envelope.todo_parts(self.uid, self.pid, sender, recipients))
            self.cut(fd)
            start_writeback(fd)  # both files' blocks in the journal's running transaction: one commit
            self.settle()  # mess/N
            if self.mess_dir_sync:
                fsync_dir(self.messfn.rsplit("/", 1)[0], self.dir_fd)
            self.sync(fd)  # intd/N: both durable before todo/N names the message
        except OSError:
            try:
                posix.close(fd)
            except OSError:
                pass
            self.fail(WRITE_ERROR)
        try:
            posix.link(intdfn, "todo/%d" % self.number, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except OSError:
            self.fail(QUEUE_TODO)
        try:
            fsync_dir("todo", self.dir_fd)
        except OSError:
            pass  # todo/N exists: the message is queued; only its durability under power loss is weaker
        pull_trigger("lock/trigger", self.dir_fd)


def truncate(name: str, dir_fd: int | None) -> None:
    """Cut a file this injection made to nothing before unlinking it, as qmail-queue does (no symlink followed)."""
    if dir_fd is None:
        posix.truncate(name, 0)
        return
    fd = posix.open(name, posix.O_WRONLY | posix.O_NOFOLLOW | posix.O_TRUNC, dir_fd=dir_fd)
    posix.close(fd)


def pull_trigger(name: str = "lock/trigger", dir_fd: int | None = None) -> None:
    """Wake qmail-send: write one byte to the trigger FIFO without blocking, ignoring errors."""
    try:
        fd = posix.open(name, posix.O_WRONLY | posix.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return
    try:
        posix.write(fd, b"\0")
    except OSError:
        pass
    finally:
        posix.close(fd)


def enter_queue(home: str) -> None:
    """chdir to QMAILHOME/queue (exit 61/62) and set qmail-queue's umask."""
    try:
        posix.chdir(home)
    except OSError:
        raise Exit(HOME)
    try:
        posix.chdir("queue")
    except OSError:
        raise Exit(QUEUE_DIR)
    posix.umask(0o033)


def become_queue_owner(home: str) -> None:
    """As root, switch to the queue's owner (qmailq), as qmail's setuid qmail-queue runs."""
    from stat import S_ISDIR  # loaded already by os, which qmail-queue and qmail-pickup import
    try:
        if not S_ISDIR(posix.stat(home).st_mode):
            raise Exit(HOME)
    except OSError:
        raise Exit(HOME)
    try:
        st = posix.stat(join(home, "queue"))
    except OSError:
        raise Exit(QUEUE_DIR)
    if st.st_uid == 0:
        return
    posix.setgroups([])
    posix.setgid(st.st_gid)
    posix.setuid(st.st_uid)


def owns_queue(home: str) -> bool:
    """Return True when this process may write the queue itself (it owns queue/)."""
    try:
        return posix.stat(join(home, "queue")).st_uid == posix.geteuid()
    except FileNotFoundError:
        return True  # let enter_queue report the missing directory with qmail's code
    except OSError:
        raise Exit(HOME)
