"""qmail-qmtpd's settings: rcpthosts and morercpthosts.cdb (qmail's rcpthosts.c), RELAYCLIENT, databytes."""

import posix  # not os: start-up cost (lib/control)

from pyqmail.lib import control

TIMEOUT_DEFAULT = 1200  # seconds of silence per read, as qmail-smtpd's timeoutsmtpd
DEADLINE_DEFAULT = 3600  # qmail-qmtpd's whole-session alarm


class RcptHostsError(Exception):
    """morercpthosts.cdb could not be read: the caller gives up (qmail's exit 111)."""


class RcptHosts:
    """Which recipient domains are accepted: control/rcpthosts, then control/morercpthosts.cdb."""

    def __init__(self, hosts, more=None):
        self.hosts = None if hosts is None else {h.lower() for h in hosts}
        self.more = more

    def allowed(self, address):
        """Return True if address may be accepted (qmail's rcpthosts(): any domain when rcpthosts is absent)."""
        from pyqmail.lib.smtpcmd import domain_of, host_allowed  # the same rule as qmail-smtpd's
        domain = domain_of(address)
        if self.hosts is None or domain is None:
            return True  # no rcpthosts, or no domain: qmail-send will add envnoathost
        try:
            return host_allowed(domain, self.hosts, self.more.get if self.more is not None else None)
        except OSError as e:
            raise RcptHostsError("cannot read morercpthosts.cdb: %s" % e)


def load_rcpthosts():
    """Read control/rcpthosts and open control/morercpthosts.cdb; OSError if either is unreadable."""
    data = control.read_file("rcpthosts")
    if data is None:
        return RcptHosts(None)  # qmail ignores morercpthosts.cdb without rcpthosts
    more = None
    cdb = control.path("control", "morercpthosts.cdb")
    if control.exists(cdb):  # most sites have none: then the cdb code is not even imported
        from pyqmail.lib.access import NotCdb, open_cdb
        try:
            more = open_cdb(cdb)
        except FileNotFoundError:
            pass
        except NotCdb as e:
            raise OSError("morercpthosts.cdb is no cdb: %s" % e)
    return RcptHosts(control.parse_list(data), more)


def databytes():
    """Return the message size limit: $DATABYTES, else control/databytes; 0 means none (qmail)."""
    value = posix.environ.get(b"DATABYTES")  # os.environb's dict
    if value is not None:
        return control.scan_ulong(value, 0)
    return control.readint("databytes", 0)


class Policy:
    """Everything one session decides with."""

    def __init__(self):
        self.rcpthosts = load_rcpthosts()
        self.relayclient = posix.environ.get(b"RELAYCLIENT")
        self.databytes = databytes()
        timeout = control.readint("timeoutqmtpd", TIMEOUT_DEFAULT)
        self.timeout = timeout if timeout > 0 else 1
        self.deadline = max(control.readint("qmtpddeadline", DEADLINE_DEFAULT), 1)

    def close(self):
        """Close morercpthosts.cdb."""
        if self.rcpthosts.more is not None:
            self.rcpthosts.more.close()
            self.rcpthosts.more = None

    def recipient(self, address):
        """Return (verdict letter or "", envelope address) for one recipient, in qmail-qmtpd's order."""
        from pyqmail.lib import qmtp
        if address is None:
            return qmtp.TOO_LONG, None
        verdict = qmtp.recipient_verdict(address)
        if self.relayclient is not None:
            return verdict, address + self.relayclient
        if not self.rcpthosts.allowed(address):
            verdict = qmtp.NOT_RCPTHOST  # qmail checks rcpthosts even after seeing a NUL, and this wins
        return verdict, address
