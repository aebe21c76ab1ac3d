"""The addresses of this host, for qmail-remote's "an MX is me" check (qmail's ipme.c, plus IPv6 on Linux)."""

import struct

SIOCGIFFLAGS = 0x8913
SIOCGIFADDR = 0x8915
IFF_UP = 0x1


def ipv4_addresses():
    """Return the IPv4 address of every interface that is up, plus 0.0.0.0 (always "this host")."""
    import _socket
    import fcntl
    found = {"0.0.0.0"}
    try:
        names = _socket.if_nameindex()
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    except OSError:
        return found
    try:
        for _, name in names:
            req = struct.pack("16s24x", name.encode()[:15])
            try:
                flags = struct.unpack_from("16xH", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, req))[0]
                if not flags & IFF_UP:
                    continue
                addr = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, req)
            except OSError:
                continue
            found.add(_socket.inet_ntoa(addr[20:24]))
    finally:
        sock.close()
    return found


def ipv6_addresses(table="/proc/net/if_inet6"):
    """Return this host's IPv6 addresses from Linux's table (none elsewhere)."""
    import _socket
    found = set()
    try:
        with open(table, "rb") as f:
            data = f.read()
    except OSError:
        return found
    for line in data.splitlines():
        hexaddr = line.split()[0] if line.split() else b""
        if len(hexaddr) == 32:
            try:
                found.add(_socket.inet_ntop(_socket.AF_INET6, bytes.fromhex(hexaddr.decode())))
            except (ValueError, OSError):
                pass
    return found


def addresses():
    """Return every address of this host as text."""
    return ipv4_addresses() | ipv6_addresses()
