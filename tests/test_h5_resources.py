"""Running out of resources: the installed programs on a small tmpfs (real ENOSPC for blocks and for inodes),
mounted in a private mount namespace. A message is accepted and kept, or refused with a temporary failure and
nothing half-written left; once space is back, the same program succeeds."""

import ctypes
import os
import re
import shutil
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import program, qenv, queued, tcpserver, wait_until
from mailsystem import make_system_tree
from test_e2e_delivery import FAKE_REMOTE, queue_is_empty, start, users
from test_qmail_local import ids, local, make_maildir, dotqmail

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

CLONE_NEWNS = 0x00020000
QUEUE_FILES = ("pid", "mess", "intd", "todo")
TEMP_QUEUE_CODES = {53, 63, 64, 65, 66}  # qmail-queue(8): write error/disk full, trouble creating files in queue
MSG = b"Subject: full\n\nhello\n"
ENVELOPE = b"Fa@b.example\0Tc@test.example\0\0"
_private = []


def private_mounts():
    """Put this test process in a mount namespace of its own (unshare -m), once; skip where that is refused."""
    if _private:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        pytest.skip("unshare -m refused: %s" % os.strerror(ctypes.get_errno()))
    subprocess.run(["mount", "--make-rprivate", "/"], check=True, capture_output=True)
    _private.append(True)


@contextmanager
def small_fs(directory, size="256k", inodes=64):
    """Move directory's contents onto a fresh tmpfs of that size and inode count mounted over it; unmount after."""
    private_mounts()
    directory = Path(directory)
    saved = directory.parent / (directory.name + ".saved")
    subprocess.run(["cp", "-a", str(directory), str(saved)], check=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,nr_inodes=%d" % (size, inodes), "tmpfs",
                        str(directory)], capture_output=True)
    if p.returncode:
        pytest.skip("cannot mount a tmpfs: %s" % p.stderr.decode())
    try:
        st = saved.stat()
        os.chown(directory, st.st_uid, st.st_gid)
        os.chmod(directory, st.st_mode & 0o7777)
        subprocess.run(["cp", "-a", "%s/." % saved, str(directory)], check=True)
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)
        shutil.rmtree(saved, ignore_errors=True)


def fill_inodes(directory):
    """Create empty files in directory until the file system has no inode left; return their paths."""
    made = []
    while True:
        path = Path(directory) / ("filler%d" % len(made))
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError:
            return made
        made.append(path)


def fill_blocks(directory, leave=0):
    """Fill the file system with one file until ENOSPC, then give back `leave` bytes; return its path."""
    path = Path(directory) / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError:
                break
        if leave:
            os.ftruncate(fd, max(0, os.lseek(fd, 0, os.SEEK_END) - leave))
    finally:
        os.close(fd)
    return path


def queue_files(tree):
    """Return every file left under the queue's pid/, mess/, intd/ and todo/."""
    return sorted(str(p.relative_to(tree)) for d in QUEUE_FILES for p in (tree / "queue" / d).rglob("*")
                  if p.is_file())


def qq(tree, message=MSG, envelope=ENVELOPE, **kw):
    """Run the installed qmail-queue on message and envelope; return (exit code, stderr)."""
    f = tree.parent / "envelope"
    f.write_bytes(envelope)
    with open(f, "rb") as envelope:
        p = subprocess.run([program("qmail-queue")], input=message, stdout=envelope, capture_output=False,
                           stderr=subprocess.PIPE, env=qenv(tree), timeout=60, **kw)
    return p.returncode, p.stderr


# --- 1. qmail-queue -----------------------------------------------------------------------------------------

def test_queue_out_of_inodes_at_each_step_fails_temporarily_and_leaves_nothing(tree):
    with small_fs(tree / "queue", inodes=200) as q:
        fillers = fill_inodes(q)
        seen = []
        for free in range(0, 8):
            code, err = qq(tree)
            seen.append(code)
            assert b"Traceback" not in err, err
            if code == 0:
                break
            assert code in TEMP_QUEUE_CODES, (free, code, err)
            assert queue_files(tree) == [], (free, code)
            fillers.pop().unlink()
        assert seen[0] == 63 and seen[-1] == 0, seen  # no pid/ file: 63, as qmail's pidopen
        assert len(queued(tree)) == 1


def test_queue_on_a_full_disk_exits_53_and_leaves_nothing_then_recovers(tree):
    with small_fs(tree / "queue", inodes=200) as q:
        filler = fill_blocks(q)
        assert qq(tree) == (53, b"")
        assert queue_files(tree) == []
        filler.unlink()
        filler = fill_blocks(q, leave=8192)
        big = MSG + (b"x" * 79 + b"\n") * 500  # 40 KB: more than the 8 KB left
        assert qq(tree, big)[0] == 53
        assert queue_files(tree) == []
        filler.unlink()
        assert qq(tree) == (0, b"")
        assert len(queued(tree)) == 1


def test_smtpd_on_a_full_queue_replies_451_and_the_session_goes_on(tree):
    with small_fs(tree / "queue", inodes=200) as q:
        filler = fill_blocks(q)
        data = b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@test.example>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
        p = subprocess.run([program("qmail-smtpd")], input=data + b"QUIT\r\n", capture_output=True,
                           env=qenv(tree, TCPREMOTEIP="127.0.0.1"), timeout=60)
        assert b"Traceback" not in p.stderr, p.stderr
        assert b"451 qq write error or disk full (#4.3.0)\r\n221 " in p.stdout, p.stdout
        assert queue_files(tree) == []
        filler.unlink()
        p = subprocess.run([program("qmail-smtpd")], input=data + b"QUIT\r\n", capture_output=True,
                           env=qenv(tree, TCPREMOTEIP="127.0.0.1"), timeout=60)
        assert re.search(rb"250 ok \d+ qp \d+\r\n221 ", p.stdout), p.stdout
        assert len(queued(tree)) == 1


# --- 3. qmail-local -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fill", ["blocks", "inodes"])
def test_maildir_on_a_full_disk_defers_and_leaves_no_partial_file(world_tmp, tmp_path, fill):
    home = world_tmp / "home"
    home.mkdir(mode=0o755)
    os.chown(home, *ids())
    with small_fs(home, inodes=64) as h:
        md = make_maildir(h / "Maildir")
        dotqmail(h, ".qmail", "./Maildir/\n")
        filler = fill_blocks(h) if fill == "blocks" else fill_inodes(h)
        r = local(h, tmp_path, msg=b"Subject: x\n\n" + b"y" * 70000)
        assert b"Traceback" not in r.stderr, r.stderr
        assert r.returncode == 111 and r.stderr.startswith(b"Temporary error on maildir delivery."), r
        assert [os.listdir(md / d) for d in ("new", "cur", "tmp")] == [[], [], []]
        for f in filler if isinstance(filler, list) else [filler]:
            f.unlink()
        r = local(h, tmp_path, msg=b"Subject: x\n\n" + b"y" * 70000)
        assert r.returncode == 0 and len(os.listdir(md / "new")) == 1, r


def test_mbox_on_a_full_disk_is_cut_back_to_its_old_length(world_tmp, tmp_path):
    home = world_tmp / "home"
    home.mkdir(mode=0o755)
    os.chown(home, *ids())
    with small_fs(home, inodes=64) as h:
        dotqmail(h, ".qmail", "./Mailbox\n")
        assert local(h, tmp_path).returncode == 0
        before = (h / "Mailbox").read_bytes()
        filler = fill_blocks(h, leave=4096)
        r = local(h, tmp_path, msg=b"Subject: x\n\n" + b"y\n" * 40000)
        assert b"Traceback" not in r.stderr, r.stderr
        assert r.returncode == 111 and r.stderr.startswith(b"Unable to write ./Mailbox: "), r
        assert (h / "Mailbox").read_bytes() == before
        filler.unlink()
        assert local(h, tmp_path).returncode == 0
        assert (h / "Mailbox").read_bytes().startswith(before) and len((h / "Mailbox").read_bytes()) > len(before)


@pytest.mark.parametrize("fill", ["blocks", "inodes"])
def test_a_users_drop_on_a_full_maildrop_fails_temporarily_and_leaves_nothing(stree, fill):
    nobody = {"user": ids()[0], "group": ids()[1], "extra_groups": []}  # not the queue's owner: the maildrop
    with small_fs(stree / "maildrop", inodes=64) as d:
        fillers = [fill_blocks(d)] if fill == "blocks" else fill_inodes(d)
        code, err = qq(stree, MSG + (b"x" * 79 + b"\n") * 100, **nobody)
        assert b"Traceback" not in err, err
        assert code == (53 if fill == "blocks" else 63), (code, err)
        assert sorted(os.listdir(d)) == sorted(f.name for f in fillers)
        for f in fillers:
            f.unlink()
        assert qq(stree, **nobody) == (0, b"")
        assert len(os.listdir(d)) == 1


# --- 2. qmail-send ------------------------------------------------------------------------------------------

@pytest.fixture
def stree(world_tmp):
    """A tree as installed (qmail's accounts), with joe's Maildir on the ordinary disk."""
    tree = make_system_tree(world_tmp / "qmail")
    fake = world_tmp / FAKE_REMOTE  # no network: every remote delivery fails at once, for good
    fake.write_text("#!/bin/sh\ncat >/dev/null\nprintf 'Dno network here.\\0'\n")
    fake.chmod(0o755)
    return tree


def test_send_on_a_full_queue_loses_nothing_and_delivers_once_space_is_back(procs, stree, world_tmp):
    homes = users(stree, world_tmp, "joe")
    with small_fs(stree / "queue", inodes=200) as q:
        assert qq(stree, envelope=b"Fa@b.example\0Tjoe@test.example\0\0") == (0, b"")
        [n] = queued(stree)
        fillers = [fill_blocks(q)] + fill_inodes(q)
        system = start(procs, stree)
        log = system.wait_log(b"status: local ")
        assert b"Traceback" not in log
        for f in fillers:
            f.unlink()
        assert qq(stree, envelope=b"Fa@b.example\0Tjoe@test.example\0\0") == (0, b"")  # pulls the trigger
        log = system.wait_log(b"delivery ", 2)
        wait_until(lambda: system.log().count(b": success: did_1+0+0/") == 2, what="two deliveries")
        wait_until(lambda: queue_is_empty(stree), what="an empty queue")
        assert len(os.listdir(homes["joe"] / "Maildir" / "new")) == 2
        system.stop()


def test_send_unable_to_write_info_after_a_failure_waits_and_bounces_once_space_is_back(procs, stree, world_tmp):
    homes = users(stree, world_tmp, "joe")
    (homes["joe"] / ".qmail-x").write_text("|exit 100\n")
    with small_fs(stree / "queue", inodes=200) as q:
        assert qq(stree, envelope=b"Fa@b.example\0Tjoe-x@test.example\0\0") == (0, b"")
        [n] = queued(stree)
        fillers = fill_inodes(q)  # the failure must be written to info/N and local/N: no inode for them
        system = start(procs, stree)
        log = system.wait_log(b"warning: unable to create info/%d/%d\n" % (n % 23, n))
        assert (q / "todo" / str(n)).exists() and system.proc.poll() is None, log
        for f in fillers:
            f.unlink()
        log = system.wait_log(b"end msg %d\n" % n, timeout=60)  # qmail-send tries again every 10 s
        assert b"bounce msg %d qp " % n in log, log
        assert len(re.findall(rb"^starting delivery \d+: msg %d to " % n, log, re.M)) == 1, log  # never repeated
        system.stop()


def test_send_unable_to_append_to_a_bounce_waits_and_bounces_once_space_is_back(procs, stree, world_tmp):
    homes = users(stree, world_tmp, "joe")
    go = world_tmp / "go"
    wait = "while [ ! -e %s ]; do sleep 0.05; done" % go  # both deliveries fail once the queue is full
    (homes["joe"] / ".qmail-x").write_text("|%s; exit 100\n" % wait)
    (world_tmp / FAKE_REMOTE).write_text("#!/bin/sh\ncat >/dev/null\n%s\nprintf 'Dno network here.\\0'\n" % wait)
    with small_fs(stree / "queue", inodes=200) as q:
        system = start(procs, stree)
        # a local and a remote recipient: preprocessed into info/N, local/N and remote/N, as qmail does
        assert qq(stree, envelope=b"Fa@b.example\0Tjoe-x@test.example\0Tr@remote.example\0\0") == (0, b"")
        log = system.wait_log(b"starting delivery ", 2)
        [n] = [int(x) for x in re.findall(rb"^info msg (\d+):", log, re.M)]
        fillers = [fill_blocks(q)] + fill_inodes(q)  # while both deliveries run: no room for bounce/N
        go.touch()
        log = system.wait_log(b"alert: unable to append to bounce message; HELP! sleeping...\n", timeout=60)
        assert (q / "local" / str(n % 23) / str(n)).exists() and system.proc.poll() is None, log
        for f in fillers:
            f.unlink()
        log = system.wait_log(b"bounce msg %d qp " % n, timeout=60)
        assert log.count(b"delivery 1: failure: ") == 1 and log.count(b"delivery 2: failure: ") == 1, log
        system.stop()


def test_a_bounce_entry_cut_short_by_a_full_disk_goes_on_where_it_stopped(procs, stree, world_tmp):
    homes = users(stree, world_tmp, "joe")
    go = world_tmp / "go"
    (homes["joe"] / ".qmail-x").write_text(
        "|while [ ! -e %s ]; do sleep 0.05; done; echo %s; exit 100\n" % (go, "local-report-" + "y" * 600))
    (world_tmp / FAKE_REMOTE).write_text("#!/bin/sh\ncat >/dev/null\nprintf 'D%s\\0'\n" % ("z" * 3800))
    with small_fs(stree / "queue", inodes=200) as q:
        system = start(procs, stree)
        assert qq(stree, envelope=b"Fjoe@test.example\0Tjoe-x@test.example\0Tr@remote.example\0\0") == (0, b"")
        log = system.wait_log(b"\ndelivery 2: failure: ")
        [n] = [int(x) for x in re.findall(rb"^info msg (\d+):", log, re.M)]
        assert 3800 < (q / "bounce" / str(n)).stat().st_size < 4096  # the remote's entry: most of one page
        filler = fill_blocks(q)  # the local entry fits only in part: the rest of that page
        go.touch()
        system.wait_log(b"alert: unable to append to bounce message; HELP! sleeping...\n", timeout=60)
        filler.unlink()
        system.wait_log(b"bounce msg %d qp " % n, timeout=60)
        wait_until(lambda: os.listdir(homes["joe"] / "Maildir" / "new"), timeout=60, what="the bounce")
        [name] = os.listdir(homes["joe"] / "Maildir" / "new")
        bounce = (homes["joe"] / "Maildir" / "new" / name).read_bytes()
        assert bounce.count(b"<joe-x@test.example>:\n") == 1 and bounce.count(b"local-report-") == 1, bounce
        system.stop()


def test_a_bounce_on_a_full_queue_waits_in_the_maildrop_and_is_queued_once_space_is_back(procs, stree, world_tmp):
    homes = users(stree, world_tmp, "joe")
    (homes["joe"] / ".qmail-x").write_text("|exit 100\n")
    with small_fs(stree / "queue", inodes=200) as q:
        assert qq(stree, MSG + (b"x" * 79 + b"\n") * 500, b"Fa@b.example\0Tjoe-x@test.example\0\0") == (0, b"")
        [n] = queued(stree)
        filler = fill_blocks(q, leave=16384)  # room for info/N, local/N and bounce/N, none for the 40 KB bounce
        system = start(procs, stree)
        log = system.wait_log(b"queueing failed with qmail-queue code 53\n", timeout=60)
        assert b"Traceback" not in log
        assert len(os.listdir(stree / "maildrop")) == 1  # the bounce, accepted into the maildrop (not lost)
        filler.unlink()
        nobody = {"user": ids()[0], "group": ids()[1], "extra_groups": []}  # a user's drop wakes qmail-pickup
        assert qq(stree, envelope=b"Fa@b.example\0Tjoe@test.example\0\0", **nobody) == (0, b"")
        log = system.wait_log(b"info msg ", 3, timeout=60)
        assert re.search(rb"^info msg \d+: bytes \d+ from <> qp \d+ uid \d+$", log, re.M), log
        wait_until(lambda: os.listdir(stree / "maildrop") == [], what="an empty maildrop")
        system.stop()


# --- 4. qmail-pop3d -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fill", ["blocks", "inodes"])
def test_pop3d_quit_on_a_full_disk_moves_and_deletes(world_tmp, fill):
    home = world_tmp / "home"
    home.mkdir(mode=0o755)
    os.chown(home, *ids())
    with small_fs(home, inodes=64) as h:
        md = make_maildir(h / "Maildir")
        for i, name in enumerate(("1000.M1P1.host", "1001.M1P1.host")):
            (md / "new" / name).write_bytes(b"Subject: %d\n\nbody\n" % i)
            os.chown(md / "new" / name, *ids())
            os.utime(md / "new" / name, (1000 + i, 1000 + i))
        fillers = [fill_blocks(h)] if fill == "blocks" else fill_inodes(h)
        r = subprocess.run([program("qmail-pop3d"), "Maildir"], cwd=h, user=ids()[0], group=ids()[1],
                           extra_groups=[], input=b"RETR 1\r\nDELE 2\r\nQUIT\r\n", capture_output=True, timeout=60)
        assert (r.returncode, r.stderr) == (0, b""), r
        assert r.stdout == b"+OK \r\n+OK \r\nSubject: 0\r\n\r\nbody\r\n\r\n.\r\n+OK \r\n+OK \r\n"
        assert os.listdir(md / "new") == [] and os.listdir(md / "cur") == ["1000.M1P1.host:2,"]
        for f in fillers:
            f.unlink()


# --- 5. descriptor and process limits ------------------------------------------------------------------------

def helper_pid(system, name):
    """The pid of qmail-send's helper whose command line names name."""
    for pid in system.helpers:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if name.encode() in f.read():
                return pid
    raise AssertionError("no %s among %s" % (name, system.helpers))


def open_fds(pid):
    """How many descriptors pid has open."""
    return len(os.listdir("/proc/%d/fd" % pid))


def start_limited(procs, tree, limit):
    """Start qmail-start (as MailSystem does) under `prlimit limit`: every program of the system inherits it."""
    plain = procs.start
    procs.start = lambda argv, **kw: plain(["prlimit", limit, "--", *map(str, argv)], **kw)
    try:
        return start(procs, tree)
    finally:
        procs.start = plain


def test_send_short_of_descriptors_keeps_the_message_and_finishes_after_a_restart(procs, stree, world_tmp):
    homes = users(stree, world_tmp, "joe")
    (homes["joe"] / ".qmail-x").write_text("|exit 100\n")
    system = start_limited(procs, stree, "--nofile=24")  # enough to start, too few to inject a bounce
    assert qq(stree, envelope=b"Fa@b.example\0Tjoe-x@test.example\0\0") == (0, b"")
    [n] = queued(stree)
    log = system.wait_log(b"will try later\n")
    assert system.proc.poll() is None and b"end msg %d\n" % n not in log, log
    assert system.stop() == 0
    system = start(procs, stree)
    log = system.wait_log(b"end msg %d\n" % n, timeout=60)
    assert b"bounce msg %d qp " % n in log
    system.stop()


def test_a_delivery_that_cannot_fork_is_deferred_and_retried(procs, stree, world_tmp):
    homes = users(stree, world_tmp, "joe")
    (homes["joe"] / ".qmail-p").write_text("|cat > /dev/null\n./Maildir/\n")
    limit = 150 + sum(1 for pid in os.listdir("/proc") if pid.isdigit())  # well above root's processes
    nobody = {"user": ids()[0], "group": ids()[1], "extra_groups": []}
    sleepers = [procs.start(["sleep", "600"], **nobody) for _ in range(limit)]  # the delivery user at its limit
    system = start_limited(procs, stree, "--nproc=%d" % limit)
    assert qq(stree, envelope=b"Fa@b.example\0Tjoe-p@test.example\0\0") == (0, b"")
    log = system.wait_log(b"\ndelivery 1: ", timeout=60)
    assert b"delivery 1: deferral: Unable_to_fork:_temporary_failure._(#4.3.0)/\n" in log, log
    for p in sleepers:
        procs.stop(p)
    system.signal(signal.SIGALRM)
    system.wait_log(b": success: did_1+0+1/", timeout=60)
    assert len(os.listdir(homes["joe"] / "Maildir" / "new")) == 1
    system.stop()


def smtp(port, data):
    """One session on 127.0.0.1:port sending data; return everything the server said until it closed."""
    import socket
    from test_qmqpd import read_all
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        return read_all(s, 30)


@pytest.mark.parametrize("fill", ["blocks", "inodes"])
def test_smtpd_queueing_in_process_on_a_full_queue_replies_451_and_leaves_nothing(procs, stree, fill):
    st = (stree / "queue").stat()
    data = b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@test.example>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"
    with small_fs(stree / "queue", inodes=200) as q:
        # as the queue's owner, qmail-smtpd queues in its own process (lib/queue/queuehere)
        port = tcpserver(procs, stree, [program("qmail-smtpd")], server=program("qmail-tcpserver"),
                         options=("-u", str(st.st_uid), "-g", str(st.st_gid)))
        fillers = [fill_blocks(q)] if fill == "blocks" else fill_inodes(q)
        out = smtp(port, data)
        assert re.search(rb"\r\n354 go ahead\r\n451 qq (write error or disk full|trouble creating files in queue) "
                         rb"\(#4\.3\.0\)\r\n221 ", out), out
        assert queue_files(stree) == []
        for f in fillers:
            f.unlink()
        assert re.search(rb"\r\n250 ok \d+ qp \d+\r\n221 ", smtp(port, data))
        assert len(queued(stree)) == 1
        logs = b"".join(p.read_bytes() for p in stree.glob("tcpserver-*.log"))
        assert b"Traceback" not in logs and b"internal error" not in logs, logs


@pytest.mark.parametrize("fill", ["blocks", "inodes"])
def test_qmqpd_queueing_in_process_on_a_full_queue_replies_z_and_leaves_nothing(procs, stree, fill):
    from pyqmail.lib.qmqp.qmqp import encode_request
    st = (stree / "queue").stat()
    (stree / "control" / "qmqpderrordelay").write_text("0\n")
    request = encode_request(b"Subject: x\n\nhi\n", b"a@b.example", [b"c@test.example"])
    with small_fs(stree / "queue", inodes=200) as q:
        port = tcpserver(procs, stree, [program("qmail-qmqpd")], server=program("qmail-tcpserver"),
                         options=("-u", str(st.st_uid), "-g", str(st.st_gid)), env=qenv(stree, QMQPCLIENT=""))
        fillers = [fill_blocks(q)] if fill == "blocks" else fill_inodes(q)
        reply = smtp(port, request)
        assert re.fullmatch(rb"\d+:Zqq (write error or disk full|trouble creating files in queue) \(#4\.3\.0\),",
                            reply), reply
        assert queue_files(stree) == []
        for f in fillers:
            f.unlink()
        assert re.fullmatch(rb"\d+:Kok \d+ qp \d+,", smtp(port, request))
        assert len(queued(stree)) == 1
        logs = b"".join(p.read_bytes() for p in stree.glob("tcpserver-*.log"))
        assert b"Traceback" not in logs and b"internal error" not in logs, logs
