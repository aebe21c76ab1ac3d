"""qmail-getpw's passwd rules asked of a helper process of qmail-lspawn's, so that a lookup that does not return
(an NSS source that hangs, a home on an NFS server that stopped answering: the rules stat the home) holds
qmail-lspawn's loop for at most TIMEOUT seconds, not until it returns; qmail runs qmail-getpw in each delivery's
own child, which pyqmail's reused workers cannot (the worker is chosen by the uid the lookup finds). The round
trip costs a context switch each way, so answers are remembered for up to REMEMBER seconds while /etc/passwd is
the same file, as users/cdb answers are while users/cdb is."""

from __future__ import annotations

import os
import select
import signal
import socket
import time

from pyqmail.lib.config import getpw, users
from pyqmail.lib.util.exits import QLX_NOMEM, QLX_SYS, Exit

TIMEOUT = 5.0  # seconds a lookup may take before its delivery is deferred and the helper replaced
ANSWER_MAX = 1 << 20  # an answer's bytes: a user name, two numbers, a home directory, dash and extension
LOCAL_MAX = 1 << 17  # a local part's bytes (the spawn protocol refuses recipients over 65536)
REMEMBER = 60.0  # seconds an answer is used again (an NSS source other than files has no stat to check)
REMEMBER_MAX = 1024  # answers remembered at once; beyond, all are forgotten
PASSWD = "/etc/passwd"
FIELDS = 6


def encode_answer(a: users.Assignment | None, code: int = 0) -> bytes:
    """The helper's answer: `K` and the six fields NUL-separated, or `E` and qmail-getpw's exit code."""
    if a is None:
        return b"E%d" % code
    return b"K" + b"\0".join((a.user, b"%d" % a.uid, b"%d" % a.gid, a.homedir, a.dash, a.ext))


def decode_answer(data: bytes) -> users.Assignment:
    """Return the Assignment of an answer; Exit with its code for an `E` answer, QLX_SYS for a damaged one."""
    if data[:1] == b"E" and data[1:].isdigit():
        raise Exit(int(data[1:]))
    fields = data[1:].split(b"\0")
    if data[:1] != b"K" or len(fields) != FIELDS or not (fields[1].isdigit() and fields[2].isdigit()):
        raise Exit(QLX_SYS)
    return users.Assignment(fields[0], int(fields[1]), int(fields[2]), fields[3], fields[4], fields[5])


def serve(sock: socket.socket) -> None:
    """In the helper: answer each local part (one datagram) with its Assignment until qmail-lspawn goes."""
    while True:
        try:
            local = sock.recv(LOCAL_MAX)
        except OSError:
            return
        if not local:
            return
        try:
            answer = encode_answer(getpw.assignment(local))
        except Exit as e:
            answer = encode_answer(None, e.code)
        except MemoryError:
            answer = encode_answer(None, QLX_NOMEM)
        try:
            sock.send(answer)
        except OSError:
            return


class PasswdLookups:
    """qmail-lspawn's end: one helper at a time, started when first asked and replaced after a timeout."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.pid = 0
        self.answers: dict[bytes, tuple[float, users.Assignment]] = {}
        self.passwd_key: tuple[int, ...] | None = None

    def ask(self, local: bytes) -> users.Assignment:
        """Return the passwd rules' Assignment for local, a remembered one if /etc/passwd is the same file and
        it is younger than REMEMBER; Exit as ask_helper (a failure is never remembered)."""
        try:
            st = os.stat(PASSWD)
            key: tuple[int, ...] | None = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except OSError:
            key = None
        now = time.monotonic()
        if key != self.passwd_key:
            self.answers.clear()
            self.passwd_key = key
        hit = self.answers.get(local)
        if hit is not None and now - hit[0] < REMEMBER:
            return hit[1]
        answer = self.ask_helper(local)
        if len(self.answers) >= REMEMBER_MAX:
            self.answers.clear()
        self.answers[local] = (now, answer)
        return answer

    def start(self) -> None:
        """Fork the helper, its end a SOCK_SEQPACKET socket (one message per lookup and per answer)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            code = QLX_SYS
            try:
                ours.close()
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 0)  # never hold qmail-send's pipes: its EOF and ours must stay theirs
                os.dup2(null, 1)
                from pyqmail.lib.spawn.localworkers import close_all_but
                close_all_but(theirs.fileno())
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                serve(theirs)
                code = 0
            finally:
                os._exit(code)
        theirs.close()
        self.sock, self.pid = ours, pid

    def stop(self) -> None:
        """Kill the helper (it may be stuck in the lookup) and forget it; the spawner's reaping collects it."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
            self.pid = 0

    def ask_helper(self, local: bytes) -> users.Assignment:
        """Return the passwd rules' Assignment for local from the helper; Exit with qmail-getpw's code, or
        QLX_SYS when the helper did not answer within the timeout (it is then replaced) or cannot be started."""
        for attempt in range(2):  # a helper that died since the last lookup is replaced once
            if self.sock is None:
                try:
                    self.start()
                except OSError:
                    raise Exit(QLX_SYS)
            assert self.sock is not None
            try:
                self.sock.send(local)
                if not select.select([self.sock], [], [], self.timeout)[0]:
                    self.stop()
                    raise Exit(QLX_SYS)
                data = self.sock.recv(ANSWER_MAX)
            except OSError:
                data = b""
            if data:
                return decode_answer(data)
            self.stop()
        raise Exit(QLX_SYS)
