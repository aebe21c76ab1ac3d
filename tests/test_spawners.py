"""qmail-lspawn and qmail-rspawn driven over pipes exactly as qmail-send drives them, on a real queued message."""

import os
import pwd
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import program, qenv, queued, queue_message as conftest_queue_message
from mailsystem import alive
from pyqmail.lib.spawn.spawnproto import encode_request

ROOT = os.geteuid() == 0
MSG = b"Subject: spawn test\n\nhello\n"
TRUNC = b"\nError report too long, sorry.\n"


def ids():
    """Return (name, uid, gid) deliveries run as: ours, or nobody's when the tests run as root."""
    pw = pwd.getpwnam("nobody") if ROOT else pwd.getpwuid(os.getuid())
    return pw.pw_name, pw.pw_uid, pw.pw_gid


def queue_message(tree, sender=b"s@example.org", rcpt=b"joe@test.example"):
    """Queue MSG with the real qmail-queue; return (messid, message number)."""
    assert conftest_queue_message(tree, MSG, b"F" + sender + b"\0T" + rcpt + b"\0\0") == 0
    n = max(queued(tree))
    return b"%d/%d" % (n % 23, n), n


class Spawner:
    """A running spawner with qmail-send's end of its pipes."""

    def __init__(self, procs, argv, env):
        self.p = procs.start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.out = self.p.stdout.fileno()
        self.buf = b""
        self.limit = self.read_bytes(1)

    def read_bytes(self, n, timeout=30):
        """Read exactly n bytes from the spawner's fd 1."""
        deadline = time.time() + timeout
        while len(self.buf) < n:
            ready, _, _ = select.select([self.out], [], [], max(0, deadline - time.time()))
            assert ready, "spawner said nothing in time"
            data = os.read(self.out, 4096)
            assert data, "spawner closed its output"
            self.buf += data
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, delnum, messid, sender, recipient):
        """Write one request as qmail-send does."""
        self.p.stdin.write(encode_request(delnum, messid, sender, recipient))
        self.p.stdin.flush()

    def report(self, timeout=30):
        """Return the next (delnum, report text)."""
        deadline = time.time() + timeout
        while b"\0" not in self.buf[1:]:
            ready, _, _ = select.select([self.out], [], [], max(0, deadline - time.time()))
            assert ready, "no report in time"
            data = os.read(self.out, 4096)
            assert data, "spawner closed its output"
            self.buf += data
        end = self.buf.index(b"\0", 1)
        rep, self.buf = self.buf[:end], self.buf[end + 1:]
        return rep[0], rep[1:]

    def finish(self):
        """Close fd 0 as qmail-send does at exit; return (exit code, remaining output, stderr)."""
        self.p.stdin.close()
        rest = self.p.stdout.read()
        return self.p.wait(30), self.buf + rest, self.p.stderr.read()


@pytest.fixture
def home(world_tmp):
    """A home directory (0755) with a Maildir, owned by the delivery user."""
    _, uid, gid = ids()
    h = world_tmp / "home"
    for d in (h, h / "Maildir", h / "Maildir" / "tmp", h / "Maildir" / "new", h / "Maildir" / "cur"):
        d.mkdir()
        os.chown(d, uid, gid)
        os.chmod(d, 0o755 if d == h else 0o700)
    return h


@pytest.fixture
def users(tree, home):
    """users/assign (made into users/cdb by the real qmail-newu): joe and joe-* to the delivery user, rootly to 0."""
    name, uid, gid = ids()
    (tree / "users" / "assign").write_text(
        "=joe:%s:%d:%d:%s:::\n+joe-:%s:%d:%d:%s:-::\n=rootly:root:0:0:%s:::\n.\n"
        % (name, uid, gid, home, name, uid, gid, home, home))
    subprocess.run([program("qmail-newu")], env=qenv(tree), check=True)
    return tree


def dotqmail(home, ext, text):
    """Write home/.qmail-ext owned by the delivery user."""
    path = home / (".qmail-" + ext)
    path.write_text(text)
    os.chown(path, *ids()[1:])
    os.chmod(path, 0o644)


def lspawn(procs, tree, **env):
    """Start qmail-lspawn with default delivery ./Maildir/."""
    return Spawner(procs, [program("qmail-lspawn"), "./Maildir/"], qenv(tree, **env))


def test_lspawn_delivers_a_queued_message_to_a_maildir(procs, users, home):
    messid, n = queue_message(users)
    s = lspawn(procs, users)
    assert s.limit == bytes([120])
    s.send(0, messid, b"s@example.org", b"joe@test.example")
    assert s.report() == (0, b"Kdid 1+0+0\n")
    [delivered] = list((home / "Maildir" / "new").iterdir())
    mess = (users / "queue" / "mess" / str(n % 23) / str(n)).read_bytes()
    assert delivered.read_bytes() == b"Return-Path: <s@example.org>\nDelivered-To: joe@test.example\n" + mess
    assert delivered.stat().st_uid == ids()[1]
    assert s.finish()[0] == 0


@pytest.mark.skipif(not ROOT, reason="needs root to switch to the recipient's uid")
def test_lspawn_runs_program_deliveries_as_the_recipient(procs, users, home):
    dotqmail(home, "prog", "|id -u > %s/uid; id -G > %s/groups\n" % (home, home))
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    s.send(5, messid, b"s@example.org", b"joe-prog@test.example")
    assert s.report() == (5, b"Kdid 0+0+1\n")
    _, uid, gid = ids()
    assert (home / "uid").read_text() == "%d\n" % uid
    assert (home / "groups").read_text() == "%d\n" % gid  # no supplementary groups, root's least of all


def test_lspawn_refuses_an_account_with_uid_0(procs, users, home):
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    s.send(1, messid, b"s@example.org", b"rootly@test.example")
    assert s.report() == (1, b"ZNot allowed to perform deliveries as root.\n")
    assert list((home / "Maildir" / "new").iterdir()) == []


def test_lspawn_refuses_bad_requests_with_spawn_c_texts(procs, users):
    messid, n = queue_message(users)
    s = lspawn(procs, users)
    cases = [
        (120, messid, b"joe@test.example", b"ZInternal error: delnum too big. (#4.3.5)\n"),
        (2, b"1/x", b"joe@test.example", b"DInternal error: messid has nonnumerics. (#5.3.5)\n"),
        (3, b"../" + messid, b"joe@test.example", b"DInternal error: messid has nonnumerics. (#5.3.5)\n"),
        (4, b"1" * 100, b"joe@test.example", b"DInternal error: messid too long. (#5.3.5)\n"),
        (5, b"", b"joe@test.example", b"DInternal error: messid too short. (#5.3.5)\n"),
        (6, messid, b"joe", b"DSorry, address must include host name. (#5.1.3)\n"),
        (7, b"1/999999999", b"joe@test.example", b"Zqmail-spawn unable to open message. (#4.3.0)\n"),
        (8, b"0", b"joe@test.example", b"ZSorry, message has wrong type. (#4.3.5)\n"),  # mess/0 is a directory
        (9, messid, b"@test.example", b""),  # the trash address: delivered nowhere, successfully
    ]
    for delnum, mid, rcpt, _ in cases:
        s.send(delnum, mid, b"s@example.org", rcpt)
    got = dict(s.report() for _ in cases)
    assert got == {d: (b"K" if not text else text) for d, _, _, text in cases}


@pytest.mark.skipif(not ROOT, reason="needs root to give the message to another owner")
def test_lspawn_refuses_a_message_not_owned_by_the_queue(procs, users):
    messid, n = queue_message(users)
    os.chown(users / "queue" / "mess" / os.fsdecode(messid), ids()[1], -1)
    s = lspawn(procs, users)
    s.send(0, messid, b"s@example.org", b"joe@test.example")
    assert s.report() == (0, b"ZSorry, message has wrong owner. (#4.3.5)\n")


def test_lspawn_reports_out_of_order_and_never_waits_on_one_child(procs, users, home):
    dotqmail(home, "slow", "|while [ ! -e %s/go ]; do sleep 0.05; done; echo slow done\n" % home)
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    s.send(0, messid, b"s@example.org", b"joe-slow@test.example")
    s.send(1, messid, b"s@example.org", b"joe@test.example")
    assert s.report() == (1, b"Kdid 1+0+0\n")
    s.send(0, messid, b"s@example.org", b"joe@test.example")
    assert s.report() == (0, b"ZInternal error: delnum in use. (#4.3.5)\n")
    (home / "go").write_text("")
    assert s.report() == (0, b"Kslow done\ndid 0+0+1\n")
    assert s.finish()[:2] == (0, b"")


def test_lspawn_truncates_long_output_as_qmail(procs, users, home):
    dotqmail(home, "big", "|head -c 5000 /dev/zero | tr '\\000' x; exit 100\n")
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    s.send(0, messid, b"s@example.org", b"joe-big@test.example")
    assert s.report() == (0, b"D" + b"x" * 2966 + TRUNC)


@pytest.fixture
def fake_local(world_tmp, home):
    """A stand-in qmail-local that records its argv in home/argv, prints a line and exits $CODE."""
    script = world_tmp / "fake-qmail-local"
    script.write_text('#!/bin/sh\nprintf "%%s\\n" "$@" > %s/argv\necho out\n'
                      '[ "$CODE" = crash ] && kill -9 $$\nexit "$CODE"\n' % home)
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("code, report", [
    ("0", b"Kout\n"), ("111", b"Zout\n"), ("75", b"Zout\n"), ("100", b"Dout\n"), ("64", b"Dout\n"),
    ("115", b"ZNFS failure in qmail-local.\n"), ("crash", b"Zqmail-local crashed.\n"),
])
def test_lspawn_maps_qmail_local_exit_codes(procs, users, home, fake_local, code, report):
    messid, _ = queue_message(users)
    s = lspawn(procs, users, QMAILLOCAL=fake_local, CODE=code)
    s.send(0, messid, b"-s@example.org", b"joe-a-b@test.example")
    assert s.report() == (0, report)
    name = ids()[0]
    argv = ["--", name, str(home), "joe-a-b", "-", "a-b", "test.example", "-s@example.org", "./Maildir/"]
    assert (home / "argv").read_text().splitlines() == argv


def test_lspawn_cannot_run_a_missing_qmail_local(procs, users, world_tmp):
    messid, _ = queue_message(users)
    s = lspawn(procs, users, QMAILLOCAL=world_tmp / "nonexistent")
    s.send(0, messid, b"s@example.org", b"joe@test.example")
    assert s.report() == (0, b"DUnable to run qmail-local.\n")


def test_lspawn_without_default_delivery_exits_100(tree):
    assert subprocess.run([program("qmail-lspawn")], env=qenv(tree), stdin=subprocess.DEVNULL).returncode == 100


@pytest.fixture
def fake_remote(world_tmp):
    """A stand-in qmail-remote: records argv and the message, prints $OUT (printf format), exits $CODE."""
    script = world_tmp / "fake-qmail-remote"
    script.write_text('#!/bin/sh\nprintf "%%s\\n" "$@" > %s/argv\ncat > %s/message\nprintf "$OUT"\nexit "${CODE:-0}"\n'
                      % (world_tmp, world_tmp))
    script.chmod(0o755)
    return script


def rspawn(procs, tree, **env):
    """Start qmail-rspawn."""
    return Spawner(procs, [program("qmail-rspawn")], qenv(tree, **env))


@pytest.mark.parametrize("out, code, report", [
    (r"r\0K1.2.3.4 accepted message.\n\0", "0", b"K1.2.3.4 accepted message.\n"),
    (r"h1.2.3.4 does not like recipient.\nRemote host said: 550 no\n\0DGiving up on 1.2.3.4.\n\0", "0",
     b"D1.2.3.4 does not like recipient.\nRemote host said: 550 no\nGiving up on 1.2.3.4.\n"),
    (r"s1.2.3.4 does not like recipient.\n\0DGiving up on 1.2.3.4.\n\0", "0",
     b"Z1.2.3.4 does not like recipient.\nGiving up on 1.2.3.4.\n"),
    ("", "0", b"Zqmail-remote produced no output.\n"),
    (r"K\0", "111", b"ZUnable to run qmail-remote.\n"),
    (r"K\0", "100", b"DUnable to run qmail-remote.\n"),
])
def test_rspawn_maps_qmail_remote_reports(procs, tree, world_tmp, fake_remote, out, code, report):
    messid, n = queue_message(tree, rcpt=b"odd@local@remote.example")
    s = rspawn(procs, tree, QMAILREMOTE=fake_remote, OUT=out, CODE=code)
    assert s.limit == bytes([120])
    s.send(3, messid, b"s@example.org", b"odd@local@remote.example")
    assert s.report() == (3, report)
    assert (world_tmp / "argv").read_text().splitlines() == ["remote.example", "s@example.org",
                                                             "odd@local@remote.example"]
    mess = tree / "queue" / "mess" / str(n % 23) / str(n)
    assert (world_tmp / "message").read_bytes() == mess.read_bytes()
    assert s.finish()[0] == 0


@pytest.mark.parametrize("env, name", [({"QMAILREMOTE": "/nonexistent/qmail-remote"}, b"/nonexistent/qmail-remote"),
                                       ({"PATH": "/nonexistent"}, b"qmail-remote")])
def test_rspawn_defers_when_qmail_remote_is_missing(procs, tree, env, name):
    messid, _ = queue_message(tree)
    s = Spawner(procs, [program("qmail-rspawn")], dict(qenv(tree), **env))
    s.send(0, messid, b"s@example.org", b"r@remote.example")
    assert s.report() == (0, b"ZUnable to run qmail-remote (%s): file does not exist. (#4.3.0)\n" % name)


def test_rspawn_clears_the_tcp_timeout_table(procs, tree, fake_remote):
    tcpto = tree / "queue" / "lock" / "tcpto"
    tcpto.write_bytes(b"\xff" * 1024)
    s = rspawn(procs, tree, QMAILREMOTE=fake_remote)
    assert tcpto.read_bytes() == b"\0" * 1024
    assert s.finish()[0] == 0


def program_parent(home, name):
    """Return the pid of the qmail-local process that ran a `|echo $PPID` line (written into home/name)."""
    return int((home / name).read_text())


def test_lspawn_reuses_one_worker_per_user_and_each_delivery_starts_clean(procs, users, home):
    from pyqmail.lib.spawn import localworkers
    dotqmail(home, "ppid", "|echo $PPID > %s/ppid-$(cat %s/n); ls /proc/self/fd | wc -l > %s/fds-$(cat %s/n);"
             " echo \"${LEAK-unset}\" > %s/leak-$(cat %s/n)\n" % ((home,) * 6))
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    for n in range(3):
        (home / "n").write_text(str(n))
        s.send(n, messid, b"s@example.org", b"joe-ppid@test.example")
        assert s.report() == (n, b"Kdid 0+0+1\n")
    parents = {program_parent(home, "ppid-%d" % n) for n in range(3)}
    assert len(parents) == 1  # one qmail-local process served all three
    assert len({(home / ("fds-%d" % n)).read_text() for n in range(3)}) == 1  # no descriptor left behind
    [worker] = parents
    assert (Path("/proc/%d/status" % worker).read_text().split("Uid:")[1].split()[0] == str(ids()[1]))
    os.kill(worker, signal.SIGKILL)  # a worker dying between deliveries costs nothing
    deadline = time.time() + 30  # until it is a zombie or reaped: its socket is closed by then (an empty
    while alive(worker) and time.time() < deadline:  # cmdline comes earlier, while it still holds the socket)
        time.sleep(0.02)
    assert not alive(worker)
    (home / "n").write_text("3")
    s.send(3, messid, b"s@example.org", b"joe-ppid@test.example")
    assert s.report() == (3, b"Kdid 0+0+1\n")
    assert program_parent(home, "ppid-3") != worker
    assert localworkers.MAX_USE > 3


def test_lspawn_reports_a_worker_killed_mid_delivery_as_a_crash_and_goes_on(procs, users, home):
    dotqmail(home, "hang", "|echo $PPID > %s/hung; exec sleep 30 </dev/null >/dev/null 2>&1\n" % home)
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    s.send(7, messid, b"s@example.org", b"joe-hang@test.example")
    deadline = time.time() + 30
    while not ((home / "hung").exists() and (home / "hung").read_text().strip()) and time.time() < deadline:
        time.sleep(0.02)
    os.kill(program_parent(home, "hung"), signal.SIGKILL)
    assert s.report() == (7, b"Zqmail-local crashed.\n")
    s.send(8, messid, b"s@example.org", b"joe@test.example")
    assert s.report() == (8, b"Kdid 1+0+0\n")


def test_lspawn_worker_takes_operands_as_bytes_a_dash_is_no_option_and_lines_are_as_before(procs, users, home):
    """A worker hands qmail-local its operands as bytes: a sender starting with `-` stays the sender, and the
    From_ line and program environment made on demand are qmail's (issue 23's short cuts, end to end)."""
    dotqmail(home, "a", "./Mailbox\n|printf '%%s|%%s|%%s' \"$SENDER\" \"$UFLINE\" \"$DTLINE\" > %s/env-out\n"
             "./Maildir/\n" % home)
    messid, n = queue_message(users, sender=b"-n@example.org", rcpt=b"joe-a@test.example")
    s = lspawn(procs, users)
    before = int(time.time())
    s.send(0, messid, b"-n@example.org", b"joe-a@test.example")
    assert s.report() == (0, b"Kdid 2+0+1\n")
    mess = (users / "queue" / "mess" / str(n % 23) / str(n)).read_bytes()
    head = b"Return-Path: <-n@example.org>\nDelivered-To: joe-a@test.example\n"
    [delivered] = list((home / "Maildir" / "new").iterdir())
    assert delivered.read_bytes() == head + mess
    mbox = (home / "Mailbox").read_bytes()
    from_line, rest = mbox.split(b"\n", 1)
    assert from_line.startswith(b"From -n@example.org ") and rest == head + mess + b"\n"
    from pyqmail.lib.local.delivery_env import myctime
    assert from_line[len(b"From -n@example.org "):] + b"\n" in {myctime(t) for t in range(before, int(time.time()) + 1)}
    assert (home / "env-out").read_bytes() == b"-n@example.org|%s\n|%s" % (from_line, head.split(b"\n")[1] + b"\n")
    assert s.finish()[0] == 0
