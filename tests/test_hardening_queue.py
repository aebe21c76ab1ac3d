"""Issue 17, points 5 and 8: the maildrop commit under failing system calls, and the traces the network
servers leave when they queue in their own process (docs/qmail-queue.8.md)."""

import os
import pwd
import re
import subprocess
import sys
import time

import pytest

from conftest import make_tree, program, qenv, queued
from test_privilege import account, as_user

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: a plain user dropping into a tree with qmail's users")

# Python has no LD_PRELOAD, so the fault goes in one layer up: this wrapper replaces a few functions of the
# os and posix modules (the ones pyqmail calls; each module looks them up at call time) with versions that
# fail for one target, then calls the installed qmail-queue's real entry point. Everything else - the
# launcher's imports, the envelope pipe, the files and renames that do not fail - is the real program on
# the real file system; a failing close still releases the descriptor, as the kernel's does.
FAULTY = r'''
import errno, os, posix, sys, time
from pyqmail.commands.qmail_queue import run

maildrop = os.path.join(os.environ["QMAILHOME"], "maildrop")
faults = dict(f.split(":", 1) for f in os.environ.pop("FAULT").split(","))  # call -> target[:claimed]
paths, renamed = {}, []
real = {name: getattr(posix, name) for name in ("open", "write", "fsync", "close", "rename", "unlink")}


def aimed(call, path):
    """True if call must fail on path: `drop` is maildrop/t..., `final` maildrop/<name>, `maildrop` the dir."""
    target = faults.get(call, "").split(":")[0]
    if path is None or not target:
        return False
    if target == "maildrop":
        return os.path.normpath(path) == maildrop
    if os.path.dirname(path) != maildrop:
        return False
    return os.path.basename(path).startswith("t") == (target == "drop")


def fail(call, code):
    """Raise the error the kernel would."""
    raise OSError(code, os.strerror(code))


def fake_open(path, flags, mode=0o777, **kw):
    if aimed("open", path):
        fail("open", errno.EMFILE)
    fd = real["open"](path, flags, mode, **kw)
    paths[fd] = path
    return fd


def fake_write(fd, data):
    if aimed("write", paths.get(fd)):
        fail("write", errno.ENOSPC)
    return real["write"](fd, data)


def fake_fsync(fd):
    if aimed("fsync", paths.get(fd)):
        if faults["fsync"].endswith(":claimed"):  # a slow failing fsync, while qmail-pickup takes the drop
            deadline = time.time() + 30
            while os.path.lexists(renamed[-1]) and time.time() < deadline:
                time.sleep(0.01)
        fail("fsync", errno.EIO)
    return real["fsync"](fd)


def fake_close(fd):
    path = paths.pop(fd, None)
    real["close"](fd)
    if aimed("close", path):
        fail("close", errno.EIO)


def fake_rename(src, dst):
    if aimed("rename", src):
        fail("rename", errno.EIO)
    real["rename"](src, dst)
    renamed.append(dst)


def fake_unlink(path):
    if aimed("unlink", path):
        fail("unlink", errno.EROFS)
    real["unlink"](path)


for name in real:
    setattr(os, name, globals()["fake_" + name])
    setattr(posix, name, globals()["fake_" + name])
run()
'''


@pytest.fixture
def system_tree(world_tmp):
    """A tree set up as root: qmail's users, owners and modes (maildrop/ open to everyone)."""
    return make_tree(world_tmp / "qmail", "--me", "test.example")


def faulty_queue(pw, tree, fault, message=b"Subject: x\n\nbody\n", envelope=b"Fa@b\0Tc@d\0\0"):
    """Run the installed qmail-queue as pw with the faults in `fault`; return the CompletedProcess."""
    wrapper = tree.parent / "faulty-qmail-queue.py"
    wrapper.write_text(FAULTY)
    os.chmod(wrapper, 0o644)
    r, w = os.pipe()
    os.write(w, envelope)
    os.close(w)
    try:
        return as_user(pw, [sys.executable, str(wrapper)], input=message, stdout=r, env=qenv(tree, FAULT=fault),
                       timeout=60)
    finally:
        os.close(r)


def pickup_once(tree):
    """Run qmail-pickup for one pass (as root: it becomes qmailq); return its log."""
    return subprocess.run([program("qmail-pickup"), "-1"], env=qenv(tree), check=True, capture_output=True).stderr


@needs_root
@pytest.mark.parametrize("fault, code", [
    ("write:drop", 53), ("fsync:drop", 53),
    ("close:drop", 53),   # was exit 81 with an EBADF text (closed twice) and a t... file for 36 hours
    ("rename:drop", 62),  # trouble with maildrop/
])
def test_failure_before_the_rename_removes_the_drop(system_tree, fault, code):
    done = faulty_queue(account("pqalice"), system_tree, fault)
    assert (done.returncode, done.stderr) == (code, b"")
    assert list((system_tree / "maildrop").iterdir()) == []
    pickup_once(system_tree)
    assert queued(system_tree) == {}


@needs_root
@pytest.mark.parametrize("fault", ["open:maildrop", "fsync:maildrop", "close:maildrop"])
def test_failed_maildrop_fsync_takes_the_drop_back_so_a_retry_queues_once(system_tree, fault):
    """After the rename the drop is visible but not known to be durable: qmail-queue removes it and fails
    (before: exit 53 with the drop left for qmail-pickup, so the caller's retry queued the message twice)."""
    alice = account("pqalice")
    done = faulty_queue(alice, system_tree, fault, message=b"Subject: once\n\n")
    assert (done.returncode, done.stderr) == (53, b"")
    assert list((system_tree / "maildrop").iterdir()) == []
    retry = faulty_queue(alice, system_tree, "none:", message=b"Subject: once\n\n")
    assert (retry.returncode, retry.stderr) == (0, b"")
    pickup_once(system_tree)
    [(mess, todo)] = queued(system_tree).values()
    assert mess.endswith(b"\nSubject: once\n\n") and todo.startswith(b"u%d\0" % alice.pw_uid)


@needs_root
def test_a_drop_that_cannot_be_taken_back_is_never_reported_queued(system_tree):
    """The fsync failed and so did the removal: the drop may or may not survive a power loss, so the caller
    hears failure (qmail-pickup may still queue it: a duplicate is possible, a loss of accepted mail is not)."""
    done = faulty_queue(account("pqalice"), system_tree, "fsync:maildrop,unlink:final")
    assert (done.returncode, done.stderr) == (53, b"")
    [drop] = (system_tree / "maildrop").iterdir()
    assert re.fullmatch(r"[0-9a-f]{32}", drop.name)  # left as it was: no temporary file beside it


@needs_root
def test_a_drop_pickup_claimed_before_the_fsync_failed_is_reported_queued_once(system_tree, procs):
    """qmail-pickup (woken by inotify) claims the drop while the directory fsync is failing: the message is
    then pickup's to queue, so qmail-queue waits until it is in the queue and exits 0 (before: exit 53 with
    the message queued, and the caller's retry queued it again)."""
    pytest.importorskip("pyinotify")
    pickup = procs.start([program("qmail-pickup")], env=qenv(system_tree), stderr=subprocess.PIPE)
    done = faulty_queue(account("pqalice"), system_tree, "fsync:maildrop:claimed", message=b"Subject: raced\n\n")
    assert (done.returncode, done.stderr) == (0, b"")
    [(mess, _)] = queued(system_tree).values()
    assert mess.endswith(b"\nSubject: raced\n\n")
    assert list((system_tree / "maildrop").iterdir()) == []
    procs.stop(pickup)
    assert re.search(rb"qmail-pickup: queued maildrop/[0-9a-f]{32}: msg \d+ uid \d+\n", pickup.stderr.read())


@needs_root
def test_pickup_finishes_a_drop_an_interrupted_pass_had_claimed(system_tree):
    alice = account("pqalice")
    done = faulty_queue(alice, system_tree, "none:", message=b"Subject: claimed\n\n")
    assert done.returncode == 0
    [drop] = (system_tree / "maildrop").iterdir()
    os.rename(drop, drop.with_name("p" + drop.name))  # what a pass killed after its claim leaves
    assert re.fullmatch(rb"qmail-pickup: queued maildrop/%s: msg \d+ uid %d\n" % (drop.name.encode(), alice.pw_uid),
                        pickup_once(system_tree))
    [(mess, todo)] = queued(system_tree).values()
    assert mess.endswith(b"\nSubject: claimed\n\n") and todo.startswith(b"u%d\0" % alice.pw_uid)
    assert list((system_tree / "maildrop").iterdir()) == []


# --- point 8: the network servers' in-process queueing records what qmail's qmail-queue would for qmaild

def qmqp_request():
    """One QMQP request."""
    body = b"".join(b"%d:%s," % (len(f), f) for f in (b"Subject: x\n\nbody\n", b"a@b.example", b"c@test.example"))
    return b"%d:%s," % (len(body), body)


def qmtp_package():
    """One QMTP package (LF encoding)."""
    message, rcpts = b"\nSubject: x\nbody\n", b"14:c@test.example,"
    return b"%d:%s,11:a@b.example,%d:%s," % (len(message), message, len(rcpts), rcpts)


SMTP = b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@test.example>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"
SERVERS = [("qmail-qmqpd", qmqp_request(), "628"), ("qmail-qmtpd", qmtp_package(), "209"),
           ("qmail-smtpd", SMTP, "25")]


def first_line(mess):
    """qmail-queue's Received line with its pid and date replaced."""
    line = mess.split(b"\n", 1)[0]
    return re.sub(rb"; \d+ \w+ \d+ \d\d:\d\d:\d\d -0000$", b"; DATE", re.sub(rb"^Received: \(qmail \d+ ", b"Received: (qmail P ", line))


def switch_to(pw):
    """A preexec_fn that runs the child as pw (nothing to do when that is us)."""
    if pw.pw_uid == os.getuid():
        return None
    return lambda: (os.setgroups([]), os.setgid(pw.pw_gid), os.setuid(pw.pw_uid))


def clear(tree):
    """Remove every committed message (nothing runs qmail-send here)."""
    for n in queued(tree):
        for name in ("todo/%d" % n, "intd/%d" % n, "mess/%d/%d" % (n % 23, n)):
            os.unlink(tree / "queue" / name)


@pytest.fixture(params=["qmail", "single-user"])
def deployment(request, world_tmp):
    """(tree, account running the servers, account whose qmail-queue run is the reference): qmail's users
    (servers as qmailq, as recommended; qmail's own servers run as qmaild), or a single-user tree (its one
    account in every role)."""
    if request.param == "qmail":
        if not ROOT:
            pytest.skip("needs root: qmail's users")
        tree = make_tree(world_tmp / "qmail", "--me", "test.example")
        server, reference = pwd.getpwnam("qmailq"), pwd.getpwnam("qmaild")
    else:
        one = pwd.getpwnam("nobody") if ROOT else pwd.getpwuid(os.getuid())
        tree = make_tree(world_tmp / "qmail", "--user", one.pw_name, "--me", "test.example")
        server = reference = one
    (tree / "control" / "rcpthosts").write_bytes(b"test.example\n")
    return tree, server, reference


@pytest.mark.parametrize("name,request_bytes,port", SERVERS, ids=[s[0] for s in SERVERS])
def test_network_servers_queueing_in_process_leave_qmails_traces(deployment, name, request_bytes, port):
    tree, server, reference = deployment
    proc = subprocess.Popen([program(name)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=switch_to(server), env=qenv(tree, TCPREMOTEIP="127.0.0.1", TCPLOCALPORT=port))
    out, err = proc.communicate(request_bytes, timeout=60)
    assert b" qp %d" % proc.pid in out, (out, err)  # queued in the server's own process
    [(here_mess, here_todo)] = queued(tree).values()
    clear(tree)

    r, w = os.pipe()
    os.write(w, b"Fa@b.example\0Tc@test.example\0\0")
    os.close(w)
    ran = subprocess.run([program("qmail-queue")], input=b"x\n", stdout=r, stderr=subprocess.PIPE,
                         preexec_fn=switch_to(reference), env=qenv(tree))
    os.close(r)
    assert ran.returncode == 0, ran.stderr
    if list((tree / "maildrop").iterdir()):  # qmaild does not own the queue: qmail-pickup queues its drop
        pickup_once(tree)
    [(ref_mess, ref_todo)] = queued(tree).values()

    assert first_line(here_mess) == first_line(ref_mess)
    assert re.sub(rb"^(u\d+\0)p\d+\0", rb"\1", here_todo) == re.sub(rb"^(u\d+\0)p\d+\0", rb"\1", ref_todo)
    assert here_todo.startswith(b"u%d\0" % reference.pw_uid)
    who = b"from network" if reference.pw_name == "qmaild" else b"by uid %d" % reference.pw_uid
    assert first_line(here_mess) == b"Received: (qmail P invoked %s); DATE" % who
