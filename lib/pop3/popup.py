"""qmail-popup's authorization state: USER/PASS, APOP, NOOP, QUIT; the hand-over of
`user\\0password\\0<timestamp>\\0` to the checkpassword program on fd 3 (qmail-popup(8))."""

from __future__ import annotations

import os

OK = b"+OK \r\n"  # qmail's: a space before the CRLF
DIE = 1  # qmail-popup's every ending: usage, errors, QUIT, and after the hand-over


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

    def __init__(self, hostname: bytes, pid: int, now: int) -> None:
        self.timestamp = b"<%d.%d@%s>" % (pid, now, hostname)
        self.user: bytes | None = None

    def greeting(self) -> bytes:
        """`+OK <pid.time@hostname>`: the APOP timestamp."""
        return b"+OK " + self.timestamp + b"\r\n"

    def command(self, verb: bytes, arg: bytes) -> tuple[bytes, Auth | None, bool]:
        """Return (reply, login to hand over or None, end of session?) for one parsed command."""
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


def hand_over(argv: list[bytes], auth: Auth) -> bytes:
    """Run argv with auth's data on fd 3 (fds 0, 1 and 2 shared), wait for it, and return the reply
    qmail-popup then gives: nothing when it exited 0, else `-ERR ...`."""
    import signal
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return b"-ERR unable to fork\r\n"
    if pid == 0:
        try:
            os.close(w)
            if r != 3:
                os.dup2(r, 3)
                os.close(r)
            else:
                os.set_inheritable(3, True)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            os.execvp(argv[0], argv)
        finally:
            os._exit(1)
    os.close(r)
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
        return b"-ERR unable to write pipe\r\n"
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
