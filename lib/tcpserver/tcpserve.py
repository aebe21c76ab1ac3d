"""qmail-tcpserver's parts: its options, the listening socket, the tcp-environ(5) variables, tcpserver's log lines
(qmail-tcpserver(8))."""

from __future__ import annotations

import os
import signal
import socket

from pyqmail.lib.util.errstr import error_str
from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.tcpserver.tcpenv import unmap

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Mapping
    # a TCP socket's address: (ip, port) for IPv4, (ip, port, flowinfo, scope id) for IPv6
    SocketAddress = tuple[str, int] | tuple[str, int, int, int]

USAGE = ("usage: tcpserver [ -146jUXpPhHrRoOdDqQv ] [ -c limit ] [ -x rules.cdb ] [ -B banner ] [ -g gid ]"
         " [ -u uid ] [ -b backlog ] [ -l localname ] [ -t timeout ] host port program")
FLAGS = "146jUXpPhHrRoOdDqQv"
WITH_ARGUMENT = "cxBgublt"
NUMERIC = {"c": "limit", "b": "backlog", "u": "uid", "g": "gid", "t": "timeout"}  # -t: ident, never asked
# what listen(2) (an int) and setuid/setgid (uid_t, (uid_t)-1 meaning none) take; tcpserver would wrap silently
BOUNDS = {"b": 2 ** 31 - 1, "u": 2 ** 32 - 2, "g": 2 ** 32 - 2, "U": 2 ** 32 - 2}
PORT_MAX = 65535


class UsageError(ValueError):
    """The command line is not tcpserver's."""


class Options:
    """tcpserver's settings with its defaults."""

    def __init__(self) -> None:
        self.limit, self.backlog, self.verbosity, self.timeout = 40, 20, 1, 26
        self.rules: str | None = None
        self.rules_optional = False
        self.banner = b""
        self.uid = self.gid = 0
        self.localname: str | None = None
        self.print_port = False
        self.nodelay = False
        self.kill_ipoptions = True
        self.family: int | None = None  # 4, 6, or None: from the host's form
        self.host = self.port = ""  # set by parse from the command line
        self.argv: list[str] = []


def _number(flag: str, text: str) -> int:
    """Return a non-negative decimal option argument, at most its BOUNDS."""
    if not text.isdigit() or not text.isascii():
        raise UsageError("option -%s wants a number, not %r" % (flag, text))
    n = int(text)
    if n > BOUNDS.get(flag, n):
        raise UsageError("option -%s wants a number up to %d, not %s" % (flag, BOUNDS[flag], text))
    return n


def parse(argv: list[str], environ: Mapping[str, str]) -> Options:
    """Return Options for tcpserver's argv (after the program name); raise UsageError."""
    from pyqmail.lib.util.sgetopt import BadOption, options
    try:
        pairs, rest = options(argv, FLAGS + "".join(f + ":" for f in WITH_ARGUMENT), "tcpserver")
    except BadOption as e:
        raise UsageError(e.why)
    o = Options()
    for f, value in pairs:
        if value is not None:  # one of WITH_ARGUMENT
            if f in NUMERIC:
                setattr(o, NUMERIC[f], _number(f, value))
            elif f == "x":
                o.rules = value
            elif f == "B":
                o.banner = value.encode("utf-8", "surrogateescape")
            elif f == "l":
                o.localname = value
        elif f == "U":
            o.uid = _number("U", environ.get("UID", ""))
            o.gid = _number("U", environ.get("GID", ""))
        o.rules_optional |= f == "X"
        o.print_port |= f == "1"
        o.verbosity = {"q": 0, "Q": 1, "v": 2}.get(f, o.verbosity)
        o.nodelay = {"D": True, "d": False}.get(f, o.nodelay)
        o.kill_ipoptions = {"O": True, "o": False}.get(f, o.kill_ipoptions)
        o.family = {"4": 4, "6": 6}.get(f, o.family)
    if len(rest) < 3:
        raise UsageError("need host, port and program")
    if o.limit < 1:
        raise UsageError("the limit must be at least 1")
    o.host, o.port, o.argv = rest[0], rest[1], rest[2:]
    return o


def environment(local: SocketAddress, remote: SocketAddress, localname: str | None) -> dict[str, str | None]:
    """Return the tcp-environ(5) variables (None = unset) for ((ip, port), (ip, port)) of a connection."""
    lip, rip = unmap(local[0]), unmap(remote[0])
    return {
        "PROTO": "TCP6" if ":" in rip else "TCP",
        "TCPLOCALIP": lip, "TCPLOCALPORT": str(local[1]), "TCPLOCALHOST": localname,
        "TCPREMOTEIP": rip, "TCPREMOTEPORT": str(remote[1]),
        "TCPREMOTEHOST": None, "TCPREMOTEINFO": None,  # never looked up: no DNS, no ident
    }


ENVIRONMENT = frozenset(name.encode() for name in environment(("", 0), ("", 0), None))  # every one it sets


def status_line(children: int, limit: int) -> str:
    """Return tcpserver's `status: n/limit` line."""
    return "tcpserver: status: %d/%d" % (children, limit)


def pid_line(pid: int, ip: str) -> str:
    """Return tcpserver's `pid N from IP` line."""
    return "tcpserver: pid %d from %s" % (pid, ip)


def verdict_line(deny: bool, pid: int, env: Mapping[str, str | None]) -> str:
    """Return tcpserver's `ok`/`deny` line: localhost:localip:localport remotehost:remoteip:info:remoteport."""
    def shown(name: str) -> str:
        """Return a variable's value, empty when unset."""
        return env.get(name) or ""
    return "tcpserver: %s %d %s:%s:%s %s:%s:%s:%s" % (
        "deny" if deny else "ok", pid, shown("TCPLOCALHOST"), shown("TCPLOCALIP"), shown("TCPLOCALPORT"),
        shown("TCPREMOTEHOST"), shown("TCPREMOTEIP"), shown("TCPREMOTEINFO"), shown("TCPREMOTEPORT"))


def end_lines(pid: int, wstat: int) -> list[str]:
    """Return tcpserver's `end N status W` line, plus a plain warning when a signal killed the child."""
    lines = ["tcpserver: end %d status %d" % (pid, wstat)]
    if wstat & 0x7F and wstat & 0x7F not in (0x7F, signal.SIGPIPE):  # SIGPIPE: the client left first
        lines.append("tcpserver: warning: child %d crashed: killed by signal %d%s"
                     % (pid, wstat & 0x7F, " (core dumped)" if wstat & 0x80 else ""))
    return lines


def open_standard_fds() -> None:
    """Open /dev/null on any of fds 0, 1, 2 that is closed, so that no socket or pipe of ours takes its number
    (the listening socket as fd 2 would be every child's stderr, and every worker's for good)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd, as the ones below are open


def listen(o: Options) -> socket.socket:
    """Return the bound, listening socket for host and port, as tcpserver makes it."""
    host = {"0": "::" if o.family == 6 else "0.0.0.0"}.get(o.host, o.host)
    try:
        port = int(o.port) if o.port.isdigit() and o.port.isascii() else socket.getservbyname(o.port, "tcp")
        if port > PORT_MAX:  # tcpserver keeps the low 16 bits: 99999 would listen on 34463
            raise OSError("no such port")
    except (OSError, UnicodeError):
        raise Exit(TEMP_FAILURE, "fatal: unable to figure out port number for %s" % o.port)
    want = socket.AF_INET if o.family == 4 else socket.AF_INET6 if o.family == 6 else socket.AF_UNSPEC
    try:  # a name is resolved once here, by the system resolver; an address never is
        family, _, _, _, address = socket.getaddrinfo(host, port, want, socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError):
        raise Exit(TEMP_FAILURE, "fatal: no IP address for %s" % o.host)
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(address)
        s.listen(o.backlog)
    except OSError as e:
        raise Exit(TEMP_FAILURE, "fatal: unable to bind: %s" % error_str(e.errno))
    if o.print_port:
        os.write(1, b"%d\n" % s.getsockname()[1])
    return s


def drop_privileges(o: Options) -> None:
    """Switch gid then uid after binding, as tcpserver does (0 means: keep)."""
    if o.gid:
        try:
            os.setgroups([o.gid])
            os.setgid(o.gid)
        except OSError as e:
            raise Exit(TEMP_FAILURE, "fatal: unable to set gid: %s" % error_str(e.errno))
    if o.uid:
        try:
            os.setuid(o.uid)
        except OSError as e:
            raise Exit(TEMP_FAILURE, "fatal: unable to set uid: %s" % error_str(e.errno))
