"""qmail-setup: create (or complete) a qmail tree at DIR, as qmail's install and config-fast do.

Usage:
  qmail-setup [--single-user] [--user=ACCOUNT] [--me=HOST] [--mini=HUB]... DIR
  qmail-setup (-h | --help)

Options:
  --single-user     Everything owned by one account (default when not run as root).
  --user=ACCOUNT    The account that owns a single-user tree (default: whoever runs this).
  --me=HOST         This host's name for control/me (default: the kernel's host name, no DNS).
  --mini=HUB        Make a mini-qmail tree whose qmail-queue is qmail-qmqpc sending to HUB
                    (an address, optionally :PORT or [v6]:PORT); repeat for failover order.
"""

import os
import pwd
import socket
import sys
from pathlib import Path

from pyqmail.lib.util.exits import PERM_FAILURE, Exit
from pyqmail.lib.util.program import main, warn
from pyqmail.lib.config import tree
from pyqmail.lib.util import launcher

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
    temporary.unlink(missing_ok=True)
    temporary.write_text(text)
    os.chmod(temporary, 0o755)
    tree.lchown(temporary, owner.root)
    os.replace(temporary, path)


def link_programs(root, owner, mini):
    """Point bin/<program> at each installed console script (or write its fast launcher); in mini-qmail,
    qmail-queue is qmail-qmqpc."""
    bindir = root / "bin"
    source = scripts_dir()
    paths = site_free_paths()
    for name in PROGRAMS:
        target = source / ("qmail-qmqpc" if mini and name == "qmail-queue" else name)
        link = bindir / name
        if not target.exists():
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


def resolve_owners(single_user, account):
    """Return the ownership plan: qmail's users and groups, or one account for everything."""
    if os.geteuid() != 0 or single_user or account:
        try:
            pw = pwd.getpwnam(account) if account else pwd.getpwuid(os.geteuid())
        except KeyError:
            raise Exit(PERM_FAILURE, "no such account: %s" % account)
        return tree.single_owner(pw.pw_uid, pw.pw_gid)
    return None


def body(argv):
    """Create the tree, its users when root, control files, queue and bin links."""
    from docopt import docopt
    args = docopt(__doc__, argv=argv)
    root = Path(os.path.abspath(args["DIR"]))
    me = args["--me"] or socket.gethostname()
    mini = args["--mini"]
    owners = resolve_owners(args["--single-user"], args["--user"])
    if owners is None:
        owners = tree.qmail_owners(root)
    tree.make_base(root, owners)
    tree.install_controls(root, owners, me, mini)
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
    link_programs(root, owners, mini)
    print("qmail-setup: %s tree at %s (me = %s)" % (
        "mini-qmail" if mini else ("single-user" if owners.single else "qmail"), root,
        (root / "control" / "me").read_text().strip()))
    return 0


def run():
    """Console-script entry point."""
    main("qmail-setup", body)
