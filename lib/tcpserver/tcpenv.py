"""Who is on the other end: tcp-environ(5) variables, else getpeername(2) on fd 0, else REMOTE_ADDR."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Mapping


class Peer:
    """The connection's two ends as bytes; absent values are None."""

    def __init__(self) -> None:
        self.remoteip: bytes | None = None
        self.remoteport: bytes | None = None
        self.remotehost: bytes | None = None
        self.remoteinfo: bytes | None = None
        self.localip: bytes | None = None
        self.localport: bytes | None = None
        self.localhost: bytes | None = None

    def name(self, with_port: bool = False) -> str:
        """Return Postfix's `host[addr]` (with `:port` if asked) for logs and replies."""
        from pyqmail.lib.queue.received import safeput  # a PTR name may hold anything; it goes into replies
        text = b"%s[%s]" % (safeput(self.remotehost or b"unknown"), safeput(self.remoteip or b"unknown"))
        if with_port and self.remoteport:
            text += b":" + self.remoteport
        return text.decode("latin-1")


def unmap(address: str) -> str:
    """Return an IPv4-mapped IPv6 address in IPv4 form, without a scope suffix."""
    address = address.split("%", 1)[0]
    if address.lower().startswith("::ffff:") and "." in address:
        return address[7:]
    return address


def _socket_ends(fd: int) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """Return ((ip, port), (ip, port)) for the peer and local end of a TCP socket on fd, or None."""
    import _socket
    try:
        sock = _socket.socket(fileno=fd)
    except (OSError, ValueError):  # not a socket, or no descriptor at all
        return None
    try:
        if sock.family not in (_socket.AF_INET, _socket.AF_INET6):
            return None
        return sock.getpeername()[:2], sock.getsockname()[:2]
    except OSError:
        return None
    finally:
        sock.detach()  # the descriptor belongs to our caller; never close it here


def peer(environ: Mapping[bytes, bytes] | None = None, fd: int = 0) -> Peer:
    """Return the Peer of the connection on fd: TCP* variables first (tcpserver), then the socket."""
    env = posix.environ if environ is None else environ  # os.environb's dict
    p = Peer()
    p.remotehost = env.get(b"TCPREMOTEHOST")
    p.remoteinfo = env.get(b"TCPREMOTEINFO")
    p.localhost = env.get(b"TCPLOCALHOST")
    p.remoteip = env.get(b"TCPREMOTEIP")
    p.remoteport = env.get(b"TCPREMOTEPORT")
    p.localip = env.get(b"TCPLOCALIP")
    p.localport = env.get(b"TCPLOCALPORT")
    if p.remoteip is None:
        ends = _socket_ends(fd)
        if ends is not None:
            (rip, rport), (lip, lport) = ends
            p.remoteip, p.remoteport = unmap(rip).encode(), b"%d" % rport
            p.localip = p.localip or unmap(lip).encode()
            p.localport = p.localport or b"%d" % lport
        elif env.get(b"REMOTE_ADDR"):  # systemd sets these; used only when fd 0 is no TCP socket
            p.remoteip = unmap(env[b"REMOTE_ADDR"].decode("latin-1")).encode("latin-1")
            p.remoteport = env.get(b"REMOTE_PORT")
    return p
