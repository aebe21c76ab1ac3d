"""qmail-send's control socket, lock/qctl/socket, and the changes it makes for qmail-qctl (qmail-qctl(8)):
hold, release, delete, requeue, flush; and damaged messages set aside in corrupt/ (qmail-send(8)).

Only root and qmail-send's user reach the socket (lock/qctl/ is that user's, mode 0700). A connection sends one
request (a netstring, lib/queue/qadmin) and gets one reply, then is closed. A request on a message waits, over
as many turns of the loop as it takes, until nothing delivers the message: its schedule entries are taken out
(remembered), a pass reading it is ended, its recipients waiting at qmgr destinations are let go, a message
kept in memory is spilled to files; deliveries already running are waited for, never cut short. Then the
files change (qadmin) and the message is scheduled again as before, unless held or finished."""

from __future__ import annotations

import os
import socket
import time

from pyqmail.lib.queue import qadmin
from pyqmail.lib.queue.queue import split_name
from pyqmail.lib.send import bounce, sendlog
from pyqmail.lib.send.sendchannel import Batch
from pyqmail.lib.util import netstring

MYPY = False
if MYPY:  # typing only: never imported at run time
    from pyqmail.lib.send.sendstate import SendState

CONN_MAX = 8  # connections at once; more wait in the listen backlog
READ_TIMEOUT = 10  # seconds a connection may take to send its request
WAIT_MAX = 300  # seconds a request waits for a message to be preprocessed or its deliveries to end


class Action:
    """One message's part of a request, and the schedule entries taken out for it ({channel: due})."""
    __slots__ = ("n", "saved")

    def __init__(self, n: int) -> None:
        self.n = n
        self.saved: dict[str, int] = {}


class Conn:
    """One qmail-qctl connection: its socket, the request's bytes, then its actions and reply lines."""
    __slots__ = ("sock", "data", "deadline", "request", "actions", "reply")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock, self.data, self.deadline = sock, b"", now + READ_TIMEOUT
        self.request: qadmin.Request | None = None
        self.actions: list[Action] = []
        self.reply: list[bytes] = []


def qctl_line(what: str, n: int | None = None) -> bytes:
    """Return the log line of an administrator's change: `qctl: <what>[ msg N]`."""
    return b"qctl: %s%s\n" % (what.encode(), b"" if n is None else b" msg %d" % n)


def corrupt_line(n: int, where: str, why: str) -> bytes:
    """Return `warning: damaged message N moved to queue/<where>: <why>`."""
    return b"warning: damaged message %d moved to queue/%s: %s\n" % (n, where.encode(), why.encode())


class Control:
    """The listening socket, the connections, and the messages waiting to be set aside."""

    def __init__(self, send: SendState) -> None:
        self.send = send
        self.conns: list[Conn] = []
        self.damaged: dict[int, tuple[Action, str]] = {}  # info/N damaged: set aside once nothing delivers it
        self.listener: socket.socket | None = None
        try:
            try:
                os.unlink(qadmin.SOCKET)
            except FileNotFoundError:
                pass
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(qadmin.SOCKET)
            s.listen(CONN_MAX)
            s.setblocking(False)
            self.listener = s
        except OSError:
            send.log(b"warning: unable to listen on queue/%s: qmail-qctl cannot reach qmail-send\n"
                     % qadmin.SOCKET.encode())

    def note_damaged(self, n: int, why: str) -> None:
        """A pass found message n's channel file damaged: set it aside once nothing delivers it."""
        if n not in self.damaged:
            self.damaged[n] = (Action(n), why)

    def fds(self) -> list[int]:
        """Return the descriptors the loop selects on for reading."""
        out = [c.sock.fileno() for c in self.conns if c.request is None]
        if self.listener is not None and len(self.conns) < CONN_MAX:
            out.append(self.listener.fileno())
        return out

    def wakeup(self, wake: int, recent: int) -> int:
        """Return the earliest time the loop must turn for the requests waiting (a second from now)."""
        if any(c.actions or c.request is None for c in self.conns) or self.damaged:
            return min(wake, recent + 1)
        return wake

    def step(self, ready: list[int], recent: int) -> None:
        """Take new connections and requests, then move every waiting request and damaged message on."""
        send = self.send
        if self.listener is not None and self.listener.fileno() in ready:
            try:
                sock, _ = self.listener.accept()
                sock.setblocking(False)
                self.conns.append(Conn(sock, time.monotonic()))
            except OSError:
                pass
        for n in list(send.info_damaged):
            if n not in self.damaged:
                self.damaged[n] = (Action(n), "info/%d has no sender (F) record" % n)
        for n, (action, why) in list(self.damaged.items()):
            if self.quiet(action):
                del self.damaged[n]
                send.info_damaged.discard(n)
                self.set_aside(n, why, foop=True)
        for c in list(self.conns):
            if c.request is None:
                if c.sock.fileno() in ready:
                    self.read(c)
                elif time.monotonic() > c.deadline:
                    self.close(c)
                continue
            self.advance(c, recent)

    def read(self, c: Conn) -> None:
        """Read a request's bytes; once complete, start it (a bad one is answered and closed)."""
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            return self.close(c)
        if not data:
            return self.close(c)
        c.data += data
        if c.data.isdigit() and len(c.data) <= netstring.MAX_DIGITS:
            return  # the length so far: the colon is to come
        try:
            payload, _ = netstring.decode(c.data, qadmin.REQUEST_MAX)
        except netstring.NetstringError as e:
            if e.kind == "format" and "truncated" in str(e) and len(c.data) <= qadmin.REQUEST_MAX + 16:
                return  # more to come
            return self.answer(c, [qadmin.result_line(b"D", None, "bad request: %s" % e)])
        try:
            c.request = qadmin.decode_request(payload)
        except qadmin.BadRequest as e:
            return self.answer(c, [qadmin.result_line(b"D", None, "bad request: %s" % e)])
        self.start(c)

    def start(self, c: Conn) -> None:
        """Turn a request into its actions (ALL: every message there is now); flush at once."""
        r = c.request
        assert r is not None
        send = self.send
        if send.exitasap:
            return self.answer(c, [qadmin.result_line(b"Z", None, "qmail-send is exiting")])
        if r.verb == "flush":
            self.flush()
            return self.answer(c, [qadmin.result_line(b"K", None, "flushed")])
        ids = r.ids
        if ids is None:
            found = set(qadmin.held_numbers()) if r.verb == "release" else (
                set(qadmin.queued_numbers()) | set(send.inmemory.messages) | (
                    set(qadmin.held_numbers()) if r.verb == "delete" else set()))
            ids = sorted(n for n in found if not self.ended(n))
            if not ids:
                return self.answer(c, [qadmin.result_line(b"K", None, "no message to %s" % r.verb)])
        c.actions = [Action(n) for n in ids]
        c.deadline = time.monotonic() + WAIT_MAX
        self.advance(c, send.recent)

    def advance(self, c: Conn, recent: int) -> None:
        """Carry out each action whose message is quiet; answer once all are done."""
        r = c.request
        assert r is not None
        late = time.monotonic() > c.deadline or self.send.exitasap
        for action in list(c.actions):
            if r.verb != "release" and not self.quiet(action):
                if not late:
                    continue
                self.restore(action)
                line = qadmin.result_line(b"Z", action.n, "still being delivered or preprocessed: try again")
            else:
                line = self.act(r, action, recent)
            c.reply.append(line)
            c.actions.remove(action)
        if not c.actions:
            self.answer(c, c.reply)

    def quiet(self, action: Action) -> bool:
        """Take message n out of every schedule and pass; True once nothing delivers or preprocesses it."""
        send, n = self.send, action.n
        if send.inmemory.owns(n):
            send.inmemory.spill(n)  # from here on an ordinary message, with info/N and its channel file
        for name, ch in send.channels.items():
            if ch.job is not None and ch.job.id == n and not ch.qmgr:
                ch.end_pass(ch.job, False)
            ch.withdraw(n)
            dues = ch.schedule.remove(n)
            if dues:
                action.saved[name] = min(dues + ([action.saved[name]] if name in action.saved else []))
        for ch in send.channels.values():
            if ch.job is not None and ch.job.id == n:
                return False
            for slot in ch.slots:
                if slot is not None and (slot.items[0] if isinstance(slot, Batch) else slot).job.id == n:
                    return False
        return n not in send.todo.cleaning and not qadmin.exists("todo/%d" % n)

    def restore(self, action: Action) -> None:
        """Put the schedule entries taken out back (the request gave up on this message)."""
        for name, due in action.saved.items():
            self.send.channels[name].schedule.add(action.n, due)
        action.saved.clear()

    def reschedule(self, action: Action, due: int | None) -> None:
        """Schedule a message again after a change: its channels with a file that were scheduled (at due if
        given, else as before); done at once if no channel file is left. A held message stays out."""
        send, n = self.send, action.n
        if qadmin.exists(qadmin.hold_name(n)) or not qadmin.exists(split_name("info", n)):
            return
        left = qadmin.channels_of(n)
        for name in left:
            if name in action.saved:
                send.channels[name].schedule.add(n, action.saved[name] if due is None else due)
        if not left:
            send.pqdone.add(n, send.recent)
        action.saved.clear()

    def act(self, r: qadmin.Request, action: Action, recent: int) -> bytes:
        """Carry out one action on a quiet message; return its reply line."""
        send, n = self.send, action.n
        if self.ended(n):
            return qadmin.result_line(b"D", n, "no such message in the queue")
        try:
            if r.verb == "hold":
                if qadmin.exists(split_name("info", n)) and not qadmin.to_do(n):
                    line = qadmin.result_line(b"K", n, "nothing left to deliver: not held")
                else:
                    line = qadmin.hold(n)
                if line.endswith(b": held\n"):
                    send.log(qctl_line("hold", n))
                    action.saved.clear()
                    return line
            elif r.verb == "release":
                line = qadmin.release(n)
                if line.startswith(b"K"):
                    send.log(qctl_line("release", n))
                    left = qadmin.channels_of(n)
                    for name in left:
                        send.channels[name].schedule.add(n, recent)
                    if not left:
                        send.pqdone.add(n, recent)
                return line
            elif r.verb == "requeue":
                if qadmin.exists(qadmin.hold_name(n)):
                    line = qadmin.result_line(b"D", n, "held: release it instead")
                elif not qadmin.exists(split_name("info", n)):
                    line = qadmin.result_line(b"D", n, "no such message in the queue")
                else:
                    moved = qadmin.reroute(n, send.rewriter.rewrite) if r.reroute else 0
                    for name in qadmin.channels_of(n):
                        action.saved.setdefault(name, recent)  # local/N may be new
                    send.log(qctl_line("requeue", n))
                    self.reschedule(action, recent)
                    return qadmin.result_line(b"K", n, "requeued" + ("" if not moved else ", %d recipient%s now "
                                                                     "local" % (moved, "" if moved == 1 else "s")))
            else:
                line = self.delete(r, action)
        except OSError as e:
            line = qadmin.result_line(b"Z", n, "trouble: %s" % e)
        self.reschedule(action, None)
        return line

    def ended(self, n: int) -> bool:
        """True once `end msg N` is logged: info/N is then on its way out, and the message no longer queued."""
        return self.send.unlinker.busy(split_name("info", n))

    def delete(self, r: qadmin.Request, action: Action) -> bytes:
        """Delete a quiet message's recipients (all, or the request's); return the reply line."""
        send, n = self.send, action.n
        held = qadmin.exists(qadmin.hold_name(n))
        if not held and not qadmin.exists(split_name("info", n)):
            return qadmin.result_line(b"D", n, "no such message in the queue")
        strip = send.rewriter.strip_vdom_prepend
        deleted, left = qadmin.delete(n, r.recipients, r.bounce, entry=lambda rcpt: bounce.entry(
            rcpt, qadmin.DELETED, strip))
        if held and not left:
            qadmin.release(n)  # nothing left to deliver: qmail-send finishes it (bounce, end msg)
            send.pqdone.add(n, send.recent)
        send.log(qctl_line("delete %d recipient%s%s of" % (deleted, "" if deleted == 1 else "s",
                                                          " with a bounce" if r.bounce else ""), n))
        if r.recipients is not None and not deleted:
            return qadmin.result_line(b"D", n, "no such recipient still to do")
        return qadmin.result_line(b"K", n, "%d recipient%s deleted" % (deleted, "" if deleted == 1 else "s"))

    def flush(self) -> None:
        """Make every scheduled message due now and forget every dead destination."""
        send = self.send
        send.log(qctl_line("flush"))
        for ch in send.channels.values():
            ch.schedule.run_all_now(send.recent)
            ch.flush_dead()
        send.pqfail.run_all_now(send.recent)

    def set_aside(self, n: int, why: str, foop: bool) -> bool:
        """Move damaged message n to corrupt/ and log it; have mess/N (and todo/N, unless foop only) removed.
        False (and a warning) if that failed: the message stays where it is."""
        send = self.send
        try:
            where = qadmin.set_aside(n, why)
        except OSError as e:
            send.log(b"warning: unable to move damaged message %d to queue/corrupt: %s\n"
                     % (n, str(e).encode(errors="replace")))
            return False
        send.log(corrupt_line(n, where, why))
        if foop:
            send.clean.ask("foop/%d" % n)
        else:
            send.todo.remove(n, then=lambda: send.clean.ask("foop/%d" % n))
        return True

    def answer(self, c: Conn, lines: list[bytes]) -> None:
        """Send the reply (a netstring of the lines) and close the connection; the turn's log lines first, so
        that qmail-qctl's caller finds the change logged once it has the answer."""
        sendlog.flush_log()
        try:
            c.sock.setblocking(True)
            c.sock.settimeout(1)
            c.sock.sendall(netstring.encode(b"".join(lines)))
        except OSError:
            pass
        self.close(c)

    def close(self, c: Conn) -> None:
        """Close a connection, giving back the schedule entries of actions never done."""
        for action in c.actions:
            self.restore(action)
        c.actions = []
        try:
            c.sock.close()
        except OSError:
            pass
        if c in self.conns:
            self.conns.remove(c)

    def shutdown(self) -> None:
        """At exit: answer what waits (try again), close the socket and remove it."""
        for c in list(self.conns):
            if c.request is not None:
                c.reply += [qadmin.result_line(b"Z", a.n, "qmail-send is exiting: try again") for a in c.actions]
                self.close_actions(c)
                self.answer(c, c.reply)
            else:
                self.close(c)
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            try:
                os.unlink(qadmin.SOCKET)
            except OSError:
                pass

    def close_actions(self, c: Conn) -> None:
        """Give back the schedule entries of a connection's actions."""
        for action in c.actions:
            self.restore(action)
        c.actions = []
