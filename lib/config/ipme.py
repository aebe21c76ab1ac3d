"""This host's own IP addresses (qmail's ipme), asked for only when an address names a domain literal."""

from __future__ import annotations

import _socket

SIOCGIFCONF = 0x8912
IFREQ = 40  # sizeof(struct ifreq) on 64-bit Linux


def ipv4_addresses() -> set[str]:
    """Return the interfaces' IPv4 addresses (SIOCGIFCONF), plus 127.0.0.1 and 0.0.0.0 as qmail counts them."""
    import array
    import fcntl
    import struct
    found = {"127.0.0.1", "0.0.0.0"}
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        buf = array.array("B", bytes(IFREQ * 256))
        request = struct.pack("iL", len(buf), buf.buffer_info()[0])
        length = struct.unpack("iL", fcntl.ioctl(sock.fileno(), SIOCGIFCONF, request))[0]
    finally:
        sock.close()
    data = buf.tobytes()[:length]
    for i in range(0, len(data) - IFREQ + 1, IFREQ):
        found.add(_socket.inet_ntoa(data[i + 20:i + 24]))
    return found


def ipv6_addresses() -> set[str]:
    """Return the interfaces' IPv6 addresses from /proc/net/if_inet6 (none if it cannot be read)."""
    found: set[str] = set()
    try:
        with open("/proc/net/if_inet6", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        hexaddr = line.split(b" ", 1)[0]
        if len(hexaddr) == 32:
            found.add(_socket.inet_ntop(_socket.AF_INET6, bytes.fromhex(hexaddr.decode("ascii"))))
    return found


class IpMe:
    """Answers `is this one of my addresses?`, reading the interfaces once, on first use."""

    def __init__(self) -> None:
        self.addresses: set[str] | None = None

    def __call__(self, ip: str) -> bool:
        """True when ip (canonical text) is an address of this host; OSError if they cannot be listed."""
        if self.addresses is None:
            self.addresses = ipv4_addresses() | ipv6_addresses()
        return ip in self.addresses
