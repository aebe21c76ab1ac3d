"""maildir2mbox: move the messages of $MAILDIR (new/ and cur/, oldest first) to the end of the mbox $MAIL,
through the copy $MAILTMP, under $MAIL's flock; then remove them from the Maildir (maildir2mbox(1))."""

import os

from pyqmail.lib.local import maildirscan
from pyqmail.lib.local.mbox import FromQuoter
from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.program import main, warn
from pyqmail.lib.util.regularfile import NotRegularFile, open_regular

FIRST_LINE_MAX = 65536  # bytes of a message's first line looked at for Return-Path; longer: `From XXX`
OUT_BUFFER = 65536
SUBDIRS = (b"new", b"cur")


def fatal(what, e):
    """End with `maildir2mbox: fatal: <what>: <error>` and exit 111."""
    import errno
    if isinstance(e, NotRegularFile):
        why = str(e)
    else:
        why = "it is a symbolic link" if e.errno == errno.ELOOP else error_str(e.errno)
    raise Exit(TEMP_FAILURE, "fatal: %s: %s" % (what, why))


class Output:
    """A buffered writer to MAILTMP: at most OUT_BUFFER bytes held."""

    def __init__(self, fd, name):
        self.fd, self.name, self.pending, self.size = fd, name, [], 0

    def put(self, data):
        if data:
            self.pending.append(data)
            self.size += len(data)
            if self.size >= OUT_BUFFER:
                self.flush()

    def flush(self):
        try:
            write_all(self.fd, b"".join(self.pending))
        except OSError as e:
            fatal("unable to write to " + self.name, e)
        self.pending, self.size = [], 0


def first_line(fd, path):
    """Return (first line with its LF if any, the bytes read after it): at most FIRST_LINE_MAX+ bytes held."""
    got = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError as e:
            fatal("unable to read $MAILDIR/" + os.fsdecode(path), e)
        if not data:
            return got, b""
        got += data
        nl = got.find(b"\n")
        if nl >= 0:
            return got[:nl + 1], got[nl + 1:]
        if len(got) > FIRST_LINE_MAX:
            return b"", got


def append_message(out, dirs, path, mtime):
    """Write one message as an mbox entry: From_ line, >From-quoted text ending in LF, then a blank line."""
    sub, base = path.split(b"/", 1)
    try:
        # never a FIFO (it would hang us) nor through a symlink (run by root, a link to a file only root may
        # read would copy it into the user's mbox): the listing skipped both, this is for a swap since then
        fd = open_regular(base, dir_fd=dirs[sub])
    except OSError as e:
        fatal("unable to read $MAILDIR/" + os.fsdecode(path), e)
    try:
        line, rest = first_line(fd, path)
        out.put(maildirscan.from_line(line, mtime))
        quoter = FromQuoter()
        data = line + rest
        while data:
            for piece in quoter.feed(data):
                out.put(piece)
            try:
                data = os.read(fd, 65536)
            except OSError as e:
                fatal("unable to read $MAILDIR/" + os.fsdecode(path), e)
        out.put(quoter.finish())
        out.put(b"\n")
    finally:
        os.close(fd)


def copy_old(mbox, out):
    """Copy the current mbox into MAILTMP."""
    try:
        old = os.open(mbox, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        fatal("unable to read " + os.fsdecode(mbox), e)
    try:
        while True:
            try:
                data = os.read(old, 65536)
            except OSError as e:
                fatal("unable to read " + os.fsdecode(mbox), e)
            if not data:
                return
            out.put(data)
    finally:
        os.close(old)


def lock_mbox(mbox, name):
    """Open $MAIL (never through a symlink: rename() would replace the link, not what it points to, and O_CREAT
    would create its target elsewhere) and flock it; return the descriptor. If another program renamed a new
    file over $MAIL while we waited, that lock guards nothing (a delivery appends to the new file meanwhile):
    lock the new one instead."""
    import fcntl
    for _ in range(100):
        try:
            fd = os.open(mbox, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            fatal("unable to lock " + name, e)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.lstat(mbox)
            except FileNotFoundError:
                now = None
        except OSError as e:
            fatal("unable to lock " + name, e)
        if now is not None and (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
            if held.st_nlink != 1:  # as a symlink: the rename would leave the other name with the old text
                raise Exit(TEMP_FAILURE, "fatal: unable to lock %s: it has other hard links" % name)
            return fd
        os.close(fd)
    raise Exit(TEMP_FAILURE, "fatal: unable to lock %s: it keeps being replaced" % name)


def sync_directory(path):
    """fsync the directory holding path; exit 111 if that fails (the messages then stay in the Maildir)."""
    folder = os.path.dirname(path) or b"."
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        fatal("unable to sync " + os.fsdecode(folder), e)


def body(argv):
    """Move the messages; exit 0, or 111 with the mbox untouched."""
    os.umask(0o077)
    env = os.environb
    mbox = env.get(b"MAIL")
    if mbox is None:
        raise Exit(TEMP_FAILURE, "fatal: MAIL not set")
    mboxtmp = env.get(b"MAILTMP")
    if mboxtmp is None:
        raise Exit(TEMP_FAILURE, "fatal: MAILTMP not set")
    maildirscan.chdir_maildir(env, "maildir2mbox")
    maildirscan.clean_tmp()
    dirs = maildirscan.open_dirs(SUBDIRS)  # new/ and cur/ used through these: never through a symlink
    messages = maildirscan.scan(SUBDIRS, follow=False, fds=dirs)
    if not messages:
        return 0
    name, tmpname = os.fsdecode(mbox), os.fsdecode(mboxtmp)
    lock_mbox(mbox, name)  # held until the end
    # again: another run may have moved them while we waited
    messages = maildirscan.scan(SUBDIRS, follow=False, fds=dirs)
    if not messages:
        return 0
    # qmail's open_trunc follows a symlink or hard link planted as MAILTMP and truncates what it points to:
    # here MAILTMP must be a regular file of one link (or new), checked on the open file before truncating
    try:
        new = open_regular(mboxtmp, os.O_WRONLY | os.O_CREAT, 0o600, one_link=True)
    except OSError as e:
        fatal("unable to create " + tmpname, e)
    try:
        os.ftruncate(new, 0)
    except OSError as e:
        fatal("unable to create " + tmpname, e)
    out = Output(new, tmpname)
    copy_old(mbox, out)
    for mtime, path in messages:
        append_message(out, dirs, path, mtime)
    out.flush()
    try:
        os.fsync(new)
        os.close(new)
    except OSError as e:
        fatal("unable to write to " + tmpname, e)
    try:
        os.rename(mboxtmp, mbox)
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to move %s to %s: %s" % (tmpname, name, error_str(e.errno)))
    sync_directory(mbox)  # the new mbox survives a crash before the messages are removed
    for _, path in messages:
        sub, base = path.split(b"/", 1)
        try:
            os.unlink(base, dir_fd=dirs[sub])
        except OSError as e:
            warn("maildir2mbox", "warning: $MAILDIR/%s will be delivered twice; unable to unlink: %s"
                 % (os.fsdecode(path), error_str(e.errno)))
    return 0


def run():
    """Console-script entry point."""
    main("maildir2mbox", body, crash_code=TEMP_FAILURE)
