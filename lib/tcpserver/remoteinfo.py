"""The ident (RFC 1413) query tcp-env makes for TCPREMOTEINFO, as qmail's remoteinfo.c asks and reads it."""

from __future__ import annotations

INFO_MAX = 998  # bytes kept of the user name, as qmail keeps them
REPLY_MAX = 65536  # bytes read at most before the reply's LF; more: no answer
IDENT_PORT = 113


def parse_reply(data: bytes) -> bytes | None:
    """Return what follows the third colon of the reply's first line, blanks and CRs removed, cut to
    INFO_MAX bytes (empty for an ERROR reply, as qmail's); None if data holds no LF before its end."""
    colons = 0
    kept = bytearray()
    for ch in data:
        if ch in (0x20, 0x09, 0x0D):
            continue
        if ch == 0x0A:
            return bytes(kept)
        if colons < 3:
            if ch == 0x3A:
                colons += 1
        else:
            kept.append(ch)
            if len(kept) == INFO_MAX:
                return bytes(kept)
    return None


def query(remote_ip: str, remote_port: int, local_ip: str, local_port: int, timeout: float) -> bytes | None:
    """Ask remote_ip's ident server, from local_ip, who holds the connection; None on any failure.

    The connection and the write have timeout seconds each, the whole reply timeout seconds."""
    import socket
    import time
    family = socket.AF_INET6 if ":" in remote_ip else socket.AF_INET
    try:
        s = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        s.settimeout(timeout)
        s.bind((local_ip, 0))
        s.connect((remote_ip, IDENT_PORT))
        s.sendall(b"%d , %d\r\n" % (remote_port, local_port))
        got = b""
        deadline = time.monotonic() + max(timeout, 0)
        while len(got) < REPLY_MAX and b"\n" not in got:
            s.settimeout(max(deadline - time.monotonic(), 0.001))
            data = s.recv(4096)
            if not data:
                break
            got += data
        return parse_reply(got)
    except (OSError, ValueError, OverflowError):
        return None
    finally:
        s.close()
