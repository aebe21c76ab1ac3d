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
CHECK_TIMEOUT = 1200  # seconds the subprogram may take before it says anything (as the client's read timeout)
TIMED_OUT = b"-ERR unable to authorize in time\r\n"  # in the form of qmail-popup's other temporary failures
TCP_INFO_LENGTH = 216  # struct tcp_info up to tcpi_bytes_retrans (Linux 4.19)
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


def check_timeout(env: Mapping[str, str]) -> int:
    """The subprogram's bound in seconds: $CHECKPASSWORDTIMEOUT (digits; 0: none, as qmail), else CHECK_TIMEOUT."""
    value = env.get("CHECKPASSWORDTIMEOUT", "")
    if value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    return CHECK_TIMEOUT


def written(fd: int) -> int | None:
    """Bytes written so far by anyone into the TCP socket fd (tcp_info: bytes sent less those sent again, plus
    those not sent yet), or None when fd is no TCP socket or the kernel does not say (before Linux 4.19)."""
    import _socket
    import sys
    try:
        sock = _socket.socket(fileno=fd)
    except (OSError, ValueError):
        return None
    try:
        if sock.family not in (_socket.AF_INET, _socket.AF_INET6) or sock.type != _socket.SOCK_STREAM:
            return None
        info = sock.getsockopt(_socket.IPPROTO_TCP, _socket.TCP_INFO, 256)
    except (OSError, AttributeError):  # AttributeError: no TCP_INFO on this system
        return None
    finally:
        sock.detach()
    if len(info) < TCP_INFO_LENGTH:
        return None

    def field(offset: int, size: int) -> int:
        return int.from_bytes(info[offset:offset + size], sys.byteorder)
    return field(200, 8) - field(208, 8) + field(144, 4)  # tcpi_bytes_sent - tcpi_bytes_retrans + tcpi_notsent_bytes


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


def hand_over(argv: list[bytes], auth: Auth, relay: Callable[[int, float | None], bool] | None = None,
              bound: int = CHECK_TIMEOUT) -> bytes:
    """Run argv with auth's data on fd 3 (fds 0, 1 and 2 shared), wait for it, and return the reply
    qmail-popup then gives: nothing when it exited 0, else `-ERR ...`. With relay (after STLS), argv's
    fds 0 and 1 are one end of a socketpair instead and relay(other end, deadline) carries the bytes until done,
    saying whether argv wrote any. If argv has written nothing to the client bound seconds after the start (a
    checkpassword program that hangs), its process group is killed and the reply is TIMED_OUT; once it has
    written (the session has begun), it is waited for without bound. Without relay the bound needs fd 1 to be a
    TCP socket, to see that it wrote (else no bound, as qmail)."""
    import signal
    import time
    from pyqmail.lib.util.program import default_signals
    deadline = time.monotonic() + bound if bound else None
    spoke: Callable[[], bool] | None = None
    if deadline is not None and relay is None:
        before = written(1)
        if before is not None:
            spoke = lambda: written(1) != before  # noqa: E731
    group = not os.isatty(0)  # on a terminal, a process group of its own could not read it
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
            if group:
                try:
                    os.setpgid(0, 0)
                except OSError:
                    pass  # then it is killed alone
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
    if group:
        try:
            os.setpgid(pid, pid)  # as the child does: whichever runs first
        except OSError:
            pass  # it has exec'd already, having done it itself
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
            said = relay(pair[0], deadline)
        finally:
            os.close(pair[0])
        spoke = lambda: said  # noqa: E731  (the relay is over: nothing more can reach the client)
    status = wait_child(pid, deadline, spoke)
    if status is None:
        kill_group(pid, group)
        wait_child(pid, None, None)
        # it may have begun to speak at the last moment: then its words stand alone
        return b"" if spoke is not None and spoke() else TIMED_OUT
    if os.WIFSIGNALED(status):
        return b"-ERR aack, child crashed\r\n"
    if os.WEXITSTATUS(status):
        return b"-ERR authorization failed\r\n"
    return b""


def wait_child(pid: int, deadline: float | None, spoke: Callable[[], bool] | None) -> int | None:
    """Return pid's wait status once it ends (0 if it is no child of ours); with deadline (time.monotonic())
    and spoke, None as soon as the deadline passes while spoke() is still false. The deadline needs
    os.pidfd_open (Linux 5.3): without it the wait has no bound."""
    if deadline is not None and spoke is not None:
        import select
        import time
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = -1
        if pidfd >= 0:
            try:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                pause = 0.05  # seconds between looks at spoke(), doubling up to 5
                while not spoke():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    if poller.poll(int(min(pause, left) * 1000) + 1):
                        break  # it ended
                    pause = min(pause * 2, 5.0)
            finally:
                os.close(pidfd)
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def kill_group(pid: int, group: bool) -> None:
    """SIGKILL pid's process group (a checkpassword's own children with it), or pid alone when not group."""
    import signal
    try:
        if group:
            os.killpg(pid, signal.SIGKILL)
            return
    except OSError:
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
