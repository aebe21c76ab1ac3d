"""Which recipient domains a server accepts: control/rcpthosts, then control/morercpthosts.cdb (qmail's
rcpthosts.c), shared by qmail-smtpd and qmail-qmtpd."""

from __future__ import annotations

from pyqmail.lib.config import control

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Container, Iterable
    from pyqmail.lib.config.access import Cdb, Get


class RcptHostsError(OSError):
    """morercpthosts.cdb could not be read: the caller gives up as qmail does (die_control, exit 111)."""


def domain_of(address: bytes) -> bytes | None:
    """Return the part after the last @, or None when there is no @."""
    at = address.rfind(b"@")
    return None if at < 0 else address[at + 1:]


def host_allowed(domain: bytes, listed: Container[bytes], more_get: Get | None = None) -> bool:
    """qmail's rcpthosts(): the domain or any `.suffix` of it is listed, else in morercpthosts.cdb."""
    host = domain.lower()
    if not host:  # qmail's loop over the host's positions never runs
        return False
    suffixes = [host] + [host[i:] for i in range(1, len(host)) if host[i] == 0x2E]
    if any(s in listed for s in suffixes):
        return True
    return more_get is not None and any(more_get(s) is not None for s in suffixes)


class RcptHosts:
    """The accepted recipient domains: None when control/rcpthosts is absent (every domain), and the cdb."""

    def __init__(self, hosts: Iterable[bytes] | None, more: Cdb | None = None) -> None:
        self.hosts = None if hosts is None else {h.lower() for h in hosts}
        self.more = more

    def allowed(self, address: bytes) -> bool:
        """Return True if address may be accepted (any domain when rcpthosts is absent, and no domain at all)."""
        domain = domain_of(address)
        if self.hosts is None or domain is None:
            return True  # no rcpthosts, or no domain: qmail-send will add envnoathost
        try:
            return host_allowed(domain, self.hosts, self.more.get if self.more is not None else None)
        except OSError as e:
            raise RcptHostsError("cannot read morercpthosts.cdb: %s" % e)

    def with_more(self, more: Cdb | None) -> RcptHosts:
        """Return these domains with more as morercpthosts.cdb (a kept list, a cdb opened per session)."""
        both = RcptHosts(None, more)
        both.hosts = self.hosts
        return both

    def close(self) -> None:
        """Close morercpthosts.cdb."""
        if self.more is not None:
            self.more.close()
            self.more = None


def load() -> RcptHosts:
    """Read control/rcpthosts and open control/morercpthosts.cdb; OSError if either is unreadable."""
    data = control.read_file("rcpthosts")
    if data is None:
        return RcptHosts(None)  # qmail ignores morercpthosts.cdb without rcpthosts
    more = None
    cdb = control.path("control", "morercpthosts.cdb")
    if control.exists(cdb):  # most sites have none: then the cdb code is not even imported
        from pyqmail.lib.config.access import NotCdb, open_cdb
        try:
            more = open_cdb(cdb)
        except FileNotFoundError:
            pass
        except NotCdb as e:
            raise OSError("morercpthosts.cdb is no cdb: %s" % e)
    return RcptHosts(control.parse_list(data), more)
