"""qmail-qmqpd: take one QMQP request from an authorized client and queue it (qmail-qmqpd(8))."""

import posix  # not os: start-up cost (lib/config/control)
import time
import _signal  # not `signal`: it imports enum

from pyqmail.lib.config import access
from pyqmail.lib.qmqp import qmqp, qmqpd_policy
from pyqmail.lib.tcpserver import tcpenv
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.netlog import Log
from pyqmail.lib.util.program import call
from pyqmail.lib.util.fdio import write_all

CONFIG_ERROR = "ZError: server configuration error"


class Session:
    """One connection: who it is, the policy it runs under, and where it logs."""

    def __init__(self, log, peer, policy):
        self.log = log
        self.peer = peer
        self.policy = policy
        self.who = peer.name(policy is not None and policy.port_logging)
        self.debug = False

    def reply(self, text):
        """Send one reply netstring; negative replies wait the error delay and are logged."""
        if self.policy is not None:
            text = self.policy.final(text)
        if not text.startswith("K"):
            self.log("reply to %s: %s" % (self.who, text))
            time.sleep(self.policy.error_delay if self.policy is not None else 1)
        try:
            write_all(1, qmqp.reply(text))
        except OSError:
            # the reply's text says what became of the message: a K means it is queued (the client, seeing no
            # reply, may send it again)
            self.log("lost connection from %s while sending reply: %s" % (self.who, text))
            return 0
        if not text.startswith("K"):  # the client may still be sending: do not let close() reset it
            from pyqmail.lib.util.timedio import linger
            linger()
        return 0

    def authorized(self):
        """Apply the access policy before reading a byte; False means the reply has been sent."""
        ip = self.peer.remoteip or b"unknown"
        try:
            allowed, why = access.authorize(ip, b"QMQPCLIENT" in posix.environ, self.policy.clients_cdb)
        except access.TableError as e:
            self.log("refused %s: %s" % (self.who, e))
            self.reply(CONFIG_ERROR)
            return False
        if not allowed:
            self.log("refused %s: not authorized (%s)" % (self.who, why))
            self.reply("DError: %s is not authorized to use this service" % self.peer.name())
            return False
        if self.debug:
            self.log("debug: %s authorized by %s" % (self.who, why))
        return True


class Spool:
    """The message's way into qmail-queue, started only once the message length is acceptable."""

    def __init__(self, session):
        self.session = session
        self.qq = None
        self.hops = qmqp.HopCounter()
        self.maxhops = session.policy.maxhops
        self.too_many_hops = False

    def begin(self, length):
        """Start qmail-queue with our Received line; return the sink for the message bytes."""
        from pyqmail.lib.queue.queuehere import open_queue
        from pyqmail.lib.queue.received import received
        peer = self.session.peer
        try:
            self.qq = open_queue()
        except OSError as e:  # out of descriptors or processes: as qmail's resources(), exit 111 without a reply
            from pyqmail.lib.util.errstr import error_str
            self.session.log("unable to start qmail-queue for %s: %s" % (self.session.who, error_str(e.errno)))
            raise Exit(TEMP_FAILURE)
        self.qq.put(received(b"QMQP", peer.localhost or peer.localip or b"unknown", peer.remoteip or b"unknown",
                             peer.remotehost or b"unknown", peer.remoteinfo))
        if self.session.debug:
            self.session.log("debug: message of %d bytes, qmail-queue pid %d" % (length, self.qq.pid))
        return self.sink

    def sink(self, chunk):
        """Pass message bytes on; once the hop limit is reached, stop and make qmail-queue fail."""
        if self.too_many_hops:
            return
        if self.maxhops:
            self.hops.feed(chunk)
            if self.hops.count >= self.maxhops:
                self.too_many_hops = True
                self.qq.fail()
                return
        self.qq.put(chunk)

    def abort(self):
        """Make sure nothing is queued."""
        if self.qq is not None:
            self.qq.abort()
            self.qq = None


def receive(session):
    """Read the request while streaming the message into qmail-queue, then answer it."""
    policy, log = session.policy, session.log
    spool = Spool(session)
    from pyqmail.lib.util.timedio import TimedInput
    try:
        request = qmqp.read_request(TimedInput(0, policy.timeout), policy.maxbytes, spool.begin, policy.maxrcpt)
    except qmqp.RequestError as e:
        spool.abort()
        if e.kind in ("eof", "timeout"):
            log("%s from %s while %s" % ("lost connection" if e.kind == "eof" else "timeout", session.who, e.where))
            if e.kind == "timeout":
                raise Exit(TEMP_FAILURE)
            return 0
        return session.reply(e.reply())
    if session.debug:
        from itertools import islice
        log("debug: sender <%s>, %d recipients: %s" % (
            request.sender.decode("latin-1") if request.sender is not None else "(refused)",
            len(request.recipients), " ".join("<%s>" % r.decode("latin-1") for r in islice(request.recipients, 20))))
    refusal = request.refusal() or ("DError: too many hops" if spool.too_many_hops else "")
    if refusal:
        spool.abort()
        return session.reply(refusal)
    qq_pid = spool.qq.pid
    result = spool.qq.close(request.sender, request.recipients)
    if result:
        log("qmail-queue failed for %s: %s" % (session.who, result))
        return session.reply(result)
    log("queued qp %d size %d rcpts %d from %s" % (qq_pid, request.length, len(request.recipients), session.who))
    return session.reply("Kok %d qp %d" % (int(time.time()), qq_pid))


def deadline_reached(log, who):
    """Return the SIGALRM handler that ends an overlong session (qmail's 3600 s alarm)."""
    def handler(signum, frame):
        log("session deadline reached for %s" % who)
        posix._exit(111)  # qmail-queue sees its pipes close without an envelope: nothing is queued
    return handler


def body(argv):
    """Check the client, read its request, queue the message, reply."""
    log = Log("qmail-qmqpd")
    peer = tcpenv.peer()
    try:
        policy = qmqpd_policy.load()
    except OSError as e:
        session = Session(log, peer, None)
        log("cannot read control files: %s" % e)
        return session.reply(CONFIG_ERROR)
    session = Session(log, peer, policy)
    _signal.signal(_signal.SIGALRM, deadline_reached(log, session.who))
    _signal.alarm(policy.deadline)
    if policy.debug_peers and peer.remoteip:
        session.debug = access.in_list(peer.remoteip, policy.debug_peers)
    log("connect from %s" % session.who)
    if not session.authorized():
        return 0
    return receive(session)


def connection():
    """Serve the connection on fds 0 and 1 and return the exit code (qmail-tcpserver reuses its workers)."""
    return call("qmail-qmqpd", body, crash_code=TEMP_FAILURE)


def run():
    """Entry point."""
    posix._exit(connection())
