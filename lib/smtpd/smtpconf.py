"""qmail-smtpd's control files and environment: the controls read once and kept while they are unchanged
(control.memo, for a reused worker), the environment read per session (see qmail-smtpd(8))."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)

from pyqmail.lib.config import control, rcpthosts

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Mapping

    from pyqmail.lib.config.access import Cdb

HARD_MAX_RCPT = 10000  # recipients per message when control/smtpmaxrcpt does not say (qmail has no bound)
MORE = "morercpthosts.cdb"
# every control file Controls reads: a reused worker reads them again when one of them or control/ changes
NAMES = ("smtpgreeting", "me", "localiphost", "timeoutsmtpd", "badmailfrom", "databytes", "rcpthosts", MORE,
         "smtpsize", "smtputf8", "smtpipv6literals", "smtprcptcheck", "smtpmaxrcpt", "smtpdeadline", "smtpminrate",
         "servercert.pem", "smtpcheckpassword")


class ControlError(Exception):
    """A control file exists but cannot be read: `421 unable to read controls (#4.3.0)`."""


def _flag(name: str) -> bool:
    """Return True when the control file's number is not 0 (absent: off)."""
    return control.readint(name, 0) != 0


class Controls:
    """What qmail-smtpd reads from control/; holds no descriptor, so a reused worker may keep it."""

    def __init__(self) -> None:
        greeting = control.readline("smtpgreeting")
        if greeting is None:
            greeting = control.me()
        if greeting is None:
            raise OSError("no control/smtpgreeting and no control/me")
        self.greeting: bytes = greeting
        self.liphost = control.rldef("localiphost", None)
        self.timeout = control.readtimeout("timeoutsmtpd", 1200) or 1
        self.badmailfrom = set(line.lower() for line in control.readlist("badmailfrom"))
        self.databytes = control.readint("databytes", 0)
        hosts = control.read_file("rcpthosts")
        self.hosts = rcpthosts.RcptHosts(None if hosts is None else control.parse_list(hosts))
        # qmail ignores morercpthosts.cdb without rcpthosts; most sites have none: no cdb code is imported
        self.more: str | None = control.path("control", MORE)
        if hosts is None or not control.exists(self.more):
            self.more = None
        self.size = _flag("smtpsize")
        self.utf8 = _flag("smtputf8")
        self.ipv6 = _flag("smtpipv6literals")
        self.rcptcheck = _flag("smtprcptcheck")
        self.maxrcpt = control.readint("smtpmaxrcpt", 0) or HARD_MAX_RCPT
        self.deadline = control.readint("smtpdeadline", 0)
        self.minrate = control.readint("smtpminrate", 0)
        cert = control.path("control", "servercert.pem")
        self.certfile: str | None = cert if control.is_file(cert) else None
        self.checkpassword = control.readlist("smtpcheckpassword") or None


class Config(Controls):
    """Everything qmail-smtpd needs to know before the greeting: the controls, the session's environment, and
    morercpthosts.cdb opened for this session (close() it: a reused worker closes descriptors by number)."""

    def __init__(self, environ: Mapping[bytes, bytes] | None = None) -> None:
        env = posix.environ if environ is None else environ  # os.environb's dict
        try:
            self.__dict__.update(control.memo("qmail-smtpd", NAMES, Controls).__dict__)
            self.rcpthosts = self.hosts.with_more(self._open_more())
        except OSError as e:
            raise ControlError(str(e))
        if b"DATABYTES" in env:
            self.databytes = control.scan_ulong(env[b"DATABYTES"], 0)
        self.remoteip = env.get(b"TCPREMOTEIP") or b"unknown"
        self.local = env.get(b"TCPLOCALHOST") or env.get(b"TCPLOCALIP") or b"unknown"
        self.remotehost = env.get(b"TCPREMOTEHOST") or b"unknown"
        self.remoteinfo: bytes | None = env.get(b"TCPREMOTEINFO")
        self.relayclient: bytes | None = env.get(b"RELAYCLIENT")

    def _open_more(self) -> Cdb | None:
        """Open morercpthosts.cdb if the controls found one; OSError if it cannot be read or is no cdb."""
        if self.more is None:
            return None
        from pyqmail.lib.config.access import NotCdb, open_cdb
        try:
            return open_cdb(self.more)
        except FileNotFoundError:
            return None
        except NotCdb as e:
            raise OSError("%s is no cdb: %s" % (MORE, e))

    def host_allowed(self, address: bytes) -> bool:
        """qmail's rcpthosts(): addresses without @ and every domain (no rcpthosts) are allowed."""
        return self.rcpthosts.allowed(address)

    def close(self) -> None:
        """Close morercpthosts.cdb."""
        self.rcpthosts.close()
