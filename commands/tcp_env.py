"""tcp-env: set the tcp-environ(5) variables from the socket on fd 0, then run a program (tcp-env(1)).

For inetd: `tcp-env [-rR] [-t timeout] program [arg ...]`. When PROTO is already TCP the environment is
left as it is. Any failure before the program runs exits 111 silently, as qmail's does."""

import os

from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.program import default_signals, main
from pyqmail.lib.util.sgetopt import BadOption, options


def scan_ulong(text):
    """qmail's scan_ulong: the leading digits of text as a number (0 if none)."""
    n = 0
    for ch in text:
        if not "0" <= ch <= "9":
            break
        n = n * 10 + ord(ch) - 48
    return n


def die():
    raise Exit(TEMP_FAILURE)


def ptr_name(ip):
    """Return the name of ip lower-cased, b"softdnserror" on a temporary failure, or None (no name)."""
    import socket
    try:
        name = socket.gethostbyaddr(ip)[0]
    except socket.gaierror as e:
        return b"softdnserror" if e.errno == socket.EAI_AGAIN else None
    except socket.herror as e:
        return b"softdnserror" if e.errno == 2 else None  # TRY_AGAIN
    except (OSError, UnicodeError):
        return None
    return name.encode("utf-8", "surrogateescape").lower()


def set_or_unset(env, name, value):
    if value is None:
        env.pop(name, None)
    else:
        env[name] = value


def set_environment(env, remoteinfo, timeout):
    """Set PROTO and the TCP* variables from fd 0's socket; Exit 111 if fd 0 is no TCP socket."""
    import socket
    from pyqmail.lib.tcpserver.tcpenv import unmap
    try:
        sock = socket.socket(fileno=0)
    except OSError:
        die()
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            die()
        try:
            lip, lport = sock.getsockname()[:2]
            rip, rport = sock.getpeername()[:2]
        except OSError:
            die()
    finally:
        sock.detach()  # fd 0 stays open for the program
    lip, rip = unmap(lip), unmap(rip)
    env[b"PROTO"] = b"TCP"
    env[b"TCPLOCALPORT"] = b"%d" % lport
    env[b"TCPLOCALIP"] = lip.encode()
    set_or_unset(env, b"TCPLOCALHOST", ptr_name(lip))
    env[b"TCPREMOTEPORT"] = b"%d" % rport
    env[b"TCPREMOTEIP"] = rip.encode()
    set_or_unset(env, b"TCPREMOTEHOST", ptr_name(rip))
    env.pop(b"TCPREMOTEINFO", None)
    if remoteinfo:
        from pyqmail.lib.tcpserver.remoteinfo import query
        info = query(rip, rport, lip, lport, timeout)
        if info is not None:
            env[b"TCPREMOTEINFO"] = info


def body(argv):
    """Set the environment and exec the program; exit 111 if that cannot be done."""
    remoteinfo, timeout = True, 30
    try:
        flags, command = options(argv, "rRt:", "tcp-env")
    except BadOption as e:
        raise Exit(TEMP_FAILURE, e.why)
    for flag, arg in flags:
        if flag == "r":
            remoteinfo = True
        elif flag == "R":
            remoteinfo = False
        elif flag == "t" and arg is not None:
            timeout = scan_ulong(arg)
    if not command:
        die()
    env = os.environb
    if env.get(b"PROTO") != b"TCP":
        set_environment(env, remoteinfo, timeout)
    default_signals()  # Python ignores SIGPIPE and SIGXFSZ; tcp-env's command must not
    try:
        os.execvp(command[0], command)
    except OSError:
        pass
    die()


def run():
    """Console-script entry point."""
    from pyqmail.lib.util.envsnapshot import undo_locale_coercion
    undo_locale_coercion()  # the program inherits our environment: not the interpreter's LC_CTYPE
    main("tcp-env", body, crash_code=TEMP_FAILURE)
