"""maildirmake, maildir2mbox and maildirwatch: real programs on real Maildirs; mutt reads the mbox."""

import mailbox
import os
import pty
import subprocess
import time

import pytest
from hypothesis import given, strategies as st

from conftest import mutt_screen, need, program, read_screen
from pyqmail.lib.local import maildirscan
from pyqmail.lib.local.delivery_env import myctime

OLD = 1_000_000_000  # 2001-09-09 01:46:40 GMT: mtimes for messages well in the past


def run(name, *args, env=None, **kw):
    e = {"PATH": os.environ["PATH"]}
    e.update(env or {})
    return subprocess.run([program(name), *map(str, args)], env=e, capture_output=True, timeout=30, **kw)


def maildir(path):
    assert run("maildirmake", path).returncode == 0
    return path


def put(md, sub, name, text, mtime):
    p = md / sub / name
    p.write_bytes(text)
    os.utime(p, (mtime, mtime))
    return p


# ---------------------------------------------------------------- maildirmake

def test_maildirmake_makes_the_four_directories_mode_0700(tmp_path):
    md = tmp_path / "Maildir"
    p = run("maildirmake", md)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"", b"")
    for d in (md, md / "tmp", md / "new", md / "cur"):
        assert d.is_dir() and (d.stat().st_mode & 0o777) == 0o700


def test_maildirmake_usage_and_errors(tmp_path):
    p = run("maildirmake")
    assert (p.returncode, p.stderr) == (100, b"maildirmake: usage: maildirmake name\n")
    md = maildir(tmp_path / "M")
    p = run("maildirmake", md)
    assert p.returncode == 111
    assert p.stderr == b"maildirmake: fatal: unable to mkdir %s: file already exists\n" % bytes(md) \
        or p.stderr.startswith(b"maildirmake: fatal: unable to mkdir %s: " % bytes(md))
    (tmp_path / "N").mkdir()
    (tmp_path / "N" / "new").mkdir()
    p = run("maildirmake", tmp_path / "N" / "x")  # fine: a new name inside
    assert p.returncode == 0
    p = run("maildirmake", tmp_path / "nodir" / "x")
    assert p.returncode == 111 and b"unable to mkdir" in p.stderr


# ---------------------------------------------------------------- maildir2mbox

def m2m_env(tmp_path, md):
    return {"MAILDIR": str(md), "MAIL": str(tmp_path / "mbox"), "MAILTMP": str(tmp_path / "mbox.tmp")}


def test_maildir2mbox_needs_its_environment(tmp_path):
    md = maildir(tmp_path / "M")
    env = m2m_env(tmp_path, md)
    for name, text in (("MAIL", b"MAIL not set"), ("MAILTMP", b"MAILTMP not set"), ("MAILDIR", b"MAILDIR not set")):
        e = dict(env)
        del e[name]
        p = run("maildir2mbox", env=e)
        assert (p.returncode, p.stderr) == (111, b"maildir2mbox: fatal: " + text + b"\n")
    p = run("maildir2mbox", env=dict(env, MAILDIR=str(tmp_path / "none")))
    assert p.returncode == 111 and p.stderr.startswith(b"maildir2mbox: fatal: unable to chdir to ")


def test_maildir2mbox_nothing_new_touches_nothing(tmp_path):
    md = maildir(tmp_path / "M")
    put(md, "new", "fresh", b"x\n", time.time() + 5)  # this second or later: left for the next run
    p = run("maildir2mbox", env=m2m_env(tmp_path, md))
    assert (p.returncode, p.stderr) == (0, b"")
    assert not (tmp_path / "mbox").exists() and (md / "new" / "fresh").exists()


def test_maildir2mbox_appends_oldest_first_with_qmails_from_lines(tmp_path):
    md = maildir(tmp_path / "M")
    (tmp_path / "mbox").write_bytes(b"From old@x Thu Jan  1 00:00:00 1970\nSubject: kept\n\nold\n\n")
    put(md, "cur", "b:2,S", b"Return-Path: <>\nSubject: two\n\nFrom here\n>From there\n", OLD + 60)
    put(md, "new", "a", b"Return-Path: <a b\tc@x.example>\nSubject: one\n\nbody\nlast, no newline", OLD)
    put(md, "new", "c", b"Subject: three\n\n", OLD + 120)
    put(md, "tmp", "stale", b"x", OLD)
    put(md, "tmp", "young", b"x", time.time())
    p = run("maildir2mbox", env=m2m_env(tmp_path, md))
    assert (p.returncode, p.stderr) == (0, b"")
    assert (tmp_path / "mbox").read_bytes() == (
        b"From old@x Thu Jan  1 00:00:00 1970\nSubject: kept\n\nold\n\n"
        b"From a-b-c@x.example " + myctime(OLD) +
        b"Return-Path: <a b\tc@x.example>\nSubject: one\n\nbody\nlast, no newline\n\n"
        b"From MAILER-DAEMON " + myctime(OLD + 60) +
        b"Return-Path: <>\nSubject: two\n\n>From here\n>>From there\n\n"
        b"From XXX " + myctime(OLD + 120) + b"Subject: three\n\n\n")
    assert myctime(OLD) == b"Sun Sep 09 01:46:40 2001\n"
    assert os.listdir(md / "new") == [] and os.listdir(md / "cur") == []
    assert os.listdir(md / "tmp") == ["young"]
    assert not (tmp_path / "mbox.tmp").exists()
    assert (tmp_path / "mbox").stat().st_mode & 0o777 == 0o600


def test_maildir2mbox_result_is_read_by_mutt_and_pythons_mailbox(tmp_path):
    md = maildir(tmp_path / "M")
    for i in range(3):
        put(md, "new", "m%d" % i, b"Return-Path: <s%d@x.example>\nFrom: s%d@x.example\nSubject: n%d\n\n"
            b"From the start\nline\n" % (i, i, i), OLD + i)
    assert run("maildir2mbox", env=m2m_env(tmp_path, md)).returncode == 0
    box = mailbox.mbox(str(tmp_path / "mbox"))
    msgs = list(box)
    assert [m["Subject"] for m in msgs] == ["n0", "n1", "n2"]
    assert msgs[0].get_from() == "s0@x.example " + myctime(OLD).decode().strip()
    assert msgs[1].get_payload() == ">From the start\nline\n"
    need("mutt")
    screen = mutt_screen(tmp_path / "mbox", tmp_path, b"COUNT 3",
                         'set index_format="IDX %s" status_format="COUNT %m" mbox_type=mbox')
    assert b"COUNT 3" in screen and all(b"IDX n%d" % i in screen for i in range(3))


def test_maildir2mbox_waits_for_the_mbox_lock(tmp_path, procs):
    import fcntl
    md = maildir(tmp_path / "M")
    put(md, "new", "a", b"Subject: x\n\ny\n", OLD)
    mbox = tmp_path / "mbox"
    fd = os.open(mbox, os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    e = dict(m2m_env(tmp_path, md), PATH=os.environ["PATH"])
    p = procs.start([program("maildir2mbox")], env=e, stderr=subprocess.PIPE)
    ino = os.fstat(fd).st_ino
    deadline = time.time() + 20
    while time.time() < deadline:  # the kernel lists the waiter (`->`) on our inode in /proc/locks
        if any("->" in line and "FLOCK" in line and (":%d " % ino) in line
               for line in open("/proc/locks")):
            break
        assert p.poll() is None
        time.sleep(0.01)
    else:
        pytest.fail("maildir2mbox never waited for the lock")
    assert mbox.read_bytes() == b"" and (md / "new" / "a").exists()
    os.close(fd)
    assert p.wait(20) == 0
    assert mbox.read_bytes() == b"From XXX " + myctime(OLD) + b"Subject: x\n\ny\n\n"


def test_maildir2mbox_cannot_write_mailtmp_leaves_everything(tmp_path):
    md = maildir(tmp_path / "M")
    put(md, "new", "a", b"x\n", OLD)
    (tmp_path / "mbox").write_bytes(b"")
    e = dict(m2m_env(tmp_path, md), MAILTMP=str(tmp_path / "no" / "tmp"))
    p = run("maildir2mbox", env=e)
    assert p.returncode == 111 and p.stderr.startswith(b"maildir2mbox: fatal: unable to create ")
    assert (md / "new" / "a").exists() and (tmp_path / "mbox").read_bytes() == b""


# ---------------------------------------------------------------- parsers

@given(st.binary(max_size=200), st.integers(min_value=0, max_value=2 ** 33))
def test_from_line_is_one_line(first, mtime):
    line = maildirscan.from_line(first, mtime)
    assert line.startswith(b"From ") and line.endswith(myctime(mtime)) and line.count(b"\n") == 1 + \
        first[14:-2].count(b"\n") * (first.startswith(b"Return-Path: <") and first.endswith(b"\n")
                                     and first[14:15] != b">")


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=">"), min_size=1,
               max_size=50))
def test_from_line_takes_the_return_path(addr):
    first = b"Return-Path: <" + addr.encode() + b">\n"
    assert maildirscan.from_line(first, OLD) == b"From " + addr.encode() + b" " + myctime(OLD)
    assert maildirscan.from_line(b"Return-Path: <>\n", OLD).startswith(b"From MAILER-DAEMON ")
    assert maildirscan.from_line(first[:-1], OLD).startswith(b"From XXX ")  # no LF: not a whole line


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_summary_stays_bounded_and_printable(pieces):
    s = maildirscan.Summary()
    for i, p in enumerate(pieces):
        if i % 2:
            s.field(b"Subject: " + p + b"\n")
        else:
            s.body(p)
    out = s.render()
    assert len(s.text) <= maildirscan.TEXT_MAX
    assert out.startswith(b"FROM ? TO <?>\n") and out.endswith(b"\n\n")
    assert all(32 <= c <= 126 for c in out[len(b"FROM ? TO <?>\n"):-2])


# ---------------------------------------------------------------- maildirwatch

def maildirwatch_on_pty(procs, md):
    """Start the installed maildirwatch for md with a pseudo-terminal as its output; return (process, master)."""
    master, slave = pty.openpty()
    p = procs.start([program("maildirwatch")], env={"PATH": os.environ["PATH"], "MAILDIR": str(md)},
                    stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    return p, master


def test_maildirwatch_shows_new_messages_on_a_terminal(tmp_path, procs):
    md = maildir(tmp_path / "M")
    put(md, "new", "1", b"Return-Path: <ann@x.example>\nDelivered-To: bob@y.example\nFrom: Ann <ann@x.example>\n"
        b"Subject: lunch\n\nat noon\x01ok\n", OLD)
    put(md, "new", "2", b"Subject: second\n\n" + b"z" * 400 + b"\n", OLD + 1)
    put(md, "cur", "3", b"Subject: seen\n\nold\n", OLD)
    p, master = maildirwatch_on_pty(procs, md)
    try:
        screen = read_screen(master, b"zzz\r\n\r\n")
    finally:
        procs.stop(p)
        os.close(master)
    second = b"FROM ? TO <?>\r\nsecond/" + b"z" * (158 - len(b"second/")) + b"\r\n\r\n"
    assert screen == (b"\033[;H\033[;J"
                      b"FROM <ann@x.example> TO <bob@y.example>\r\n\033[1mFrom: Ann <ann@x.example>\033[0m\r\n"
                      b"lunch/at noon/ok/\r\n\r\n" + second)


def test_maildirwatch_redraws_as_soon_as_mail_arrives(tmp_path, procs):
    """new/ is watched with inotify (pyinotify): a new message is shown within seconds, not after qmail's 30."""
    md = maildir(tmp_path / "M")
    put(md, "new", "1", b"Subject: first\n\none\n", OLD)
    p, master = maildirwatch_on_pty(procs, md)
    try:
        assert b"first/one/" in read_screen(master, b"first/one/")
        start = time.time()
        put(md, "new", "2", b"Subject: arrived\n\nnow\n", time.time())
        screen = read_screen(master, b"arrived/now/", timeout=25)
    finally:
        procs.stop(p)
        os.close(master)
    assert b"arrived/now/" in screen and time.time() - start < 10


def test_maildirwatch_needs_maildir(tmp_path):
    p = run("maildirwatch")
    assert (p.returncode, p.stderr) == (111, b"maildirwatch: fatal: MAILDIR not set\n")
