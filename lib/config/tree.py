"""The qmail tree's layout, owners and modes (qmail-setup(8); qmail's hier.c), created idempotently."""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
import subprocess
from pathlib import Path
from typing import NamedTuple  # only qmail-setup uses this module

from pyqmail.lib.util import fdio
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.regularfile import NotRegularFile, create_afresh, open_regular

SPLIT = 23
Ids = tuple[int, int]  # (uid, gid)


class Owners(NamedTuple):
    """Who owns each part of the tree; single: one account owns everything (single-user mode)."""

    single: bool
    root: Ids
    control: Ids
    alias: Ids
    queue: Ids
    send: Ids
    remote: Ids
    log: Ids

QMAIL_USERS = (  # name, group: qmail's conf-users and conf-groups
    ("alias", "nofiles"), ("qmaild", "nofiles"), ("qmaill", "nofiles"), ("qmailp", "nofiles"),
    ("qmailq", "qmail"), ("qmailr", "qmail"), ("qmails", "qmail"),
)


def single_owner(uid: int, gid: int) -> Owners:
    """Every file owned by one account (single-user mode)."""
    ids = (uid, gid)
    return Owners(True, ids, ids, ids, ids, ids, ids, ids)


def ensure_account(name: str, group: str, home: Path) -> Ids:
    """Create a qmail system account and its group unless they exist; return (uid, gid)."""
    try:
        grp.getgrnam(group)
    except KeyError:
        subprocess.run(["groupadd", "-r", group], check=True)
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        nologin = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
        subprocess.run(["useradd", "-r", "-M", "-g", group, "-d", str(home), "-s", nologin, name],
                       check=True)
        pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


def qmail_owners(root: Path) -> Owners:
    """Create or reuse qmail's users and groups (run as root); return the ownership plan."""
    ids: dict[str, Ids] = {}
    for name, group in QMAIL_USERS:
        ids[name] = ensure_account(name, group, root / "alias" if name == "alias" else root)
    gid_qmail = grp.getgrnam("qmail").gr_gid
    return Owners(False, (0, 0), (0, gid_qmail), (ids["alias"][0], gid_qmail),
                  (ids["qmailq"][0], gid_qmail), (ids["qmails"][0], gid_qmail),
                  (ids["qmailr"][0], gid_qmail), ids["qmaill"])


def lchown(path: str | Path, ids: Ids) -> None:
    """Set owner and group, without following a symlink; a no-op when nothing would change."""
    st = os.lstat(path)
    if (st.st_uid, st.st_gid) != tuple(ids) and (os.geteuid() == 0 or st.st_uid == ids[0]):
        os.lchown(path, *ids)


def fchown(fd: int, ids: Ids) -> None:
    """Set an open file's owner and group; a no-op when nothing would change."""
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != tuple(ids) and (os.geteuid() == 0 or st.st_uid == ids[0]):
        os.fchown(fd, *ids)


def refuse(path: str | Path, why: str) -> Exit:
    """Return the Exit (111) for a path qmail-setup will not touch."""
    return Exit(TEMP_FAILURE, "fatal: %s %s" % (path, why))


def directory(path: str | Path, ids: Ids, mode: int) -> None:
    """Make a directory (if missing) with owner and mode; existing contents are left alone. A symbolic link
    there is followed only if it belongs to whoever runs this (the administrator's, say a queue on another
    disk); one planted by another account (alias owns alias/, qmailq queue/) is refused, never chmod'ed
    through."""
    path = Path(path)
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        pass
    except OSError as e:
        raise refuse(path, "cannot be made: %s" % e.strerror)
    st = os.lstat(path)
    flags = os.O_RDONLY | os.O_DIRECTORY
    if not stat.S_ISLNK(st.st_mode):
        flags |= os.O_NOFOLLOW
    elif st.st_uid != os.geteuid():
        raise refuse(path, "is a symbolic link owned by uid %d, not by us: not followed (if it is yours, "
                           "chown -h %d it; else remove it)" % (st.st_uid, os.geteuid()))
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise refuse(path, "is not a directory: %s" % e.strerror)
    try:
        fchown(fd, ids)
        os.fchmod(fd, mode)
    except OSError as e:  # say another account's tree, run as a plain user
        raise refuse(path, "cannot be given owner %d:%d and mode %04o: %s" % (ids[0], ids[1], mode, e.strerror))
    finally:
        os.close(fd)


def new_file(path: str | Path, ids: Ids, mode: int, data: bytes = b"", reset: bool = False) -> None:
    """Create a file with data unless it exists, through path.tmp made afresh (a planted link is removed,
    never written through); with reset, an existing regular file gets owner and mode back (not its data)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if reset:
            try:  # a hard link: maybe to a file elsewhere
                fd = open_regular(str(path), one_link=True)
            except NotRegularFile:
                raise refuse(path, "is not a regular file with one name: not touched (remove it)")
            except OSError as e:
                raise refuse(path, "is not a regular file: %s" % e.strerror)
            try:
                fchown(fd, ids)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        return
    tmp = path.with_name(path.name + ".tmp")
    fd = create_afresh(str(tmp))
    try:
        fdio.write_all(fd, data)
        fchown(fd, ids)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def fifo(path: str | Path, ids: Ids, mode: int) -> None:
    """Create a named pipe unless it exists; anything else there (a planted symlink) is refused."""
    path = Path(path)
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        pass
    if not stat.S_ISFIFO(os.lstat(path).st_mode):
        raise refuse(path, "exists and is not a named pipe: not touched (remove it)")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISFIFO(st.st_mode) or st.st_nlink != 1:  # replaced since the lstat, or a hard link
            raise refuse(path, "exists and is not a named pipe with one name: not touched (remove it)")
        fchown(fd, ids)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def make_base(root: Path, o: Owners) -> None:
    """Create QMAILHOME and its top-level directories."""
    directory(root, o.root, 0o755)
    for name in ("bin", "control", "users"):
        directory(root / name, o.control, 0o755)
    directory(root / "alias", o.alias, 0o2755)
    # outside queue/ (whose modes stay qmail's). Everyone may create and list (to fsync it) here;
    # files are group qmail, mode 0640, and the sticky bit keeps others from renaming or removing them
    directory(root / "maildrop", o.queue, 0o700 if o.single else 0o3777)


def install_controls(root: Path, o: Owners, me: str, mini: list[str]) -> None:
    """Install the default control files (never overwriting), and qmqpservers for mini-qmail."""
    import importlib  # pyqmail.control holds data files only: a type checker sees no module there
    template_dir = Path(importlib.import_module("pyqmail.control").__path__[0])
    domain = me.split(".", 1)[1] if "." in me else me
    for template in sorted(template_dir.iterdir()):
        if template.name == "README" or not template.is_file():
            continue
        text = template.read_text().replace("@ME@", me).replace("@DOMAIN@", domain)
        new_file(root / "control" / template.name, o.control, 0o644, text.encode())
    if mini:
        new_file(root / "control" / "qmqpservers", o.control, 0o644,
                 "".join(hub + "\n" for hub in mini).encode())


def make_queue(q: Path, o: Owners) -> None:
    """Create qmail 1.03's queue (split 23) with qmail's owners and modes."""
    directory(q, o.queue, 0o750)
    directory(q / "pid", o.queue, 0o700)
    directory(q / "intd", o.queue, 0o700)
    directory(q / "todo", o.queue, 0o750)
    directory(q / "bounce", o.send, 0o700)
    directory(q / "hold", o.send, 0o700)  # held messages' info/N (qmail-qctl -h); not qmail's
    directory(q / "corrupt", o.send, 0o700)  # damaged messages set aside (qmail-send, qmail-qctl -S); not qmail's
    directory(q / "mess", o.queue, 0o750)
    for name in ("info", "local", "remote"):
        directory(q / name, o.send, 0o700)
    for n in range(SPLIT):
        directory(q / "mess" / str(n), o.queue, 0o750)
        for name in ("info", "local", "remote"):
            directory(q / name / str(n), o.send, 0o700)
    directory(q / "lock", o.queue, 0o750)
    new_file(q / "lock" / "sendmutex", o.send, 0o600, reset=True)  # qmail-send opens it for writing
    new_file(q / "lock" / "tcpto", o.remote, 0o644, bytes(1024), reset=True)  # qmail-remote writes it
    fifo(q / "lock" / "trigger", o.send, 0o622)
    directory(q / "lock" / "qctl", o.send, 0o700)  # qmail-send's control socket: for root and qmail-send only


ALIASES = (".qmail-postmaster", ".qmail-mailer-daemon", ".qmail-root")  # qmail's INSTALL.alias
DEFAULT_DELIVERY = b"./Maildir/\n"


def rc_script(root: Path) -> str:
    """Return QMAILHOME/rc, qmail's /var/qmail/rc for this tree (logging with multilog when it is installed)."""
    return """#!/bin/sh
# Start mail delivery on this qmail tree: qmail-start(8) with qmail-send and its helpers.
# Written by qmail-setup, which never overwrites it: edit freely.
# Usage: rc [logger arg...]
# Deliveries default to control/defaultdelivery. Without arguments the log goes to
# multilog (daemontools) into log/qmail-send/ when multilog is installed, else it is
# appended to log/qmail-send.log.
QMAILHOME=%s
dd=`cat "$QMAILHOME/control/defaultdelivery" 2>/dev/null`
[ -n "$dd" ] || dd=./Maildir/
if [ $# -eq 0 ]; then
  if command -v multilog >/dev/null 2>&1; then
    set -- multilog t "$QMAILHOME/log/qmail-send"
  else
    exec >>"$QMAILHOME/log/qmail-send.log" 2>&1 || exit 111
  fi
fi
exec env - PATH="$QMAILHOME/bin:$PATH" QMAILHOME="$QMAILHOME" qmail-start "$dd" "$@"
""" % shlex.quote(str(root))


def make_delivery(root: Path, o: Owners) -> None:
    """Add what delivery needs: control/defaultdelivery, rc, log/, and the alias user's .qmail files and Maildir."""
    new_file(root / "control" / "defaultdelivery", o.control, 0o644, DEFAULT_DELIVERY)
    new_file(root / "rc", o.root, 0o755, rc_script(root).encode())
    directory(root / "log", o.root, 0o755)
    directory(root / "log" / "qmail-send", o.log, 0o755)
    for name in ALIASES:
        new_file(root / "alias" / name, o.alias, 0o644)
    for sub in ("", "/tmp", "/new", "/cur"):
        directory(str(root / "alias" / "Maildir") + sub, o.alias, 0o700)


def alias_home_warning(root: Path) -> str | None:
    """Return a warning when the alias account's passwd home is not this tree's alias/ (its mail goes there)."""
    try:
        home = pwd.getpwnam("alias").pw_dir
    except KeyError:
        return None
    if os.path.realpath(home) != os.path.realpath(root / "alias"):
        return ("the alias account's home is %s, not %s: mail for postmaster, root and unknown local "
                "parts goes there unless users/assign says otherwise" % (home, root / "alias"))
    return None
