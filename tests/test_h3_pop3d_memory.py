"""qmail-pop3d's memory for a big Maildir (docs/qmail-pop3d.8.md, TIMEOUTS AND LIMITS): the installed program,
run as the POP user on 10,000 messages (on a tmpfs when there is one, so that removing them costs nothing),
answers every listing command byte for byte as a reference built from the files says, and its peak resident
set grows by less than 300 bytes a message over an empty Maildir's (before: about 580; now about 190); the
listing's bounds (names longer than NAME_MAX, the message count) in lib/pop3/pop3d.scan."""

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import program
from test_pop3 import account
from pyqmail.lib.pop3 import pop3d

COUNT = 10_000
PER_MESSAGE = 300  # bytes of peak resident set a message may add (paths here are about 80 bytes)


def tmpfs_dir():
    """A fresh directory on /dev/shm when it is a tmpfs, else in the system's temporary directory."""
    base = None
    try:
        with open("/proc/mounts") as f:
            if any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in f):
                base = "/dev/shm"
    except OSError:
        pass
    d = tempfile.mkdtemp(prefix="pyqmail-h3-", dir=base)
    os.chmod(d, 0o755)
    return d


def make_maildir(root, count):
    """A Maildir of count small messages, a third in new/, the rest in cur/ with flags, three to an mtime (so
    that equal mtimes keep their directory order), all in the past; owned by the POP user."""
    uid, gid = account()
    md = os.path.join(root, "Maildir")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(md, sub))
    past = int(time.time()) - 100_000
    for i in range(count):
        sub, flags = ("new", "") if i % 3 == 0 else ("cur", ":2,S")
        name = "%d.M%dP%dV0000000000000803I%08X.mail.example.org,S=%d%s" % (
            past + i, 100000 + i, 4000 + i % 97, i, 20 + i % 50, flags)
        path = os.path.join(md, sub, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"Subject: %d\n\n%s\n" % (i, b"x" * (i % 50)))
        os.close(fd)
        os.utime(path, (past + i // 3, past + i // 3))
        os.chown(path, uid, gid)
    for sub in ("", "tmp", "new", "cur"):
        os.chown(os.path.join(md, sub), uid, gid)
    return root


def reference(root):
    """[(path, size)] in qmail-pop3d's order, by the old rule: new/ then cur/ in directory order, sorted by mtime."""
    found = []
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(root, "Maildir", sub)):
            st = os.stat(os.path.join(root, "Maildir", sub, name))
            found.append((int(st.st_mtime), len(found), ("%s/%s" % (sub, name)).encode(), st.st_size))
    found.sort()
    return [(path, size) for _, _, path, size in found]


def session(root, commands, expect):
    """Run the installed qmail-pop3d as the POP user in root; send commands, read exactly len(expect) bytes,
    note its peak resident set (VmHWM, kB), then send QUIT; return (output, peak)."""
    uid = account()[0] if os.getuid() == 0 else None
    p = subprocess.Popen([program("qmail-pop3d"), "Maildir"], cwd=root, user=uid, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(commands)
        p.stdin.flush()
        got = b""
        deadline = time.monotonic() + 60
        while len(got) < len(expect) and time.monotonic() < deadline:
            piece = os.read(p.stdout.fileno(), 1 << 20)
            if not piece:
                break
            got += piece
        with open("/proc/%d/status" % p.pid) as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        p.stdin.write(b"QUIT\r\n")
        p.stdin.close()
        got += p.stdout.read()
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return got, peak


@pytest.fixture
def big():
    root = tmpfs_dir()
    try:
        yield make_maildir(root, COUNT)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def empty():
    root = tmpfs_dir()
    try:
        yield make_maildir(root, 0)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_ten_thousand_messages_byte_exact_in_little_memory(big, empty):
    messages = reference(big)
    assert len(messages) == COUNT

    def uid(path):
        return path[4:].split(b":", 1)[0]
    total = sum(size for _, size in messages)
    listing = b"".join(b"%d %d\r\n" % (i + 1, size) for i, (_, size) in enumerate(messages))
    uids = b"".join(b"%d %s\r\n" % (i + 1, uid(path)) for i, (path, _) in enumerate(messages))
    with open(os.path.join(big, "Maildir", messages[4999][0].decode()), "rb") as f:
        fifth = f.read()
    commands = b"STAT\r\nLIST\r\nUIDL\r\nLIST 5000\r\nUIDL 10000\r\nRETR 5000\r\nDELE 2\r\nSTAT\r\nNOOP\r\n"
    expect = (b"+OK \r\n+OK %d %d\r\n" % (COUNT, total)
              + b"+OK \r\n" + listing + b".\r\n"
              + b"+OK \r\n" + uids + b".\r\n"
              + b"+OK 5000 %d\r\n" % messages[4999][1]
              + b"+OK 10000 %s\r\n" % uid(messages[9999][0])
              + b"+OK \r\n" + fifth.replace(b"\n", b"\r\n") + b"\r\n.\r\n"
              + b"+OK \r\n+OK %d %d\r\n" % (COUNT, total - messages[1][1])
              + b"+OK \r\n")
    got, peak = session(big, commands, expect)
    assert got == expect + b"+OK \r\n"  # and QUIT's
    # QUIT deleted message 2 and moved new/X to cur/X:2,
    assert not os.listdir(os.path.join(big, "Maildir", "new"))
    assert len(os.listdir(os.path.join(big, "Maildir", "cur"))) == COUNT - 1
    _, base = session(empty, b"STAT\r\nLIST\r\nUIDL\r\n", b"+OK \r\n+OK 0 0\r\n+OK \r\n.\r\n+OK \r\n.\r\n")
    grown = (peak - base) * 1024
    assert grown < COUNT * PER_MESSAGE, "peak %d kB, empty Maildir %d kB: %d bytes a message" % (
        peak, base, grown // COUNT)


def test_scan_bounds_names_and_count(tmp_path):
    md = tmp_path
    for sub in ("new", "cur"):
        (md / sub).mkdir()
    past = time.time() - 100
    for i in range(5):
        p = md / "new" / ("m%d" % i)
        p.write_bytes(b"x" * i)
        os.utime(p, (past + i, past + i))
    here = os.getcwd()
    os.chdir(md)
    try:
        box = pop3d.Mailbox(pop3d.scan(time.time(), limit=3))
        assert box.count == 3  # the first three found (directory order); the others wait for a later session
        assert sorted(box.path(i) for i in range(3)) == sorted(b"new/" + n for n in os.listdir(b"new")[:3])
        assert len(pop3d.scan(time.time())) == 5
    finally:
        os.chdir(here)


def test_names_longer_than_name_max_are_no_messages(monkeypatch, tmp_path):
    # a file system (FUSE, a network one) could report a name no local one can hold: it is skipped unread
    for sub in ("new", "cur"):
        (tmp_path / sub).mkdir()
    (tmp_path / "cur" / "ok").write_bytes(b"x")
    os.utime(tmp_path / "cur" / "ok", (1, 1))
    monkeypatch.setattr(pop3d, "NAME_MAX", 1)
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert list(pop3d.scan(time.time())) == []
        monkeypatch.setattr(pop3d, "NAME_MAX", 255)
        assert list(pop3d.scan(time.time())) == [(b"cur/ok", 1)]
    finally:
        os.chdir(here)
