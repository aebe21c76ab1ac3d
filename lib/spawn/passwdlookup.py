"""qmail-getpw's passwd rules asked of helper processes of qmail-lspawn's without waiting for them: a lookup that
does not return (an NSS source that hangs, a home on an NFS server that stopped answering: the rules stat the home)
holds up only the deliveries waiting for it, for at most TIMEOUT seconds, while qmail-lspawn's loop goes on with the
others; qmail runs qmail-getpw in each delivery's own child, which pyqmail's reused workers cannot (the worker is
chosen by the uid the lookup finds). Up to HELPERS helpers answer at once, one lookup each; more lookups wait their
turn. The round trip costs a context switch each way, so answers are remembered for up to REMEMBER seconds while
/etc/passwd is the same file, as users/cdb answers are while users/cdb is."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import deque

from pyqmail.lib.config import getpw, users
from pyqmail.lib.util.exits import QLX_NOMEM, QLX_SYS, Exit

TIMEOUT = 5.0  # seconds a delivery waits for its lookup before it is deferred (and the helper asking it replaced)
HELPERS = 4  # helpers at once: a lookup that hangs (one NFS home) leaves the others to the rest
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


class Lookup:
    """One local part being looked up: the deliveries (tokens) waiting for it and when they are deferred."""

    __slots__ = ("local", "deadline", "tokens", "key", "tries")

    def __init__(self, local: bytes, deadline: float, token: int, key: tuple[int, ...] | None) -> None:
        self.local, self.deadline, self.tokens, self.key = local, deadline, [token], key
        self.tries = 0  # helpers that died under it: it is asked once more of a new one


class Helper:
    """One helper process: its pid, our end of its socket and the lookup it is answering (None: idle)."""

    __slots__ = ("pid", "sock", "lookup")

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid, self.sock = pid, sock
        self.lookup: Lookup | None = None


class PasswdLookups:
    """qmail-lspawn's end: ask() sends a lookup and returns; the spawner waits on fds() until timeout() along with
    everything else, and ready() names the deliveries (tokens) decided, whose ask() again gets the answer."""

    def __init__(self, timeout: float = TIMEOUT, helpers: int = HELPERS) -> None:
        self.timeout_s = timeout
        self.max_helpers = helpers
        self.helpers: list[Helper] = []
        self.waiting: dict[bytes, Lookup] = {}  # by local part: every lookup asked and not yet decided
        self.queue: deque[Lookup] = deque()  # those no helper has yet (all were busy)
        # by token: its local part and answer (or exit code), for its ask() again; a token whose delivery no longer
        # asks (users/cdb answered it meanwhile) may leave one, which the local part keeps from another's ask
        self.decided: dict[int, tuple[bytes, users.Assignment | int]] = {}
        self.unsaid: list[int] = []  # tokens decided outside ready() (no helper could start), for the next one
        self.answers: dict[bytes, tuple[float, users.Assignment]] = {}
        self.passwd_key: tuple[int, ...] | None = None

    def ask(self, local: bytes, token: int) -> users.Assignment | None:
        """Return the passwd rules' Assignment for local: the one decided for token, or one remembered if
        /etc/passwd is the same file and it is younger than REMEMBER; else send a lookup and return None (ready()
        names token once it is decided). Exit with qmail-getpw's code, or QLX_SYS when no answer came within
        the timeout or no helper could be started (a failure is never remembered)."""
        decided = self.decided.pop(token, None)
        if decided is not None and decided[0] == local:
            if isinstance(decided[1], int):
                raise Exit(decided[1])
            return decided[1]
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
        lookup = self.waiting.get(local)
        if lookup is not None:  # already asked for another delivery: this one takes the same answer
            lookup.tokens.append(token)
            return None
        lookup = self.waiting[local] = Lookup(local, now + self.timeout_s, token, key)
        self.queue.append(lookup)
        self.unsaid += self.dispatch()
        return None

    def fds(self) -> list[int]:
        """The sockets of helpers answering a lookup."""
        return [h.sock.fileno() for h in self.helpers if h.lookup is not None]

    def timeout(self) -> float | None:
        """Seconds until the next lookup's deadline (0: something is decided already); None: none is waiting."""
        if self.unsaid:
            return 0.0
        if not self.waiting:
            return None
        return max(0.0, min(lookup.deadline for lookup in self.waiting.values()) - time.monotonic())

    def ready(self, fds: list[int]) -> list[int]:
        """Take the answers of the helpers whose sockets are in fds, defer the lookups past their deadline and
        send those waiting their turn; return the tokens decided (each ask() once more takes its answer)."""
        out, self.unsaid = self.unsaid, []
        for h in list(self.helpers):
            lookup = h.lookup
            if lookup is None or h.sock.fileno() not in fds:
                continue
            try:
                data = h.sock.recv(ANSWER_MAX)
            except OSError:
                data = b""
            h.lookup = None
            if not data:
                out += self.lost(h, lookup)
                continue
            try:
                answer: users.Assignment | int = decode_answer(data)
            except Exit as e:
                answer = e.code
            if not isinstance(answer, int) and lookup.key == self.passwd_key:
                if len(self.answers) >= REMEMBER_MAX:
                    self.answers.clear()
                self.answers[lookup.local] = (time.monotonic(), answer)
            out += self.decide(lookup, answer)
        now = time.monotonic()
        for h in list(self.helpers):
            if h.lookup is not None and h.lookup.deadline <= now:  # it may be stuck in the lookup: replaced
                lookup = h.lookup
                self.stop(h)
                out += self.decide(lookup, QLX_SYS)
        if self.queue and any(lookup.deadline <= now for lookup in self.queue):
            late = [lookup for lookup in self.queue if lookup.deadline <= now]
            self.queue = deque(lookup for lookup in self.queue if lookup.deadline > now)
            for lookup in late:
                out += self.decide(lookup, QLX_SYS)
        return out + self.dispatch()

    def decide(self, lookup: Lookup, answer: users.Assignment | int) -> list[int]:
        """Keep a lookup's answer (or exit code) for each delivery waiting for it; return their tokens."""
        del self.waiting[lookup.local]
        for token in lookup.tokens:
            self.decided[token] = (lookup.local, answer)
        return lookup.tokens

    def lost(self, helper: Helper, lookup: Lookup) -> list[int]:
        """A helper died under lookup: forget it and put the lookup first in line for a new one, once; return the
        tokens decided (QLX_SYS, the second time)."""
        self.stop(helper)
        lookup.tries += 1
        if lookup.tries < 2:
            self.queue.appendleft(lookup)
            return []
        return self.decide(lookup, QLX_SYS)

    def dispatch(self) -> list[int]:
        """Send the lookups waiting their turn to idle helpers, starting helpers up to the bound; return the
        tokens of those decided instead (QLX_SYS: a helper could not be started, or died twice)."""
        out: list[int] = []
        while self.queue:
            helper = next((h for h in self.helpers if h.lookup is None), None)
            if helper is None and len(self.helpers) < self.max_helpers:
                try:
                    helper = self.start()
                except OSError:
                    out += self.decide(self.queue.popleft(), QLX_SYS)
                    continue
            if helper is None:
                break
            lookup = self.queue.popleft()
            try:
                helper.sock.send(lookup.local)
            except OSError:  # it died while idle
                out += self.lost(helper, lookup)
                continue
            helper.lookup = lookup
        return out

    def start(self) -> Helper:
        """Fork a helper, its end a SOCK_SEQPACKET socket (one message per lookup and per answer)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
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
        helper = Helper(pid, ours)
        self.helpers.append(helper)
        return helper

    def stop(self, helper: Helper) -> None:
        """Kill a helper (it may be stuck in the lookup) and forget it; the spawner's reaping collects it."""
        self.helpers.remove(helper)
        helper.sock.close()
        try:
            os.kill(helper.pid, signal.SIGKILL)
        except OSError:
            pass

    def close(self) -> list[int]:
        """Kill every helper; return their pids (for a caller that reaps them itself)."""
        pids = [h.pid for h in self.helpers]
        for h in list(self.helpers):
            self.stop(h)
        return pids
