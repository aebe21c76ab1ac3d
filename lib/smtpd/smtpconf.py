"""qmail-smtpd's control files and environment, read once per session (see qmail-smtpd(8))."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)

from pyqmail.lib.config import control, rcpthosts

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Mapping

HARD_MAX_RCPT = 10000  # recipients per message when control/smtpmaxrcpt does not say (qmail has no bound)


class ControlError(Exception):
    """A control file exists but cannot be read: `421 unable to read controls (#4.3.0)`."""


def _flag(name: str) -> bool:
    """Return True when the control file's number is not 0 (absent: off)."""
    return control.readint(name, 0) != 0


class Config:
    """Everything qmail-smtpd needs to know before the greeting."""

    def __init__(self, environ: Mapping[bytes, bytes] | None = None) -> None:
        env = posix.environ if environ is None else environ  # os.environb's dict
        try:
            self._read_controls(env)
        except OSError as e:
            raise ControlError(str(e))
        self.remoteip = env.get(b"TCPREMOTEIP") or b"unknown"
        self.local = env.get(b"TCPLOCALHOST") or env.get(b"TCPLOCALIP") or b"unknown"
        self.remotehost = env.get(b"TCPREMOTEHOST") or b"unknown"
        self.remoteinfo: bytes | None = env.get(b"TCPREMOTEINFO")
        self.relayclient: bytes | None = env.get(b"RELAYCLIENT")

    def _read_controls(self, env: Mapping[bytes, bytes]) -> None:
        """Read qmail's controls and ours; any unreadable one raises OSError."""
        greeting = control.readline("smtpgreeting")
        if greeting is None:
            greeting = control.me()
        if greeting is None:
            raise OSError("no control/smtpgreeting and no control/me")
        self.greeting: bytes = greeting
        self.liphost = control.rldef("localiphost", None)
        self.timeout = control.readint("timeoutsmtpd", 1200) or 1
        self.badmailfrom = set(line.lower() for line in control.readlist("badmailfrom"))
        self.databytes = control.readint("databytes", 0)
        if b"DATABYTES" in env:
            self.databytes = control.scan_ulong(env[b"DATABYTES"], 0)
        self.rcpthosts = rcpthosts.load()
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

    def host_allowed(self, address: bytes) -> bool:
        """qmail's rcpthosts(): addresses without @ and every domain (no rcpthosts) are allowed."""
        return self.rcpthosts.allowed(address)
