"""qmail-rspawn: run qmail-remote for each remote delivery qmail-send asks for (qmail-rspawn(8))."""

import os

from pyqmail.lib.spawn import spawnproto
from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.program import default_signals, main
from pyqmail.lib.util.exits import TEMP_FAILURE

OVERRIDE = "QMAILREMOTE"
TCPTO_SIZE = 1024
CACHE_CONTROL = "smtpconnectioncache"


def clear_tcpto():
    """Forget every remembered connection timeout, as qmail-rspawn does at start (lock/tcpto, not created, never
    through a link: tcpto.open_table)."""
    from pyqmail.lib.remote import tcpto
    try:
        fd = tcpto.open_table("../lock/tcpto", os.O_WRONLY)
    except OSError:
        return
    try:
        os.write(fd, b"\0" * TCPTO_SIZE)
    except OSError:
        pass
    finally:
        os.close(fd)


def remote_program():
    """Return the program to run: $QMAILREMOTE, else qmail-remote, found through PATH."""
    return os.environb.get(OVERRIDE.encode()) or b"qmail-remote"


def is_ours(program, path=None, dirs=None):
    """True if program, found as execvp would find it, is our installed qmail-remote or its launcher."""
    from pyqmail.lib.util import installed
    found = installed.which(os.fsdecode(program), os.environ.get("PATH", "") if path is None else path)
    if found is None:
        return False
    return installed.is_program(found, "qmail-remote", dirs)


def preload():
    """Import what qmail-remote uses, DNS and TLS included, once: forked children start with it in memory."""
    from pyqmail.commands import qmail_remote  # noqa: F401
    from pyqmail.lib.config import ipme  # noqa: F401
    from pyqmail.lib.remote import (conncache, dnsmx, remoteconf, remotefeatures, remoteroute,  # noqa: F401
                                    remotesession, smtpclient, tcpto)
    import binascii, errno, fcntl, socket, ssl  # noqa: F401,E401
    try:
        import dns.rdata
        import dns.rdataclass
        import dns.rdatatype
        import dns.resolver  # noqa: F401
        for rdtype in (dns.rdatatype.MX, dns.rdatatype.A, dns.rdatatype.AAAA):
            dns.rdata.get_rdata_class(dns.rdataclass.IN, rdtype)
    except ImportError:
        pass
    import gc
    gc.freeze()  # the loaded code stays out of the collector: workers neither scan nor copy it


def run_preloaded(host, sender, *recipients, cache=None):
    """Run the pre-loaded qmail-remote in this (forked) process; it ends the process."""
    from pyqmail.commands import qmail_remote
    qmail_remote.CACHE = cache.link() if cache is not None else None
    main("qmail-remote", qmail_remote.body, 111, argv=[os.fsdecode(a) for a in (host, sender) + recipients])
    return 111  # not reached: main exits


def remote_server(link_fd):
    """Return the workers' serve: run the pre-loaded qmail-remote on one delivery; link_fd is the connection
    cache's sending end (-1: no cache)."""
    def serve(argv, extra=()):
        """argv: the lent connection's record (hex, or empty), then `host sender recip...`; extra holds the lent
        connection. Returns 0 (qmail-remote reports on fd 1)."""
        from pyqmail.commands import qmail_remote
        from pyqmail.lib.util.program import call
        qmail_remote.CACHE = link_for(link_fd, argv[0], extra) if link_fd >= 0 else None
        try:
            return call("qmail-remote", qmail_remote.body, 111, argv=[os.fsdecode(a) for a in argv[1:]])
        finally:
            qmail_remote.CACHE = None
    return serve


def link_for(link_fd, record_hex, extra):
    """Return the worker's conncache.Link for one delivery: the lent connection (if the request brought one)."""
    from pyqmail.lib.remote import conncache
    lent = None
    if record_hex and extra:
        try:
            record = conncache.decode(bytes.fromhex(record_hex.decode("ascii")))
        except ValueError:
            record = None
        if record is not None:
            lent = conncache.Lent(extra[0], record)
    return conncache.Link(link_fd, lent)


def no_switch(uid, gid):
    """A remote worker stays who qmail-rspawn is (qmailr): nothing to switch."""
    return 0


def worker_launch(workers, cache=None):
    """Return the Spawner's batch launch: hand `host sender recip...` to a reused worker (None if too big), with
    a cached connection to the host lent to it when there is one."""
    from pyqmail.lib.spawn.localworkers import REQUEST_MAX
    key = (os.getuid(), os.getgid())

    def launch(sender, recipients, fdmess, fdout):
        if b"@" not in recipients[0]:
            return None  # the forked child answers that as it always has
        _, host = spawnproto.split_recipient(recipients[0])
        argv = [b"", host, sender] + list(recipients)
        if sum(len(a) + 1 for a in argv) + conncache_record_max(cache) > REQUEST_MAX:
            return None  # beyond a worker's request buffer: a forked child takes it, as before workers
        if cache is None:
            return workers.launch(key, argv, fdmess, fdout)
        from pyqmail.lib.remote import conncache
        cache.lend(host)
        try:
            lent = cache.lent
            record = conncache.encode(lent.record) if lent is not None else None
            if record is None:
                return workers.launch(key, argv, fdmess, fdout)
            argv[0] = record.hex().encode()
            return workers.launch(key, argv, fdmess, fdout, (lent.fd,))
        finally:
            cache.forked()  # our copy of the lent connection: the worker has its own now
    return launch


def conncache_record_max(cache):
    """Bytes a lent connection's record may add to a request (hex of conncache.RECORD_MAX), 0 without a cache."""
    if cache is None:
        return 0
    from pyqmail.lib.remote import conncache
    return 2 * conncache.RECORD_MAX


def remote_child(program, preloaded=False, cache=None):
    """Return the child body: our pre-loaded qmail-remote, or exec `program host sender recipient` (no shell)."""
    batch = remote_batch_child(program, preloaded, cache)

    def child(sender, recipient):
        return batch(sender, [recipient])
    return child


def remote_batch_child(program, preloaded=False, cache=None):
    """Return the batch child body: `program host sender recipient...`, host the first recipient's domain."""
    def child(sender, recipients):
        _, host = spawnproto.split_recipient(recipients[0])
        if preloaded:
            return run_preloaded(host, sender, *recipients, cache=cache)
        try:
            default_signals(pipe=False)  # SIGXFSZ, ignored by Python (qmail-remote ignores SIGPIPE itself)
            os.execvp(program, [program, host, sender] + list(recipients))
        except OSError as e:
            # any failure to start it is temporary: a missing program must not bounce mail (qmail: D on ENOENT)
            report = b"ZUnable to run qmail-remote (%s): %s. (#4.3.0)\n\0" % (program, error_str(e.errno).encode())
            os.write(1, report)
            return 0
        return 111
    return child


def connection_cache():
    """Return the SMTP connection cache control/smtpconnectioncache asks for (idle seconds; 0: none), or None."""
    from pyqmail.lib.config import control
    from pyqmail.lib.remote import conncache
    idle = control.readint(CACHE_CONTROL, conncache.IDLE_DEFAULT)
    if idle <= 0:
        return None
    idle = min(idle, conncache.REUSE_TIME_LIMIT)  # no connection is reused longer; select() takes no 10^10 s
    cap = min(conncache.CAP_MAX, control.readint("concurrencyremote", 20), spawnproto.SPAWN_LIMIT)
    return conncache.Cache(idle, cap)


def body(argv):
    """Serve qmail-send on fds 0 and 1 until it closes fd 0 and every delivery is reported."""
    from pyqmail.lib.spawn.spawner import Spawner, enter_mess
    _, owner = enter_mess()
    clear_tcpto()
    program = remote_program()
    preloaded = is_ours(program)
    workers = batch_launch = cache = None
    if preloaded:
        preload()
        cache = connection_cache()
        from pyqmail.lib.spawn.localworkers import LocalWorkers
        link_fd = cache.theirs.fileno() if cache is not None else -1
        # every slot keeps its worker: one retired at a peak's end is forked again at the next (a fork costs
        # more than a delivery); idle ones exit after MAX_IDLE seconds
        workers = LocalWorkers(no_switch, remote_server(link_fd), idle_keep=spawnproto.SPAWN_LIMIT,
                               keep=(link_fd,) if cache is not None else ())
        batch_launch = worker_launch(workers, cache)
    spawner = Spawner(remote_child(program, preloaded, cache), spawnproto.remote_report,
                      spawnproto.REMOTE_OUTPUT_MAX, owner, batch_child=remote_batch_child(program, preloaded, cache),
                      batch_report=spawnproto.remote_batch_reports, workers=workers, batch_launch=batch_launch,
                      cache=cache)
    if batch_launch is not None:
        spawner.launch = single_launch(batch_launch, spawner.fork_child)
    return spawner.serve()


def single_launch(batch_launch, fork_child):
    """Return the Spawner's launch for a one-recipient request: a worker's, else a forked child."""
    def launch(req, fdmess, fdout):
        pid = batch_launch(req.sender, [req.recipient], fdmess, fdout)
        return (pid, None) if pid is not None else fork_child(req, fdmess, fdout)
    return launch


def run():
    """Console-script entry point."""
    main("qmail-rspawn", body, crash_code=TEMP_FAILURE)
