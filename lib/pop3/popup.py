"""qmail-popup's authorization state: USER/PASS, APOP, NOOP, QUIT, CAPA and STLS, the plaintext-login
rule; the hand-over of `user\\0password\\0<timestamp>\\0` to the checkpassword program on fd 3, through a
TLS relay after STLS (qmail-popup(8))."""

from __future__ import annotations

import os

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Mapping

OK = b"+OK \r\n"  # qmail's: a space before the CRLF
DIE = 1  # qmail-popup's every ending: usage, errors, QUIT, and after the hand-over
STLS_GO = b"+OK Begin TLS negotiation\r\n"
PLAINTEXT_REFUSED = b"-ERR plaintext login refused without TLS: use STLS\r\n"


def loopback(ip: str) -> bool:
    """True for tcpserver's TCPREMOTEIP of a loopback client: 127.0.0.0/8, ::1 (or ::ffff:127.x.y.z)."""
    ip = ip.lower()
    if ip.startswith("::ffff:"):
        ip = ip[7:]
    if ip.startswith("127."):
        parts = ip.split(".")
        return len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts)
    if ":" in ip:
        import ipaddress
        try:
            return ipaddress.IPv6Address(ip) == ipaddress.IPv6Address("::1")
        except ValueError:
            return False
    return False


def plaintext_allowed(env: Mapping[str, str], control_value: int) -> bool:
    """May USER/PASS and APOP be used without TLS? control/pop3plaintext 1, or a loopback client."""
    return control_value == 1 or loopback(env.get("TCPREMOTEIP", ""))


class Auth:
    """A login to hand over: user, password, the greeting's timestamp."""

    def __init__(self, user: bytes, password: bytes, timestamp: bytes) -> None:
        self.user = user
        self.password = password
        self.timestamp = timestamp

    def data(self) -> bytes:
        """What the checkpassword program reads on fd 3."""
        return self.user + b"\0" + self.password + b"\0" + self.timestamp + b"\0"


class Popup:
    """The authorization state of one session."""

    def __init__(self, hostname: bytes, pid: int, now: int, tls_available: bool = False,
                 plaintext: bool = True) -> None:
        self.timestamp = b"<%d.%d@%s>" % (pid, now, hostname)
        self.user: bytes | None = None
        self.tls_available = tls_available  # control/servercert.pem exists and fds 0/1 are a TCP socket
        self.plaintext = plaintext  # logins allowed before STLS
        self.tls = False  # STLS done
        self.start_tls = False  # set by STLS: the caller handshakes after sending the reply

    def login_allowed(self) -> bool:
        """May the client log in now?"""
        return self.tls or self.plaintext

    def capabilities(self) -> bytes:
        """CAPA's reply (RFC 2449): USER only when a login is allowed now, STLS while it is available."""
        lines = [b"+OK capability list follows"]
        if self.login_allowed():
            lines.append(b"USER")
        lines += [b"UIDL", b"TOP"]
        if self.tls_available and not self.tls:
            lines.append(b"STLS")
        lines.append(b".")
        return b"\r\n".join(lines) + b"\r\n"

    def greeting(self) -> bytes:
        """`+OK <pid.time@hostname>`: the APOP timestamp."""
        return b"+OK " + self.timestamp + b"\r\n"

    def command(self, verb: bytes, arg: bytes) -> tuple[bytes, Auth | None, bool]:
        """Return (reply, login to hand over or None, end of session?) for one parsed command."""
        if verb == b"capa":
            return self.capabilities(), None, False
        if verb == b"stls":
            if not self.tls_available:
                return b"-ERR authorization first\r\n", None, False  # qmail's answer: no STLS here
            if self.tls:
                return b"-ERR already in TLS\r\n", None, False
            if self.user is not None:
                return b"-ERR STLS not allowed after USER\r\n", None, False
            self.start_tls = True
            return STLS_GO, None, False
        if verb in (b"user", b"pass", b"apop") and not self.login_allowed():
            return PLAINTEXT_REFUSED, None, False
        if verb == b"user":
            if not arg:
                return b"-ERR syntax error\r\n", None, False
            self.user = arg
            return OK, None, False
        if verb == b"pass":
            if self.user is None:
                return b"-ERR USER first\r\n", None, False
            if not arg:
                return b"-ERR syntax error\r\n", None, False
            return b"", Auth(self.user, arg, self.timestamp), True
        if verb == b"apop":
            space = arg.find(b" ")
            if space < 0:
                return b"-ERR syntax error\r\n", None, False
            return b"", Auth(arg[:space], arg[space + 1:], self.timestamp), True
        if verb == b"quit":
            return OK, None, True
        if verb == b"noop":
            return OK, None, False
        return b"-ERR authorization first\r\n", None, False


def hand_over(argv: list[bytes], auth: Auth, relay: Callable[[int], None] | None = None) -> bytes:
    """Run argv with auth's data on fd 3 (fds 0, 1 and 2 shared), wait for it, and return the reply
    qmail-popup then gives: nothing when it exited 0, else `-ERR ...`. With relay (after STLS), argv's
    fds 0 and 1 are one end of a socketpair instead and relay(other end) carries the bytes until done."""
    import signal
    from pyqmail.lib.util.program import default_signals
    r, w = os.pipe()
    pair: tuple[int, int] | None = None
    if relay is not None:
        import socket
        try:
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError:
            os.close(r)
            os.close(w)
            return b"-ERR unable to fork\r\n"
        pair = (a.detach(), b.detach())
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        if pair:
            os.close(pair[0])
            os.close(pair[1])
        return b"-ERR unable to fork\r\n"
    if pid == 0:
        try:
            os.close(w)
            if pair:
                os.close(pair[0])
                os.dup2(pair[1], 0)
                os.dup2(pair[1], 1)
                if pair[1] not in (0, 1):
                    os.close(pair[1])
            if r != 3:
                os.dup2(r, 3)
                os.close(r)
            else:
                os.set_inheritable(3, True)
            default_signals()  # SIGPIPE and SIGXFSZ, ignored by Python
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            os.execvp(argv[0], argv)
        finally:
            os._exit(1)
    os.close(r)
    if pair:
        os.close(pair[1])
    data = auth.data()
    auth.password = b""
    try:
        from pyqmail.lib.util.fdio import write_all
        write_all(w, data)
        failed = False
    except OSError:
        failed = True
    os.close(w)
    del data
    if failed:
        # qmail dies here without waiting; the child sees EOF on fd 3 and fails on its own
        if pair:
            os.close(pair[0])
        return b"-ERR unable to write pipe\r\n"
    if relay is not None and pair:
        try:
            relay(pair[0])
        finally:
            os.close(pair[0])
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return b""
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return b"-ERR aack, child crashed\r\n"
    if os.WEXITSTATUS(status):
        return b"-ERR authorization failed\r\n"
    return b""
