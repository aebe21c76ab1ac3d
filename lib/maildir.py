"""maildir delivery (maildir(5)): tmp/<unique> written with O_EXCL and fsynced, then linked into new/."""

import os
import time

from pyqmail.lib import msgfd
from pyqmail.lib.errstr import is_temp
from pyqmail.lib.exits import Exit

DEATH = 86400  # qmail-local's whole-delivery alarm
TRIES = 3
RETRY_SLEEP = 2
TEMP_ERROR = "Temporary error on maildir delivery. (#4.3.0)"


def safe_host(host):
    """Return the host name as maildir(5) wants it in file names: `/` as \\057, `:` as \\072."""
    return host.replace("/", "\\057").replace(":", "\\072")


def unique_name(now, pid, host, random_hex):
    """Return a maildir unique name `<sec>.M<usec>P<pid>R<random>.<host>`."""
    sec = int(now)
    usec = int((now - sec) * 1000000)
    return "%d.M%dP%dR%s.%s" % (sec, usec, pid, random_hex, safe_host(host))


def _open_tmp(dfd):
    """Create tmp/<unique> exclusively (3 tries, 2 s apart); return (fd, name)."""
    host = os.uname().nodename
    for attempt in range(TRIES):
        name = unique_name(time.time(), os.getpid(), host, os.urandom(4).hex())
        try:
            return os.open("tmp/" + name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dfd), name
        except FileExistsError:
            if attempt + 1 < TRIES:
                time.sleep(RETRY_SLEEP)
        except OSError:
            break
    raise Exit(111, TEMP_ERROR)


def _write_all(fd, data):
    """Write every byte of data to fd."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy(fd, head, fd_in):
    """Write head and the message to fd, then fsync it."""
    _write_all(fd, head)
    for chunk in msgfd.chunks(fd_in):
        _write_all(fd, chunk)
    os.fsync(fd)


def _fsync_new(dfd):
    """fsync new/ so that the link survives a crash (Linux needs it; qmail relied on sync directories)."""
    try:
        nfd = os.open("new", os.O_RDONLY | os.O_DIRECTORY, dir_fd=dfd)
    except OSError:
        return
    try:
        os.fsync(nfd)
    except OSError:
        pass
    os.close(nfd)


def deliver(directory, head, fd_in):
    """Deliver the message on fd_in, preceded by head (RPLINE, DTLINE), into the maildir directory."""
    import _signal
    msgfd.rewind(fd_in)
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise Exit(111, TEMP_ERROR if is_temp(e.errno) else "Unable to chdir to maildir. (#4.2.1)")
    state = {"tmp": None}

    def give_up(*_):
        raise Exit(111, "Timeout on maildir delivery. (#4.3.0)")

    _signal.signal(_signal.SIGALRM, give_up)
    _signal.alarm(DEATH)
    try:
        fd, name = _open_tmp(dfd)
        state["tmp"] = "tmp/" + name
        try:
            _copy(fd, head, fd_in)
        finally:
            os.close(fd)
        os.link(state["tmp"], "new/" + name, src_dir_fd=dfd, dst_dir_fd=dfd)
        _fsync_new(dfd)
    except msgfd.MessageReadError:
        raise Exit(111, "Unable to read message. (#4.3.0)")
    except OSError:
        raise Exit(111, TEMP_ERROR)
    finally:
        _signal.alarm(0)
        _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)
        if state["tmp"]:
            try:
                os.unlink(state["tmp"], dir_fd=dfd)
            except OSError:
                pass
        os.close(dfd)
