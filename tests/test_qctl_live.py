"""qmail-qctl's changes on a live system (qmail-send delivering, a qmail-remote stand-in that records every
attempt, Maildirs): hold, flush, release, requeue, delete (recipients or all, with a bounce or not) through
qmail-send's control socket, the same on the files while qmail-send is stopped, and hold/release ALL under
load with nothing lost or delivered twice (qmail-qctl(8))."""

import os
import re
import subprocess
import threading
import time

import pytest

from conftest import program, qenv, queue_message
from mailsystem import MailSystem, assign_users, make_home, make_system_tree
from test_qmail_qctl import q, qctl


def messes(tree):
    """Return the message numbers in mess/."""
    return {int(p.name) for d in q(tree, "mess").iterdir() for p in d.iterdir()}


def qput(tree, message, sender=b"me@test.example", rcpts=()):
    """Queue one message with the real qmail-queue while qmail-send runs; return its number (from mess/:
    these messages are deferred, so they stay)."""
    before = messes(tree)
    env = b"F" + sender + b"\0" + b"".join(b"T" + r + b"\0" for r in rcpts) + b"\0"
    assert queue_message(tree, message, env) == 0
    [n] = messes(tree) - before
    return n


def run(tree, name, *args):
    """Run an installed program on tree; return its stdout."""
    return subprocess.run([program(name), *args], env=qenv(tree), capture_output=True, check=True).stdout


def wait_for(condition, what, timeout=30):
    """Wait until condition() is true, or fail saying what was awaited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("never happened: %s" % what)


class Live:
    """A running system: tree, qmail-send, joe's Maildir, and the remote stand-in's record and switch."""

    def __init__(self, world_tmp, procs, settings=None):
        self.world, self.procs = world_tmp, procs
        self.tree = make_system_tree(world_tmp / "qmail")
        self.record = world_tmp / "remote-attempts"
        self.record.write_text("")
        self.record.chmod(0o666)
        self.accept = world_tmp / "remote-accepts"  # exists: the stand-in accepts, else it defers
        self.fake = world_tmp / "fake-remote"
        self.fake.write_text("#!/bin/sh\ncat >/dev/null\necho \"$3\" >>%s\nif [ -e %s ]; then "
                             "printf 'rok\\n\\0Kaccepted.\\n\\0'; else printf 'Zno remote deliveries now.\\n\\0'; fi\n"
                             % (self.record, self.accept))
        self.fake.chmod(0o755)
        self.home = make_home(world_tmp, "joe")
        assign_users(self.tree, [("=", "joe", self.home, "", "")])
        for name, value in (settings or {}).items():
            (self.tree / "control" / name).write_text(value)
        self.start()

    def start(self):
        """Start qmail-send (again)."""
        self.system = MailSystem(self.procs, self.tree, "./Maildir/", env={"QMAILREMOTE": self.fake})

    def attempts(self, recip):
        """How many times the stand-in was asked to deliver to recip."""
        return self.record.read_text().split().count(recip)

    def maildir(self):
        """Return joe's delivered messages' bytes."""
        new = self.home / "Maildir" / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())]

    def log(self):
        """Return qmail-send's log so far."""
        return self.system.log()


@pytest.fixture
def live(world_tmp, procs):
    """A running system whose remote deliveries are deferred until live.accept exists."""
    return Live(world_tmp, procs)


def test_hold_flush_release(live):
    tree = live.tree
    n = qput(tree, b"Subject: held\n\nx\n", rcpts=(b"r1@far.example",))
    live.system.wait_log(b"msg %d to remote r1@far.example" % n)
    live.system.wait_log(b": deferral:")
    assert qctl(tree, "-h", str(n)) == (0, b"#%d: held\n" % n, b"")
    # qmail-send writes the turn's log lines before it answers (the log is a file here: no pipe between)
    assert b"qctl: hold msg %d\n" % n in live.log()
    assert q(tree, "hold", n).exists() and not q(tree, "info", n % 23, n).exists()
    assert b"held" in qctl(tree, "-p")[1].splitlines()[0]
    assert run(tree, "qmail-qstat") == (b"messages in queue: 1\nmessages in queue but not yet preprocessed: 0\n"
                                        b"messages in queue but held: 1\n")
    assert re.match(rb".* GMT  #%d  \d+  <me@test.example>  held\n\tremote\tr1@far.example\n$" % n,
                    run(tree, "qmail-qread"))
    assert run(tree, "sendmail", "-bp") == run(tree, "qmail-qread")
    assert qctl(tree, "-h", "#%d" % n) == (0, b"#%d: held already\n" % n, b"")
    assert qctl(tree, "-r", str(n)) == (100, b"#%d: held: release it instead\n" % n, b"")
    assert qctl(tree, "-s") == (0, b"", b"")
    # a flush makes everything due: another deferred message is tried again, the held one is not
    m = qput(tree, b"Subject: other\n\nx\n", rcpts=(b"r2@far.example",))
    wait_for(lambda: live.attempts("r2@far.example") == 1, "first try of r2")
    assert qctl(tree, "-f") == (0, b"flushed\n", b"")
    wait_for(lambda: live.attempts("r2@far.example") == 2, "r2 tried again after the flush")
    assert live.attempts("r1@far.example") == 1
    live.accept.write_text("")
    assert qctl(tree, "-H", str(n)) == (0, b"#%d: released\n" % n, b"")
    live.system.wait_log(b"end msg %d\n" % n)
    assert b"qctl: release msg %d\n" % n in live.log()
    assert live.attempts("r1@far.example") == 2
    assert qctl(tree, "-H", str(n)) == (100, b"#%d: not held\n" % n, b"")
    assert qctl(tree, "-r", str(m)) == (0, b"#%d: requeued\n" % m, b"")
    live.system.wait_log(b"end msg %d\n" % m)
    wait_for(lambda: run(tree, "qmail-qstat") == b"messages in queue: 0\nmessages in queue but not yet "
                                               b"preprocessed: 0\n", "qmail-clean removing the mess files")
    assert run(tree, "qmail-qread") == b""
    assert live.system.stop() == 0


def test_delete_recipients_then_all_with_a_bounce(live):
    tree = live.tree
    n = qput(tree, b"Subject: doomed\n\nx\n", sender=b"joe@test.example",
             rcpts=(b"a@far.example", b"b@far.example"))
    wait_for(lambda: live.attempts("a@far.example") == live.attempts("b@far.example") == 1, "first tries")
    live.system.wait_log(b": deferral:", count=2)
    assert qctl(tree, "-d", str(n), "-R", "a@far.example") == (0, b"#%d: 1 recipient deleted\n" % n, b"")
    assert b"qctl: delete 1 recipient of msg %d\n" % n in live.log()  # logged before the answer
    assert qctl(tree, "-d", str(n), "-R", "a@far.example")[0] == 100  # done already
    assert qctl(tree, "-r", str(n)) == (0, b"#%d: requeued\n" % n, b"")
    wait_for(lambda: live.attempts("b@far.example") == 2, "b tried again")
    assert live.attempts("a@far.example") == 1
    assert qctl(tree, "-d", str(n), "-b") == (0, b"#%d: 1 recipient deleted\n" % n, b"")
    live.system.wait_log(b"end msg %d\n" % n)
    wait_for(lambda: len(live.maildir()) == 1, "the bounce in joe's Maildir")
    [bounce] = live.maildir()
    assert b"<b@far.example>:\nThis message was deleted from the queue by the administrator." in bounce
    assert b"<a@far.example>" not in bounce
    assert b"Subject: doomed" in bounce
    # at once: info/N goes in a thread after `end msg N`, and a message on its way out is no longer queued
    assert qctl(tree, "-d", str(n)) == (100, b"#%d: no such message in the queue\n" % n, b"")
    assert live.attempts("b@far.example") == 2
    assert live.system.stop() == 0


def test_delete_without_a_bounce_and_bad_requests(live):
    tree = live.tree
    n = qput(tree, b"Subject: gone\n\nx\n", sender=b"joe@test.example", rcpts=(b"c@far.example",))
    live.system.wait_log(b": deferral:")
    assert qctl(tree, "-h", "ALL") == (0, b"#%d: held\n" % n, b"")
    assert qctl(tree, "-d", "ALL") == (0, b"#%d: 1 recipient deleted\n" % n, b"")
    live.system.wait_log(b"end msg %d\n" % n)
    assert not q(tree, "hold", n).exists()
    wait_for(lambda: not q(tree, "mess", n % 23, n).exists(), "qmail-clean removing mess/N after end msg")
    assert qctl(tree, "-h", "99999999")[0] == 100
    assert qctl(tree, "-H", "ALL") == (0, b"no message to release\n", b"")
    assert live.maildir() == []  # no bounce
    assert live.system.stop() == 0


def test_changes_while_qmail_send_is_stopped(live):
    tree = live.tree
    held = qput(tree, b"Subject: a\n\nx\n", rcpts=(b"d@far.example",))
    doomed = qput(tree, b"Subject: b\n\nx\n", sender=b"joe@test.example", rcpts=(b"e@far.example",))
    live.system.wait_log(b": deferral:", count=2)
    assert live.system.stop() == 0
    arrival = q(tree, "info", held % 23, held).stat().st_mtime
    assert qctl(tree, "-h", str(held)) == (0, b"#%d: held\n" % held, b"")
    assert q(tree, "hold", held).stat().st_mtime == arrival  # a held message keeps its age
    assert qctl(tree, "-d", str(doomed), "-b") == (0, b"#%d: 1 recipient deleted\n" % doomed, b"")
    assert q(tree, "bounce", doomed).stat().st_uid == q(tree, "bounce").stat().st_uid
    fresh = qput(tree, b"Subject: c\n\nx\n", rcpts=(b"f@far.example",))
    assert qctl(tree, "-h", str(fresh)) == (111, b"#%d: not preprocessed yet (qmail-send does that)\n" % fresh, b"")
    assert qctl(tree, "-f")[0] == 0
    assert qctl(tree, "-s") == (0, b"", b"")
    live.accept.write_text("")
    live.start()
    live.system.wait_log(b"end msg %d\n" % doomed)
    live.system.wait_log(b"end msg %d\n" % fresh)
    wait_for(lambda: len(live.maildir()) == 1, "the bounce")
    assert live.attempts("d@far.example") == 1 and live.attempts("e@far.example") == 1
    assert qctl(tree, "-H", str(held)) == (0, b"#%d: released\n" % held, b"")
    live.system.wait_log(b"end msg %d\n" % held)
    assert b"msg %d to remote d@far.example" % held in live.log()
    assert live.attempts("d@far.example") == 2
    assert live.system.stop() == 0


def subject(data):
    """Return a message's Subject value."""
    return re.search(rb"^Subject: (.*)$", data, re.M).group(1)


def test_hold_and_release_all_under_load(world_tmp, procs):
    live = Live(world_tmp, procs, {"concurrencylocal": "1\n"})
    (live.home / ".qmail").write_text("|sleep 0.3\n./Maildir/\n")  # slower than the feeding: a queue builds up
    os.chown(live.home / ".qmail", live.home.stat().st_uid, live.home.stat().st_gid)
    tree = live.tree
    total = 60
    fed = []

    def feed(start):
        for i in range(start, total, 2):
            env = b"Fme@test.example\0Tjoe@test.example\0\0"
            assert queue_message(tree, b"Subject: load %d\n\nx\n" % i, env) == 0
            fed.append(i)
    feeders = [threading.Thread(target=feed, args=(k,)) for k in (0, 1)]
    for t in feeders:
        t.start()
    out = b""
    try:
        wait_for(lambda: len(fed) >= 20, "a queue building up", timeout=60)
        code, out, err = qctl(tree, "-h", "ALL")
        assert code == 0, (out, err)
    finally:
        for t in feeders:
            t.join()
    held = {int(m) for m in re.findall(rb"^#(\d+): held", out, re.M)}
    assert held, out
    held_subjects = {subject(q(tree, "mess", n % 23, n).read_bytes()) for n in held}
    wait_for(lambda: len(live.maildir()) == total - len(held), "every message not held delivered", timeout=120)
    assert not held_subjects & {subject(m) for m in live.maildir()}
    assert sorted(int(p.name) for p in q(tree, "hold").iterdir()) == sorted(held)
    code, out, _ = qctl(tree, "-H", "ALL")
    assert code == 0 and out.count(b"released") == len(held)
    wait_for(lambda: len(live.maildir()) >= total, "every message delivered", timeout=120)
    subjects = [subject(m) for m in live.maildir()]
    assert sorted(subjects) == sorted(b"load %d" % i for i in range(total))  # each once, none lost
    assert live.log().count(b"qctl: hold msg") == len(held)
    assert live.system.stop() == 0


def test_control_socket_refuses_junk_and_keeps_serving(live):
    import socket
    path = str(q(live.tree, "lock", "qctl", "socket"))
    assert (q(live.tree, "lock", "qctl").stat().st_mode & 0o777) == 0o700

    def ask(data, close_early=False):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(20)
        s.connect(path)
        if close_early:
            s.close()
            return b""
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        s.close()
        return reply
    assert ask(b"xyz,") == b"37:Dbad request: netstring has no colon\n,"
    assert b"Dbad request" in ask(b"99999999:")
    assert b"Dbad request" in ask(b"7:unknown,")
    assert b"Dbad request" in ask(b"10:hold\0x,y\x000,")
    ask(b"", close_early=True)
    assert ask(b"6:flus") == b""  # cut off: closed without an answer, nothing done
    assert qctl(live.tree, "-f") == (0, b"flushed\n", b"")
    assert b"alert:" not in live.log()
    assert live.system.stop() == 0


def test_flush_forgets_dead_destinations(world_tmp, procs):
    live = Live(world_tmp, procs, {"scheduler": "qmgr\n"})
    live.fake.write_text("#!/bin/sh\ncat >/dev/null\necho \"$3\" >>%s\nif [ -e %s ]; then "
                         "printf 'rok\\n\\0Kaccepted.\\n\\0'; else "
                         "printf \"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\\n\\0\"; fi\n"
                         % (live.record, live.accept))
    tree = live.tree
    assert live.system.stop() == 0  # queued together, so that their failures come in one cohort
    ns = [qput(tree, b"Subject: dead\n\nx\n", rcpts=(b"g%d@far.example" % i,)) for i in range(8)]
    live.start()
    live.system.wait_log(b"warning: destination far.example is dead: ")
    live.accept.write_text("")
    assert qctl(tree, "-f") == (0, b"flushed\n", b"")
    live.system.wait_log(b"qctl: flush\ndestination far.example is alive again\n")
    for n in ns:  # the flush made every one due: each delivered, once, now that the destination is back
        live.system.wait_log(b"end msg %d\n" % n)
    assert sorted(live.record.read_text().split()).count("g0@far.example") <= 2
    assert sum(live.attempts("g%d@far.example" % i) for i in range(8)) <= 16
    assert live.log().count(b": success:") == 8
    assert live.system.stop() == 0


def test_hold_takes_recipients_waiting_at_a_destination_under_qmgr(world_tmp, procs):
    # under qmgr a message's recipients wait at their destination's window (issue 19): a hold takes them out
    # of the waiting entries and the job list, the others go on, and the released message is delivered once
    live = Live(world_tmp, procs, {"scheduler": "qmgr\n", "qmgrinitialconcurrency": "1\n",
                                   "qmgrconcurrencylimit": "1\n"})
    live.fake.write_text("#!/bin/sh\ncat >/dev/null\necho \"$3\" >>%s\nsleep 0.4\n"
                         "printf 'rok\\n\\0Kaccepted.\\n\\0'\n" % live.record)
    tree = live.tree
    assert live.system.stop() == 0  # queued together: all of them wait at far.example's window of 1
    ns = [qput(tree, b"Subject: wait %d\n\nx\n" % i, rcpts=(b"w%d@far.example" % i,)) for i in range(8)]
    live.start()
    started = live.system.wait_log(b"starting delivery")
    # the scan's order is not the queueing order: hold the last message queued that has not started yet
    k = max(i for i, n in enumerate(ns) if b": msg %d to " % n not in started)
    last = ns[k]
    assert qctl(tree, "-h", str(last)) == (0, b"#%d: held\n" % last, b""), (ns, live.log().decode())
    for n in ns:
        if n != last:
            live.system.wait_log(b"end msg %d\n" % n)
    assert live.attempts("w%d@far.example" % k) == 0
    assert q(tree, "hold", last).exists()
    assert qctl(tree, "-H", str(last)) == (0, b"#%d: released\n" % last, b"")
    live.system.wait_log(b"end msg %d\n" % last)
    assert [live.attempts("w%d@far.example" % i) for i in range(8)] == [1] * 8
    assert b"alert:" not in live.log()
    assert live.system.stop() == 0


def test_requeue_reads_the_routing_again(live):
    # far.example becomes one of this host's domains: -r -u moves its waiting remote recipients to local/N
    tree = live.tree
    n = qput(tree, b"Subject: moved\n\nx\n", rcpts=(b"joe@far.example", b"joe@other.example"))
    live.system.wait_log(b": deferral:", count=2)
    assert qctl(tree, "-r", str(n), "-b")[0] == 100  # -b and -u belong to -d and -r
    assert qctl(tree, "-d", str(n), "-u")[0] == 100
    (tree / "control" / "locals").write_text("test.example\nfar.example\n")
    os.kill(live.system.pid, 1)  # qmail-send rereads locals on HUP
    assert qctl(tree, "-r", str(n)) == (0, b"#%d: requeued\n" % n, b"")  # without -u: the routing stays
    wait_for(lambda: live.attempts("joe@far.example") == 2, "joe@far.example retried remotely")
    assert qctl(tree, "-r", str(n), "-u") == (0, b"#%d: requeued, 1 recipient now local\n" % n, b"")
    wait_for(lambda: len(live.maildir()) == 1, "joe@far.example delivered locally")
    assert b"Subject: moved" in live.maildir()[0]
    assert live.attempts("joe@far.example") == 2 and live.attempts("joe@other.example") >= 2
    assert q(tree, "remote", n % 23, n).read_bytes().count(b"T") == 1  # other.example still remote
    # the same on the files while qmail-send is stopped
    assert live.system.stop() == 0
    m = qput(tree, b"Subject: offline\n\nx\n", rcpts=(b"joe@far.example",))
    local_dir = q(tree, "local", m % 23)
    assert not (local_dir / str(m)).exists()  # in todo/ until qmail-send preprocesses it
    live.start()
    live.system.wait_log(b"end msg %d\n" % m)
    assert len(live.maildir()) == 2  # preprocessed with the new locals: local from the start
    assert live.system.stop() == 0
    (tree / "control" / "locals").write_text("test.example\n")
    k = qput(tree, b"Subject: offline2\n\nx\n", rcpts=(b"joe@far.example",))
    live.start()
    live.system.wait_log(b"msg %d to remote joe@far.example" % k)
    live.system.wait_log(b": deferral:")
    assert live.system.stop() == 0
    (tree / "control" / "locals").write_text("test.example\nfar.example\n")
    assert qctl(tree, "-r", str(k), "-u") == (0, b"#%d: requeued, 1 recipient now local\n" % k, b"")
    assert not q(tree, "remote", k % 23, k).exists() and q(tree, "local", k % 23, k).exists()
    live.start()
    live.system.wait_log(b"end msg %d\n" % k)
    assert len(live.maildir()) == 3
    assert live.system.stop() == 0
