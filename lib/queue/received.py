"""The Received line network servers add (qmail's received.c; shown in qmail-smtpd(8), qmail-qmtpd(8), qmail-qmqpd(8))
and safeput."""

from __future__ import annotations

from pyqmail.lib.queue.queue import date822

SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.@%+/=:-[]"
_UNSAFE_TO_QUESTION = bytes(c if c in SAFE else ord("?") for c in range(256))


def safeput(value: bytes) -> bytes:
    """Return value with every byte outside qmail's safe set turned into `?`."""
    return value.translate(_UNSAFE_TO_QUESTION)


def received(protocol: bytes, local: bytes, remoteip: bytes, remotehost: bytes, remoteinfo: bytes | None = None,
             helo: bytes | None = None, now: float | None = None) -> bytes:
    """Return `Received: from host[ (HELO h)] ([info@]ip)\\n  by local with PROTO; date\\n` as bytes."""
    if now is None:
        import time
        now = time.time()
    parts = [b"Received: from ", safeput(remotehost)]
    if helo is not None and helo.lower() != remotehost.lower():
        parts += [b" (HELO ", safeput(helo), b")"]
    parts.append(b" (")
    if remoteinfo is not None:
        parts += [safeput(remoteinfo), b"@"]
    parts += [safeput(remoteip), b")\n  by ", safeput(local), b" with ", protocol, b"; ",
              date822(now).encode("ascii"), b"\n"]
    return b"".join(parts)
