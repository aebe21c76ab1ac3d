"""qmail-setup: create (or complete) a qmail tree at DIR, as qmail's install and config-fast do.

Usage:
  qmail-setup [--single-user] [--user=ACCOUNT] [--me=HOST] [--mini=HUB]... DIR
  qmail-setup --services=KIND [--links] [--force] [--destdir=PREFIX] DIR
  qmail-setup --links [--force] [--destdir=PREFIX] DIR
  qmail-setup (-h | --help)

Options:
  --single-user     Everything owned by one account (default when not run as root).
  --user=ACCOUNT    The account that owns a single-user tree (default: whoever runs this).
  --me=HOST         This host's name for control/me (default: the kernel's host name, no DNS).
  --mini=HUB        Make a mini-qmail tree whose qmail-queue is qmail-qmqpc sending to HUB
                    (an address, optionally :PORT or [v6]:PORT); repeat for failover order.
  --services=KIND   Install the service definitions for the existing tree DIR: runit, daemontools,
                    systemd or xinetd. An existing file is never overwritten (reported, exit 100).
  --links           Link /usr/sbin/sendmail, /usr/lib/sendmail, /usr/bin/mailq and /usr/bin/newaliases
                    to DIR/bin/sendmail; another program's file there is refused (exit 100).
  --force           With --links: replace another program's file, keeping it as NAME.before-pyqmail.
  --destdir=PREFIX  Install the service definitions and links under PREFIX instead of / .
"""

import grp
import os
import pwd
import socket
import sys
from pathlib import Path

from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.util.program import main, warn
from pyqmail.lib.config import services, tree
from pyqmail.lib.util import fdio, launcher
from pyqmail.lib.util.regularfile import create_afresh

PROGRAMS = (
    "qmail-queue", "qmail-pickup", "qmail-qmqpd", "qmail-qmqpc", "qmail-newqmqpclients",
    "qmail-setup", "qmail-send", "qmail-start", "qmail-lspawn", "qmail-rspawn", "qmail-clean",
    "qmail-local", "qmail-remote", "qmail-smtpd", "qmail-qmtpd", "qmail-inject", "sendmail",
    "qmail-newu", "qmail-pw2u", "qmail-getpw", "qmail-qread", "qmail-qstat", "qmail-showctl",
    "qmail-tcpto", "qmail-tcpok", "qmail-newmrh", "qmail-tcpserver", "mailsubj",
    "bouncesaying", "condredirect", "except", "forward", "preline", "qreceipt", "qbiff",
    "maildirmake", "maildir2mbox", "maildirwatch", "splogger", "tcp-env",
    "qmail-popup", "qmail-pop3d", "qmail-checkpassword", "qmail-qctl",
)


def scripts_dir():
    """Return the directory holding the installed console scripts (the interpreter's bin/)."""
    return Path(sys.executable).parent


# programs started once per connection or message: bin/ gets a launcher that skips site (-S)
FAST_START = ("qmail-queue", "qmail-qmqpd", "qmail-qmqpc", "qmail-local", "qmail-smtpd", "qmail-qmtpd",
              "qmail-remote", "qmail-inject", "sendmail")


def site_free_paths():
    """Return the sys.path entries pyqmail and its dependencies need without site, or None if site is
    needed after all (an editable or otherwise unusual install: the launcher is then the symlink)."""
    import sysconfig
    package = Path(__file__).resolve().parent.parent  # pyqmail/, holding commands/ (this file's)
    paths = []
    for key in ("purelib", "platlib"):
        path = Path(sysconfig.get_paths()[key]).resolve()
        if path not in paths:
            paths.append(path)
    if package.name != "pyqmail" or package.parent not in paths:
        return None
    return [str(p) for p in paths]


def write_launcher(path, text, owner):
    """Replace path (a file or link) by an executable file holding text, atomically."""
    if path.is_file() and not path.is_symlink() and path.read_text(errors="replace") == text:
        return
    temporary = path.with_name(path.name + ".new")
    # created afresh, never through a link planted meanwhile (bin/ is the account's in a --user tree)
    fd = create_afresh(str(temporary))
    try:
        fdio.write_all(fd, text.encode())
        os.fchmod(fd, 0o755)
    finally:
        os.close(fd)
    tree.lchown(temporary, owner.root)
    os.replace(temporary, path)


def set_aside(link):
    """Move a program that is not pyqmail's (qmail's own, in a tree qmail installed) to NAME.before-pyqmail;
    return False, leaving it alone, when that name is taken."""
    if link.is_symlink() or not link.is_file():
        return True
    with open(link, "rb") as f:
        if b"pyqmail" in f.read(launcher.MAX_SIZE):  # a launcher of ours, maybe of another install
            return True
    saved = link.with_name(link.name + services.SAVED)
    if os.path.lexists(saved):
        warn("qmail-setup", "left %s alone: it is not pyqmail's, and %s is taken" % (link, saved.name))
        return False
    os.rename(link, saved)
    print("qmail-setup: kept %s as %s (not pyqmail's)" % (link, saved.name))
    return True


def link_programs(root, owner, mini):
    """Point bin/<program> at each installed console script (or write its fast launcher); in mini-qmail,
    qmail-queue is qmail-qmqpc. Another program's file there is kept as NAME.before-pyqmail; return the
    number left alone because that name was taken."""
    bindir = root / "bin"
    source = scripts_dir()
    paths = site_free_paths()
    left = 0
    for name in PROGRAMS:
        target = source / ("qmail-qmqpc" if mini and name == "qmail-queue" else name)
        link = bindir / name
        if not target.exists():
            continue
        if not set_aside(link):
            left += 1
            continue
        if paths is not None and name in FAST_START:
            write_launcher(link, launcher.text(target.name, paths), owner)
            continue
        if link.is_symlink() or link.exists():
            if os.path.realpath(link) == os.path.realpath(target):
                continue
            link.unlink()
        link.symlink_to(target)
        tree.lchown(link, owner.root)
    return left


def resolve_owners(single_user, account):
    """Return the ownership plan: qmail's users and groups, or one account for everything."""
    if os.geteuid() != 0 or single_user or account:
        try:
            pw = pwd.getpwnam(account) if account else pwd.getpwuid(os.geteuid())
        except KeyError:
            raise Exit(PERM_FAILURE, "no such account: %s" % account)
        return tree.single_owner(pw.pw_uid, pw.pw_gid)
    return None


def tree_accounts(root):
    """Return the services' accounts for an existing tree: qmail's when queue/ belongs to qmailq, else the
    owner of queue/ (a single-user tree) for everything."""
    st = os.stat(root / "queue")
    try:
        if pwd.getpwnam("qmailq").pw_uid == st.st_uid and st.st_uid != os.stat(root).st_uid:
            return services.Accounts("qmaild", grp.getgrgid(pwd.getpwnam("qmaild").pw_gid).gr_name, "qmaill")
    except KeyError:
        pass
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
        group = grp.getgrgid(pwd.getpwuid(st.st_uid).pw_gid).gr_name
    except KeyError:
        raise Exit(TEMP_FAILURE, "the owner of %s/queue has no account or group name" % root)
    return services.Accounts(user, group, user)


def install_services(root, kind, prefix):
    """Install kind's service definitions for the tree; return the number of files kept as they were."""
    if kind not in services.KINDS:
        raise Exit(PERM_FAILURE, "unknown service kind %s (runit, daemontools, systemd or xinetd)" % kind)
    if not (root / "queue").is_dir() or not (root / "bin" / "qmail-start").exists():
        raise Exit(TEMP_FAILURE, "%s is not a full qmail tree: run qmail-setup %s first" % (root, root))
    try:
        me = os.fsdecode((root / "control" / "me").read_bytes().split(b"\n")[0].strip())
    except OSError as e:
        raise Exit(TEMP_FAILURE, "unable to read %s: %s" % (root / "control" / "me", e.strerror))
    accounts = tree_accounts(root)
    for value in (str(root), me) + tuple(accounts):
        if not services.safe(value):
            raise Exit(PERM_FAILURE, "cannot write %r into a service definition: use letters, digits, "
                                     "and / . _ + -" % value)
    import importlib  # pyqmail.services holds data files only
    templates = Path(importlib.import_module("pyqmail.services").__path__[0])
    values = services.values_for(root, me, accounts, kind)
    kept = 0
    for item in services.plan(kind, templates, root, prefix, values):
        try:
            result = services.install(item)
        except OSError as e:
            raise Exit(TEMP_FAILURE, "unable to install %s: %s" % (item.path, e.strerror))
        if result == "kept":
            kept += 1
            warn("qmail-setup", "kept %s: it exists and differs from pyqmail's (not overwritten)" % item.path)
        elif result == "symlink":
            kept += 1
            warn("qmail-setup", "skipped %s: a directory on its way is a symbolic link (not followed)" % item.path)
        elif result == "created":
            print("qmail-setup: installed %s" % item.path)
    if kind in ("runit", "daemontools"):
        pw = pwd.getpwnam(accounts.log_user)
        log_ids = (pw.pw_uid, pw.pw_gid)
        for name in services.SERVICES:
            if not services.log_directory(root / "log", name, log_ids):
                kept += 1
                warn("qmail-setup", "skipped %s: a symbolic link (not followed)" % (root / "log" / name))
    return kept


def install_links(root, prefix, force):
    """Link sendmail, mailq and newaliases to the tree's bin/sendmail; return the number refused."""
    target = str(root / "bin" / "sendmail")
    if not os.path.exists(target):
        raise Exit(TEMP_FAILURE, "%s does not exist: run qmail-setup %s first" % (target, root))
    refused = 0
    for name in services.LINKS:
        path = prefix / name
        try:
            result = services.link(path, target, force)
        except OSError as e:
            raise Exit(TEMP_FAILURE, "unable to link %s: %s" % (path, e.strerror))
        if result == "refused":
            refused += 1
            warn("qmail-setup", "refused to replace %s: it is not a link to %s (--force replaces it, keeping "
                                "it as %s%s)" % (path, target, path.name, services.SAVED))
        elif result == "created":
            print("qmail-setup: linked %s -> %s" % (path, target))
        elif result == "saved":
            print("qmail-setup: replaced (old one kept as %s%s) %s -> %s" % (path.name, services.SAVED, path, target))
        elif result == "replaced":
            print("qmail-setup: replaced %s -> %s (%s%s was taken)" % (path, target, path.name, services.SAVED))
    if str(root) != "/var/qmail":
        warn("qmail-setup", "note: programs find the tree through QMAILHOME (default /var/qmail): "
                            "set QMAILHOME=%s for the sendmail links' callers" % root)
    return refused


def body(argv):
    """Create the tree, its users when root, control files, queue and bin links; or install its service
    definitions and the sendmail links."""
    from docopt import docopt
    args = docopt(__doc__, argv=argv)
    root = Path(os.path.abspath(args["DIR"]))
    if args["--services"] or args["--links"]:
        prefix = Path(os.path.abspath(args["--destdir"] or "/"))
        problems = install_services(root, args["--services"], prefix) if args["--services"] else 0
        if args["--links"]:
            problems += install_links(root, prefix, args["--force"])
        return PERM_FAILURE if problems else 0
    me = args["--me"] or socket.gethostname()
    mini = args["--mini"]
    owners = resolve_owners(args["--single-user"], args["--user"])
    if owners is None:
        owners = tree.qmail_owners(root)
    tree.make_base(root, owners)
    tree.install_controls(root, owners, me, mini)
    hubs = root / "control" / "qmqpservers"
    if mini and hubs.read_bytes() != "".join(hub + "\n" for hub in mini).encode():
        warn("qmail-setup", "kept %s: it exists and lists other hubs than --mini's (not overwritten)" % hubs)
    if mini:  # qmail-qmqpc's memory of failed hubs: every local user's injections write it (qmail-qmqpc(8))
        tree.directory(root / "lock", owners.root, 0o755)
        tree.new_file(root / "lock" / "qmqpto", owners.root, 0o644 if owners.single else 0o666)
    if not mini:
        tree.make_queue(root / "queue", owners)
        tree.make_delivery(root, owners)
        if not owners.single:
            warning = tree.alias_home_warning(root)
            if warning:
                warn("qmail-setup", "warning: " + warning)
    left = link_programs(root, owners, mini)
    print("qmail-setup: %s tree at %s (me = %s)" % (
        "mini-qmail" if mini else ("single-user" if owners.single else "qmail"), root,
        (root / "control" / "me").read_text().strip()))
    return PERM_FAILURE if left else 0


def run():
    """Console-script entry point."""
    main("qmail-setup", body)
