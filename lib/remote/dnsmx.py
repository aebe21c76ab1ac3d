"""qmail-remote's DNS: MX lookup then A/AAAA, through dnspython, imported only here (see qmail-remote(8)).

Results are lists of Target(pref, ip, name) in the order to try them; errors are DnsSoft / DnsHard.
"""

from __future__ import annotations

import os
from collections import namedtuple

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable
    from typing import Any, NamedTuple

    import dns.name
    import dns.resolver

    class Target(NamedTuple):
        """One address to try: the exchanger's preference, its IP address as text, its name."""
        pref: int
        ip: str
        name: bytes
else:
    Target = namedtuple("Target", "pref ip name")
LIFETIME = 30.0  # seconds for one lookup, all servers and retries included


class DnsSoft(Exception):
    """A temporary DNS failure (timeout, SERVFAIL, no server answering)."""


class DnsHard(Exception):
    """The name does not exist (NXDOMAIN) or cannot be a domain name."""


def server_list(lines: Iterable[bytes]) -> list[tuple[str, int]]:
    """Return [(ip, port)] from control/dnsservers lines: `ip`, `ip:port`, `[ip]`, `[ip]:port`."""
    from pyqmail.lib.remote.remoteroute import literal_ip, port_of
    servers: list[tuple[str, int]] = []
    for line in lines:
        line = line.strip()
        if line.startswith(b"[") and b"]" in line:
            addr, rest = line[:line.index(b"]") + 1], line[line.index(b"]") + 1:]
        elif line.count(b":") == 1:
            addr, rest = line.split(b":")[0], b":" + line.split(b":")[1]
        else:
            addr, rest = (b"[" + line + b"]" if b":" in line else line), b""
        ip = literal_ip(addr)
        if ip is not None:
            servers.append((ip, port_of(rest[1:]) if rest.startswith(b":") else 53))
    return servers


def make_resolver(servers: list[tuple[str, int]]) -> dns.resolver.Resolver:
    """Return a dnspython Resolver: servers from control/dnsservers if any, else /etc/resolv.conf."""
    import dns.resolver
    r = dns.resolver.Resolver(configure=not servers)
    if servers:
        r.nameservers = [ip for ip, _ in servers]
        r.nameserver_ports = {ip: port for ip, port in servers}
    r.lifetime = LIFETIME
    return r


def to_name(host: bytes) -> dns.name.Name:
    """Return host as a dnspython absolute name; DnsHard if it cannot be one."""
    import dns.exception
    import dns.name
    try:
        return dns.name.from_text(host.decode("utf-8"))
    except (UnicodeError, dns.exception.DNSException, ValueError):
        raise DnsHard()


def query(resolver: dns.resolver.Resolver, name: dns.name.Name, rdtype: str) -> list[Any]:
    """Return the answer's records (empty list when there are none); NXDOMAIN → DnsHard, failures → DnsSoft.
    Their class depends on rdtype (A and AAAA records have .address, MX records .preference and .exchange)."""
    import dns.exception
    import dns.resolver
    try:
        answer = resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        raise DnsHard()
    except (dns.exception.DNSException, OSError):
        raise DnsSoft()
    return list(answer.rrset or ())


def addresses(resolver: dns.resolver.Resolver, name: dns.name.Name) -> list[str]:
    """Return the IPv4 then IPv6 addresses of a name (AAAA failures count as no AAAA)."""
    ips = [r.address for r in query(resolver, name, "A")]
    try:
        ips += [r.address for r in query(resolver, name, "AAAA")]
    except (DnsSoft, DnsHard):
        pass
    return ips


def host_targets(resolver: dns.resolver.Resolver, host: bytes) -> list[Target]:
    """Return the Targets of a relay name: its addresses, preference 0 (qmail's dns_ip)."""
    name = to_name(host)
    return [Target(0, ip, host) for ip in addresses(resolver, name)]


def mx_targets(resolver: dns.resolver.Resolver, host: bytes) -> list[Target]:
    """Return the Targets for a mail domain: MX by preference (random among equals), each MX's addresses;
    no MX → the domain's own addresses. A temporary failure on any MX's addresses fails the lookup (qmail)."""
    name = to_name(host)
    mxs = [(r.preference, os.urandom(4), r.exchange) for r in query(resolver, name, "MX")]
    if not mxs:
        return [Target(0, ip, host) for ip in addresses(resolver, name)]
    targets: list[Target] = []
    soft = False
    for pref, _, exchange in sorted(mxs):
        try:
            found = addresses(resolver, exchange)
        except DnsSoft:
            soft = True
            continue
        except DnsHard:
            continue
        text = exchange.to_text(omit_final_dot=True).encode()
        targets += [Target(pref, ip, text) for ip in found]
    if soft:
        raise DnsSoft()
    return targets
