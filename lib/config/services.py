"""Service definitions for a tree (daemontools/runit run scripts, systemd units, xinetd entries) and the
sendmail links, installed by qmail-setup without ever overwriting an administrator's file (qmail-setup(8))."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple  # only qmail-setup uses this module

from pyqmail.lib.util.regularfile import create_afresh, open_regular

KINDS = ("runit", "daemontools", "systemd", "xinetd")
SERVICES = ("qmail-send", "qmail-smtpd", "qmail-qmqpd", "qmail-qmtpd", "qmail-pop3d")
LINKS = ("usr/sbin/sendmail", "usr/lib/sendmail", "usr/bin/mailq", "usr/bin/newaliases")  # under the prefix
SAVED = ".before-pyqmail"  # suffix of a foreign file that --force moved aside
SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._+-")


class Accounts(NamedTuple):
    """Who the services run as: the network servers' account and group, the logger's."""

    server_user: str
    server_group: str
    log_user: str


class Item(NamedTuple):
    """One file to install: where, what, its mode; below base no symbolic link is followed."""

    path: Path
    text: str
    mode: int
    base: Path


def safe(value: str) -> bool:
    """True if value can stand unquoted in a shell script, a unit file and an xinetd entry."""
    return bool(value) and all(c in SAFE for c in value) and not value.startswith("-")


def substitute(text: str, values: dict[str, str]) -> str:
    """Replace each @NAME@ in text by values[NAME]."""
    for name, value in values.items():
        text = text.replace("@%s@" % name, value)
    return text


def values_for(root: Path, me: str, accounts: Accounts, kind: str) -> dict[str, str]:
    """Return the placeholders' values for a tree and a kind of supervisor (@SERVICE@ is per file)."""
    setuidgid = "chpst -u " if kind == "runit" else "setuidgid "
    return {"QMAILHOME": str(root), "ME": me, "SERVERUSER": accounts.server_user,
            "SERVERGROUP": accounts.server_group, "LOGUSER": accounts.log_user,
            "SETUIDGID": setuidgid + accounts.log_user}


def service_base(kind: str, root: Path, prefix: Path) -> Path:
    """Return the directory a kind's definitions go into: /etc/sv (runit), QMAILHOME/supervise (daemontools),
    /etc/systemd/system, /etc/xinetd.d; each under prefix."""
    where = {"runit": "etc/sv", "daemontools": str(root).lstrip("/") + "/supervise",
             "systemd": "etc/systemd/system", "xinetd": "etc/xinetd.d"}[kind]
    return prefix / where


def trusted_base(kind: str, root: Path, prefix: Path) -> Path:
    """Return the directory below which nothing may be a symbolic link: the tree itself for daemontools (its
    supervise/ may be the tree owner's), else the definitions' directory (root's own)."""
    return prefix / str(root).lstrip("/") if kind == "daemontools" else service_base(kind, root, prefix)


def plan(kind: str, templates: Path, root: Path, prefix: Path, values: dict[str, str]) -> list[Item]:
    """Return every file a kind's definitions consist of, with the tree's values substituted."""
    base = service_base(kind, root, prefix)
    top = trusted_base(kind, root, prefix)
    items = []
    if kind in ("runit", "daemontools"):
        log = (templates / "run" / "log").read_text()
        for name in SERVICES:
            one = dict(values, SERVICE=name)
            items.append(Item(base / name / "run", substitute((templates / "run" / name).read_text(), one), 0o755,
                              top))
            items.append(Item(base / name / "log" / "run", substitute(log, one), 0o755, top))
        return items
    for template in sorted((templates / kind).iterdir()):
        items.append(Item(base / template.name, substitute(template.read_text(), values), 0o644, top))
    return items


def make_parents(path: Path, base: Path) -> Path | None:
    """Create path's missing parent directories (mode 0755), following no symbolic link below base; return
    the first symbolic link found there (nothing is then created below it), else None."""
    os.makedirs(base, mode=0o755, exist_ok=True)
    here = base
    for part in path.parent.relative_to(base).parts:
        here = here / part
        if os.path.islink(here):
            return here
        try:
            os.mkdir(here, 0o755)
        except FileExistsError:
            pass
    return None


def install(item: Item) -> str:
    """Install one file unless something is there already: return "created", "unchanged" (the same file is
    there), "kept" (something else is there and stays) or "symlink" (a directory on its way below item.base
    is a symbolic link: not followed, nothing written)."""
    data = item.text.encode()
    if make_parents(item.path, item.base) is not None:
        return "symlink"
    if os.path.lexists(item.path):
        return "unchanged" if same_file(item.path, data) else "kept"
    temporary = item.path.with_name("." + item.path.name + ".qmail-setup")
    fd = create_afresh(str(temporary))
    try:
        os.write(fd, data)  # a few KB into a fresh regular file: one write
        os.fchmod(fd, item.mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, item.path)  # never replaces: fails if anything appeared there meanwhile
    except FileExistsError:
        return "kept"
    finally:
        os.unlink(temporary)
    return "created"


def same_file(path: Path, data: bytes) -> bool:
    """True if path is a regular file (not a symlink) holding exactly data."""
    try:
        fd = open_regular(str(path))
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size != len(data):
            return False
        return os.read(fd, len(data) + 1) == data
    finally:
        os.close(fd)


def link(path: Path, target: str, force: bool) -> str:
    """Make path a symbolic link to target: return "created", "unchanged" (it already is), "refused" (another
    file is there and force is off), "saved" (force: the other file is now path + SAVED) or "replaced" (force,
    but path + SAVED was taken: the other file is gone)."""
    os.makedirs(path.parent, mode=0o755, exist_ok=True)
    if os.path.islink(path) and os.readlink(path) == target:
        return "unchanged"
    if not os.path.lexists(path):
        try:
            os.symlink(target, path)
            return "created"
        except FileExistsError:
            pass
    if not force:
        return "refused"
    saved = path.with_name(path.name + SAVED)
    result = "replaced"
    if not os.path.lexists(saved):
        os.link(path, saved, follow_symlinks=False)  # the old one stays reachable under its new name
        result = "saved"
    temporary = path.with_name("." + path.name + ".qmail-setup")
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(target, temporary)
    os.rename(temporary, path)  # atomic: the name never goes missing
    return result


def log_directory(log: Path, name: str, ids: tuple[int, int]) -> bool:
    """Make log/name a directory owned by ids, mode 0755, following no symbolic link (log/ itself included:
    a single-user tree's owner could plant one); False if one was found and nothing was changed."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        parent = os.open(log, flags)
    except OSError:
        if os.path.islink(log):
            return False
        raise
    try:
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            pass
        try:
            fd = os.open(name, flags, dir_fd=parent)
        except OSError:
            if os.path.islink(os.path.join(log, name)):
                return False
            raise
        try:
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != ids and os.geteuid() == 0:
                os.fchown(fd, *ids)
            os.fchmod(fd, 0o755)
        finally:
            os.close(fd)
    finally:
        os.close(parent)
    return True
