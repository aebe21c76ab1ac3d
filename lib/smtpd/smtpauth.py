"""SMTP AUTH PLAIN and LOGIN (RFC 4954) for qmail-smtpd, over TLS only, checked by a checkpassword program.

control/smtpcheckpassword names the program, one argv element per line (no shell), e.g.
`/usr/local/bin/checkpassword` and `/bin/true`. It gets `login\\0password\\0timestamp\\0` on fd 3
(see qmail-smtpd(8)): exit 0 accepts, 1 (and 2) refuse, anything else is a temporary failure.
"""

from __future__ import annotations

import os
import time

MYPY = False
if MYPY:  # typing only: never imported at run time
    from pyqmail.lib.smtpd.smtpio import Session, SmtpIO

CHECK_TIMEOUT = 60
REPLIES = {
    "ok": b"235 ok, go ahead (#2.0.0)\r\n",
    "bad": b"535 authentication failed (#5.7.8)\r\n",
    "temp": b"454 temporary authentication failure (#4.3.0)\r\n",
    "cancel": b"501 auth exchange cancelled (#5.0.0)\r\n",
    "syntax": b"501 malformed auth input (#5.5.4)\r\n",
    "mech": b"504 unrecognized authentication type (#5.5.4)\r\n",
    "tls": b"538 encryption required for requested authentication mechanism (#5.7.11)\r\n",
    "again": b"503 you are already authenticated (#5.5.1)\r\n",
    "mail": b"503 no AUTH during a mail transaction (#5.5.1)\r\n",
}


class Cancelled(Exception):
    """The client sent `*` or undecodable base64."""


def decode(line: bytes) -> bytes:
    """Return the bytes of one base64 client response; Cancelled on `*` or bad base64."""
    import binascii
    line = line.rstrip(b"\r")
    if line == b"*":
        raise Cancelled("cancel")
    try:
        return binascii.a2b_base64(line, strict_mode=True) if line not in (b"", b"=") else b""
    except (binascii.Error, ValueError):
        raise Cancelled("syntax")


def ask(io: SmtpIO, prompt: bytes) -> bytes:
    """Send a 334 challenge and return the decoded answer."""
    import binascii
    io.out(b"334 " + binascii.b2a_base64(prompt, newline=False) + b"\r\n")
    io.flush()
    return decode(io.readline())


def plain(io: SmtpIO, initial: bytes) -> tuple[bytes, bytes]:
    """Return (login, password) from an AUTH PLAIN exchange (authzid\\0authcid\\0passwd)."""
    response = decode(initial) if initial else ask(io, b"")
    parts = response.split(b"\0")
    if len(parts) != 3:
        raise Cancelled("syntax")
    return parts[1], parts[2]


def login(io: SmtpIO, initial: bytes) -> tuple[bytes, bytes]:
    """Return (login, password) from an AUTH LOGIN exchange."""
    user = decode(initial) if initial else ask(io, b"Username:")
    return user, ask(io, b"Password:")


EXCHANGES = {b"PLAIN": plain, b"LOGIN": login}


def checkpassword(argv: list[bytes], user: bytes, password: bytes, stamp: bytes) -> str:
    """Run the checkpassword program with the credentials on fd 3; return "ok", "bad" or "temp"."""
    if not user or not password or b"\0" in user + password:
        return "bad"
    r, w = os.pipe()
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, r, 3), (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
    except OSError:
        os.close(r)
        os.close(w)
        return "temp"
    os.close(r)
    try:
        os.write(w, user + b"\0" + password + b"\0" + stamp + b"\0")
    except OSError:
        pass
    os.close(w)
    return _verdict(pid)


def _verdict(pid: int) -> str:
    """Wait (bounded) for the checker; map its exit status."""
    deadline = time.monotonic() + CHECK_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            import _signal  # not `signal`: it imports enum
            os.kill(pid, _signal.SIGKILL)
            os.waitpid(pid, 0)
            return "temp"
        time.sleep(0.005)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return "ok"
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) in (1, 2):
        return "bad"
    return "temp"


def auth(session: Session, arg: bytes) -> None:
    """Run one AUTH command: refusals, the exchange, the check; success lets the session relay."""
    io, conf = session.io, session.conf
    if not conf.checkpassword:
        io.out(b"502 unimplemented (#5.5.1)\r\n")
        return
    if io.tls is None:
        io.out(REPLIES["tls"])
        return
    if session.user is not None:
        io.out(REPLIES["again"])
        return
    if session.seenmail:
        io.out(REPLIES["mail"])
        return
    mechanism, _, initial = arg.partition(b" ")
    exchange = EXCHANGES.get(mechanism.upper())
    if exchange is None:
        io.out(REPLIES["mech"])
        return
    try:  # a response line over the bound ends the session as a command line does (LineTooLong)
        user, password = exchange(io, initial.strip(b" "))
    except Cancelled as e:
        io.out(REPLIES[e.args[0]])
        return
    stamp = b"<%d.%d@%s>" % (os.getpid(), int(time.time()), conf.greeting.split(b" ", 1)[0])
    verdict = checkpassword([os.fsencode(a) for a in conf.checkpassword], user, password, stamp)
    if verdict == "ok":
        session.user = user
    io.out(REPLIES[verdict])
