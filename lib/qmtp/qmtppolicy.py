"""qmail-qmtpd's settings: rcpthosts and morercpthosts.cdb (qmail's rcpthosts.c), RELAYCLIENT, databytes."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)

from pyqmail.lib.config import control, rcpthosts

TIMEOUT_DEFAULT = 1200  # seconds of silence per read, as qmail-smtpd's timeoutsmtpd
DEADLINE_DEFAULT = 3600  # qmail-qmtpd's whole-session alarm


def databytes() -> int:
    """Return the message size limit: $DATABYTES, else control/databytes; 0 means none (qmail)."""
    value = posix.environ.get(b"DATABYTES")  # os.environb's dict
    if value is not None:
        return control.scan_ulong(value, 0)
    return control.readint("databytes", 0)


class Policy:
    """Everything one session decides with."""

    def __init__(self) -> None:
        self.rcpthosts = rcpthosts.load()
        self.relayclient = posix.environ.get(b"RELAYCLIENT")
        self.databytes = databytes()
        timeout = control.readtimeout("timeoutqmtpd", TIMEOUT_DEFAULT)
        self.timeout = timeout if timeout > 0 else 1
        self.deadline = max(control.readtimeout("qmtpddeadline", DEADLINE_DEFAULT), 1)

    def close(self) -> None:
        """Close morercpthosts.cdb."""
        self.rcpthosts.close()

    def recipient(self, address: bytes | None) -> tuple[str, bytes | None]:
        """Return (verdict letter or "", envelope address) for one recipient, in qmail-qmtpd's order."""
        from pyqmail.lib.qmtp import qmtp
        if address is None:
            return qmtp.TOO_LONG, None
        verdict = qmtp.recipient_verdict(address)
        if self.relayclient is not None:
            return verdict, address + self.relayclient
        if not self.rcpthosts.allowed(address):
            verdict = qmtp.NOT_RCPTHOST  # qmail checks rcpthosts even after seeing a NUL, and this wins
        return verdict, address
