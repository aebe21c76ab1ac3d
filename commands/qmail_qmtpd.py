"""qmail-qmtpd: receive mail via QMTP, package after package, one response per recipient (see qmail-qmtpd(8))."""

import posix  # not os: start-up cost (lib/config/control)
import time

from pyqmail.lib.qmtp import qmtp, qmtppolicy
from pyqmail.lib.tcpserver import tcpenv
from pyqmail.lib.util.netlog import Log
from pyqmail.lib.config.rcpthosts import RcptHostsError
from pyqmail.lib.util.netstring import Reader
from pyqmail.lib.util.program import call
from pyqmail.lib.qmtp.qmtpio import ClientGone, Deadline, DeadlineReached, Input, Output, WriteTimeout
from pyqmail.lib.util.exits import TEMP_FAILURE

BATCH = 1000  # overflow responses are written this many at a time


class Spool:
    """One package's way into the queue: started once the message's encoding is known."""

    def __init__(self, peer, databytes):
        self.peer = peer
        self.databytes = databytes
        self.qq = None
        self.pid = None
        self.size = 0
        self.too_big = False

    def begin(self, crlf):
        """Start qmail-queue (or queue in-process) with our Received line; return the sink for the message."""
        from pyqmail.lib.queue.queuehere import open_queue
        from pyqmail.lib.queue.received import received
        peer = self.peer
        self.qq = open_queue()
        self.pid = self.qq.pid
        self.qq.put(received(b"QMTP", peer.localhost or peer.localip or b"unknown", peer.remoteip or b"unknown",
                             peer.remotehost or b"unknown", peer.remoteinfo))
        return self.sink

    def sink(self, chunk):
        """Pass decoded message bytes on; past databytes, stop and make sure nothing is queued."""
        if self.too_big:
            return
        self.size += len(chunk)
        if self.databytes and self.size > self.databytes:
            self.too_big = True
            self.qq.fail()
            return
        self.qq.put(chunk)

    def abort(self):
        """Make sure nothing of this package is queued."""
        qq, self.qq = self.qq, None
        if qq is not None:
            qq.abort()

    def close(self, package, accepted):
        """Queue the message for the accepted recipients; return the K/Z/D text they all get ("" for none)."""
        if not accepted or not package.sender_ok or self.too_big:
            self.abort()
            result = ""
        else:
            result = self.qq.close(package.sender, accepted) or "Kok %d qp %d" % (int(time.time()), self.pid)
            self.qq = None
        if not package.sender_ok:
            result = package.sender_refusal
        if self.too_big:
            result = qmtp.TOO_BIG
        return result


def answer(session, package, spool):
    """Decide every recipient, queue the message, and queue the responses in the client's order."""
    policy = session.policy
    verdicts, accepted = [], []
    for address in package.recipients:
        verdict, address = policy.recipient(address)
        verdicts.append(verdict)
        if not verdict:
            accepted.append(address)
    result = spool.close(package, accepted)
    texts = {"": qmtp.reply(result)}
    for verdict in set(verdicts) - {""}:
        texts[verdict] = qmtp.reply(qmtp.REPLIES[verdict])
    for verdict in verdicts:
        session.output.add(texts[verdict])
    left = package.overflow
    while left:
        n = min(left, BATCH)
        session.output.add(qmtp.reply(qmtp.REPLIES[qmtp.TOO_MANY]) * n)
        left -= n
    outcome = "queued" if result.startswith("K") else "not queued (%s)" % (result or "no recipient accepted")
    session.log("%s qp %d size %d rcpts %d/%d from %s" % (
        outcome, spool.pid, spool.size, len(accepted), len(verdicts) + package.overflow, session.who))


class Session:
    """One connection: who it is, the settings, the two directions."""

    def __init__(self, log, peer, policy):
        self.log = log
        self.peer = peer
        self.policy = policy
        self.who = peer.name()
        self.deadline = Deadline(policy.deadline)
        self.output = Output(1, policy.timeout, self.deadline)
        self.reader = Reader(Input(0, policy.timeout, self.output, self.deadline))

    def package(self):
        """Read, queue and answer one package; return an exit code to end the session, or None to go on."""
        spool = Spool(self.peer, self.policy.databytes)
        relaylen = len(self.policy.relayclient or b"")
        try:
            package = qmtp.read_package(self.reader, spool.begin, relaylen)
            if package is None:
                self.output.flush()
                return 0
            answer(self, package, spool)
            return None
        except qmtp.PackageError as e:
            spool.abort()
            return self.broken(e)
        except (DeadlineReached, ClientGone, WriteTimeout, RcptHostsError) as e:
            spool.abort()
            return self.ended(e)

    def broken(self, error):
        """The client broke the protocol or left mid-package: nothing of the package is queued."""
        if error.kind == "eof":
            self.log("lost connection from %s while receiving the %s" % (self.who, error.where))
            return 0
        if error.kind == "timeout":
            self.log("timeout from %s while receiving the %s" % (self.who, error.where))
            return 111
        text = error.reply()
        self.log("protocol error from %s: %s" % (self.who, text))
        try:
            self.output.add(qmtp.reply(text))
            self.output.flush()
        except (ClientGone, WriteTimeout, DeadlineReached):
            return 100
        from pyqmail.lib.util.timedio import linger
        linger()  # the client may still be sending: do not let close() reset the reply away
        return 111 if error.kind == "length" else 100

    def ended(self, error):
        """The session ends without a response to the current package."""
        if isinstance(error, ClientGone):
            self.log("lost connection from %s while sending responses" % self.who)
            return 0
        if isinstance(error, DeadlineReached):
            self.log("session deadline reached for %s" % self.who)
        elif isinstance(error, WriteTimeout):
            self.log("timeout from %s while sending responses" % self.who)
        else:
            self.log("cannot check rcpthosts for %s: %s" % (self.who, error))
        return 111


def body(argv):
    """Serve packages until the client closes the connection."""
    log = Log("qmail-qmtpd")
    try:
        policy = qmtppolicy.Policy()
    except OSError as e:
        log("cannot read control files: %s" % e)
        return 111
    try:
        session = Session(log, tcpenv.peer(), policy)
        while True:
            code = session.package()
            if code is not None:
                return code
    finally:
        policy.close()  # a reused worker closes its descriptors by number: no object may hold one after us


def connection():
    """Serve the connection on fds 0 and 1 and return the exit code (qmail-tcpserver reuses its workers)."""
    return call("qmail-qmtpd", body, crash_code=TEMP_FAILURE)


def run():
    """Entry point."""
    posix._exit(connection())
