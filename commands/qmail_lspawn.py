"""qmail-lspawn: run qmail-local for each local delivery qmail-send asks for (qmail-lspawn(8))."""

import os

from pyqmail.lib.config import getpw, users
from pyqmail.lib.spawn import spawnproto
from pyqmail.lib.util.errstr import is_temp
from pyqmail.lib.util.exits import (PERM_FAILURE, QLX_EXECHARD, QLX_EXECSOFT, QLX_NOMEM, QLX_ROOT, QLX_SYS, QLX_USAGE,
                                    TEMP_FAILURE, Exit)
from pyqmail.lib.util.program import call, main

OVERRIDE = "QMAILLOCAL"  # a qmail-local program to exec instead of the pre-loaded one


def preload():
    """Import what deliveries use, once, so that forked children start with it in memory."""
    import cdbx  # noqa: F401  (users/cdb)
    from pyqmail.commands import qmail_local  # noqa: F401
    from pyqmail.lib.config import dotqmail  # noqa: F401
    from pyqmail.lib.local import delivery_env, maildir, mbox, qmailfile  # noqa: F401
    from pyqmail.lib.queue import client, queuehere  # noqa: F401
    import gc
    gc.freeze()  # the loaded code stays out of the collector: workers neither scan nor copy it


def assignment(home, local, passwd=None, token=0):
    """Find who receives local: users/cdb first, then the passwd rules of qmail-getpw (asked of passwd's helpers
    when given, for the delivery token: None while the answer is on its way; lib/spawn/passwdlookup)."""
    try:
        found = users.lookup(home, local)
    except users.UsersCdbError as e:
        raise Exit(e.code)
    if found is not None:
        return found
    return passwd.ask(local, token) if passwd is not None else getpw.assignment(local)


def become(uid, gid):
    """Drop to the recipient's uid and gid with no other groups (only root can; others deliver as themselves)."""
    if os.geteuid() == 0:
        try:
            os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
        except (OSError, OverflowError):  # OverflowError: a users/assign uid or gid beyond 32 bits, which C
            raise Exit(QLX_USAGE)  # would cut (4294967296 to root's 0); here, as a failing setuid: deferred
    if uid == 0 or os.getuid() == 0 or os.geteuid() == 0:
        raise Exit(QLX_ROOT)


def local_argv(a, local, domain, sender, aliasempty):
    """Return qmail-local's operands: `--` first, so no field can be taken for an option."""
    return [b"--", a.user, a.homedir, local, a.dash, a.ext, domain, sender, aliasempty]


def run_local(argv):
    """Run qmail-local with argv: exec $QMAILLOCAL if set, else call the pre-loaded one in this process."""
    override = os.environb.get(OVERRIDE.encode())
    if override:
        from pyqmail.lib.util.program import default_signals
        default_signals(pipe=False)  # SIGXFSZ: qmail's C qmail-local resets only SIGPIPE for its programs
        try:
            os.execv(override, [override] + argv)
        except OSError as e:
            return QLX_EXECSOFT if is_temp(e.errno) else QLX_EXECHARD
    from pyqmail.commands import qmail_local
    main("qmail-local", qmail_local.body, 111, argv=[os.fsdecode(a) for a in argv])
    return QLX_SYS  # not reached: main exits


def delivery_child(home, aliasempty):
    """Return the child body: look the user up, switch to them, run qmail-local; returns an exit code."""
    def child(sender, recipient):
        local, domain = spawnproto.split_recipient(recipient)
        if not local:
            return 0  # the trash address <@host>
        try:
            os.chdir(home)
        except OSError:
            return QLX_USAGE
        try:
            a = assignment(home, local)
            become(a.uid, a.gid)
        except Exit as e:
            return e.code
        except MemoryError:
            return QLX_NOMEM
        return run_local(local_argv(a, local, domain, sender, aliasempty))
    return child


def worker_launch(home, aliasempty, workers, passwd):
    """Return the Spawner's launch for reused workers: look the user up here and deliver in their worker; a
    passwd lookup is sent to passwd's helpers and the launch waits, (0, None), while the loop goes on (the
    spawner asks again once passwd names the delivery), so that a lookup that hangs holds up only its own."""
    def launch(req, fdmess, fdout):
        local, domain = spawnproto.split_recipient(req.recipient)
        if not local:
            return 0, 0  # the trash address <@host>
        try:
            a = assignment(home, local, passwd, req.delnum)
        except Exit as e:
            return 0, (e.code & 0xFF) << 8
        except MemoryError:
            return 0, QLX_NOMEM << 8
        if a is None:
            return 0, None
        if a.uid == 0:
            return 0, QLX_ROOT << 8
        argv = local_argv(a, local, domain, req.sender, aliasempty)
        return workers.launch((a.uid, a.gid), argv, fdmess, fdout), None
    return launch


def become_code(uid, gid):
    """become() for a worker: 0, or the exit code that refuses the delivery."""
    try:
        become(uid, gid)
    except Exit as e:
        return e.code
    return 0


def serve_local(argv, extra=()):
    """In a worker: run the pre-loaded qmail-local on one delivery (extra descriptors: none are sent); return
    its exit code."""
    from pyqmail.commands import qmail_local
    return call("qmail-local", qmail_local.body, 111, argv=argv)  # bytes, `--` first: taken as they are


def body(argv):
    """Serve qmail-send on fds 0 and 1 until it closes fd 0 and every delivery is reported."""
    if not argv:
        raise Exit(PERM_FAILURE)
    aliasempty = os.fsencode(argv[0])
    from pyqmail.lib.spawn.spawner import Spawner, enter_mess
    home, owner = enter_mess()
    preload()
    launch = workers = passwd = None
    if not os.environb.get(OVERRIDE.encode()):  # $QMAILLOCAL is exec'd in a child per delivery, as before
        from pyqmail.lib.spawn.localworkers import LocalWorkers
        workers = LocalWorkers(become_code, serve_local, idle_code=QLX_SYS)  # a request its idle end met: deferred
        from pyqmail.lib.spawn.passwdlookup import PasswdLookups
        passwd = PasswdLookups()
        launch = worker_launch(home, aliasempty, workers, passwd)
    return Spawner(delivery_child(home, aliasempty), spawnproto.local_report, spawnproto.LOCAL_TRUNC, owner,
                   child_crash=QLX_SYS, launch=launch, workers=workers, waiting=passwd).serve()


def run():
    """Console-script entry point."""
    from pyqmail.lib.util.envsnapshot import undo_locale_coercion
    undo_locale_coercion()  # qmail-local inherits our environment: not the interpreter's LC_CTYPE
    main("qmail-lspawn", body, crash_code=TEMP_FAILURE)
