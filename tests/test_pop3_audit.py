"""An adversarial audit of reading mail: qmail-popup → qmail-checkpassword → qmail-pop3d under tcpserver with a
hostile client (pipelining, odd numbers, over-long lines and injection under STLS, a client that never reads or
leaves without QUIT) and a hostile local user's Maildir (FIFOs, directories, symlinks, files swapped after the
listing, planted names, CRLF files, two sessions at once), qmail-checkpassword's bad entries and homes, and
maildir2mbox with planted symlinks and hard links, a full disk and a concurrent rename of $MAIL
(docs/qmail-pop3d.8.md, qmail-checkpassword.8.md, maildir2mbox.1.md). Each test here failed before the fix
it names, or guards a protection no other test covers (the last one, qmail-local's mbox delivery, too)."""

import os
import poplib
import shutil
import socket
import ssl
import subprocess
import time

import pytest
from hypothesis import given, strategies as st

from conftest import program
from test_pop3 import MESSAGES, PASSWORD, checkpassword, login, pop, serve  # noqa: F401  (pop is a fixture)
from test_pop3_tls import (_cmd, cert, children, client_context, rss_kb,  # noqa: F401
                           serve as tls_serve, tls_session, written)
from pyqmail.lib.local import maildirscan
from pyqmail.lib.pop3 import checkpw, pop3d

OLD = 1_000_000_000


def plant(pop, sub, name, kind):  # noqa: F811
    """Put a FIFO or a directory (owned by the POP user, mtime in the past) at Maildir/sub/name."""
    path = pop.maildir / sub / name
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    os.chown(path, pop.uid, -1)
    os.utime(path, (OLD, OLD))
    return path


def read_until(f, end, deadline=20.0):
    """Lines from f until one equals end (or the peer closes); a timeout fails the test."""
    got = []
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        line = f.readline()
        got.append(line)
        if line in (end, b""):
            return got
    raise AssertionError("no %r within %s s: %r" % (end, deadline, got))


# ---------------------------------------------------------------- qmail-pop3d: a hostile user's Maildir

def test_fifos_and_directories_in_the_maildir_are_not_messages(procs, pop):  # noqa: F811
    # before: a FIFO was message 1 (RETR hung for ever, even after the client left: a tcpserver slot gone)
    # and a directory was a message whose RETR crashed the session ("internal error: IsADirectoryError")
    fifo = plant(pop, "new", "1.fifo", "fifo")
    folder = plant(pop, "cur", "2.dir", "dir")
    c = login(serve(procs, pop))
    c.sock.settimeout(10)
    assert c.stat() == (3, sum(len(m) for m in MESSAGES))
    assert [c.retr(i)[1][0] for i in (1, 2, 3)] == [b"From: a@example", b"Subject: two", b"Subject: three"]
    assert c.quit() == b"+OK "
    assert os.path.exists(fifo) and folder.is_dir()  # not renamed to cur/ at QUIT either
    assert sorted(os.listdir(pop.maildir / "new")) == ["1.fifo"]


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_a_message_swapped_after_the_listing_is_refused_not_hung(procs, pop, kind):  # noqa: F811
    c = login(serve(procs, pop))
    c.sock.settimeout(10)  # before: the FIFO's open() never returned and this timed out
    assert c.stat()[0] == 3
    path = pop.maildir / "new" / pop.names[0]
    path.unlink()
    plant(pop, "new", pop.names[0], kind)
    with pytest.raises(poplib.error_proto, match="unable to open that message"):
        c.retr(1)
    with pytest.raises(poplib.error_proto, match="unable to open that message"):
        c.top(1, 0)
    assert c.noop() == b"+OK "  # the session goes on
    assert c.retr(2)[1][0] == b"Subject: two"
    assert c.quit() == b"+OK "


def test_a_symlink_to_a_file_the_user_cannot_read_is_not_served(procs, pop, world_tmp):  # noqa: F811
    # qmail-pop3d reads as the user: a link to root's file (or another user's mail) gives nothing
    if os.getuid() != 0:
        pytest.skip("needs root: the file must be unreadable to the POP user")
    secret = world_tmp / "secret"
    secret.mkdir()
    (secret / "mail").write_bytes(b"Subject: not yours\n\nroot's secret\n")
    os.chmod(secret / "mail", 0o600)
    link = pop.maildir / "cur" / "0.link:2,"
    link.symlink_to(secret / "mail")
    os.utime(secret / "mail", (OLD, OLD))
    c = login(serve(procs, pop))
    assert c.stat()[0] == 4 and c.uidl(1) == b"+OK 1 0.link"  # listed (qmail's: stat follows the link)
    with pytest.raises(poplib.error_proto, match="unable to open that message"):
        c.retr(1)
    assert c.quit() == b"+OK "


def test_pop3d_scan_keeps_only_regular_files(tmp_path):
    md = tmp_path
    for sub in ("new", "cur"):
        (md / sub).mkdir()
    (md / "new" / "a").write_bytes(b"x\n")
    os.mkfifo(md / "new" / "f")
    (md / "cur" / "d").mkdir()
    (md / "cur" / "l").symlink_to(md / "new" / "a")  # a symlink to a regular file stays a message
    for p in ("new/a", "new/f", "cur/d"):
        os.utime(md / p, (OLD, OLD))
    here = os.getcwd()
    os.chdir(md)
    try:
        assert sorted(p for p, _ in pop3d.scan(time.time())) == [b"cur/l", b"new/a"]
        assert sorted(p for _, p in maildirscan.scan((b"new", b"cur"), time.time())) == [b"cur/l", b"new/a"]
        assert [p for _, p in maildirscan.scan((b"new", b"cur"), time.time(), follow=False)] == [b"new/a"]
    finally:
        os.chdir(here)


def test_uidl_of_planted_names_stays_one_line_each(procs, pop):  # noqa: F811
    # before: a name holding CR LF . CR LF ended the multi-line UIDL reply early and desynchronised the client
    for i, name in enumerate([b"x y", b"evil\r\n.\r\n9 fake"]):
        path = os.path.join(bytes(pop.maildir), b"cur", name + b":2,")
        with open(path, "wb") as f:
            f.write(b"Subject: planted\n\nbody\n")
        os.chown(path, pop.uid, -1)
        os.utime(path, (OLD + i, OLD + i))
    c = login(serve(procs, pop))
    resp, uids, _ = c.uidl()
    assert uids[:2] == [b"1 x?y", b"2 evil??.??9?fake"] and len(uids) == 5
    assert c.uidl(2) == b"+OK 2 evil??.??9?fake"
    assert c.noop() == b"+OK "  # still in step
    assert c.quit() == b"+OK "


@given(st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b))
def test_uids_are_printable_without_colons(name):
    box = pop3d.Mailbox([(b"cur/" + name, 1), (b"new/" + name, 1)])
    for i in (0, 1):
        uid = box.uid(i)
        assert all(0x21 <= c <= 0x7E for c in uid) and b":" not in uid and len(uid) <= len(name)


# ---------------------------------------------------------------- qmail-checkpassword

def test_checkpassword_skips_an_entry_with_an_impossible_uid(pop):  # noqa: F811
    # before: `internal error: OverflowError: uid is greater than maximum` (a crash, exit 111)
    with open(pop.tree / checkpw.PASSWORD_FILE, "ab") as f:
        for login_, ids in [(b"huge", b"99999999999999999999:1"), (b"minus", b"4294967295:4294967295"),
                            (b"biggid", b"1000:18446744073709551616")]:
            f.write(login_ + b":" + checkpw.make_hash(b"pw") + b":" + ids + b":/tmp\n")
    for login_ in (b"huge", b"minus", b"biggid"):
        r = checkpassword(pop.tree, login_ + b"\0pw\0\0")
        assert (r.returncode, r.stderr) == (1, b""), login_  # an unknown login: refused


def test_checkpassword_enters_home_as_the_user_not_as_root(pop, world_tmp):  # noqa: F811
    # HOME is a symlink to a directory only root may enter: the chdir happens after the change of user, so
    # qmail-pop3d can never be started in (and read relative to) a directory the user cannot enter
    if os.getuid() != 0:
        pytest.skip("needs root: the change of user")
    private = world_tmp / "private"
    (private / "Maildir" / "new").mkdir(parents=True)
    os.chmod(private, 0o700)
    link = world_tmp / "home-link"
    link.symlink_to(private)
    uid, gid = pop.uid, os.stat(pop.home).st_gid
    with open(pop.tree / checkpw.PASSWORD_FILE, "ab") as f:
        f.write(b"bob:" + checkpw.make_hash(b"pw") + b":%d:%d:%s\n" % (uid, gid, bytes(link)))
    r = checkpassword(pop.tree, b"bob\0pw\0\0", ("sh", "-c", "ls Maildir"))
    assert r.returncode == 111 and r.stdout == b""
    assert r.stderr == b"qmail-checkpassword: unable to become the user: Permission denied\n"


def test_a_message_with_crlf_line_ends(procs, pop):  # noqa: F811
    # before: each CRLF went out as CR CR LF, and TOP found no end of the header: `TOP n 0` sent everything
    path = pop.maildir / "cur" / "0.crlf:2,"
    path.write_bytes(b"Subject: crlf\r\nX: y\r\n\r\n.dot\r\nsecond\r\nbare\rcr\r\n" + b"more\r\n" * 1000)
    os.chown(path, pop.uid, -1)
    os.utime(path, (OLD, OLD))
    port = serve(procs, pop)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"USER alice\r\nPASS " + PASSWORD + b"\r\nTOP 1 0\r\nTOP 1 2\r\nRETR 1\r\nQUIT\r\n")
        got = b"".join(read_until(f, b""))
    head = b"Subject: crlf\r\nX: y\r\n\r\n"
    assert got.startswith(b"+OK \r\n+OK \r\n+OK \r\n" + head + b"\r\n.\r\n+OK \r\n" + head
                          + b"..dot\r\nsecond\r\n\r\n.\r\n+OK \r\n" + head + b"..dot\r\nsecond\r\nbare\rcr\r\n")
    assert got.endswith(b"more\r\n" * 1000 + b"\r\n.\r\n+OK \r\n")
    assert b"\r\r" not in got


def test_two_sessions_at_once_on_one_maildir(procs, pop):  # noqa: F811
    # before: once A's QUIT had moved new/X to cur/X:2, B could neither RETR nor delete X (B's DELE was lost:
    # `-ERR unable to unlink all deleted messages`, and the message came back in the next session)
    port = serve(procs, pop)
    a, b = login(port), login(port)
    assert a.stat()[0] == b.stat()[0] == 3
    assert a.dele(1) == b"+OK " and a.quit() == b"+OK "  # unlinks message 1, moves 2 and 3 to cur/
    with pytest.raises(poplib.error_proto, match="unable to open that message"):
        b.retr(1)  # really gone
    assert b.retr(2)[1][0] == b"Subject: two"
    assert b.top(3, 0)[1][0] == b"Subject: three"
    assert b.dele(2) == b"+OK "
    assert b.quit() == b"+OK "
    assert os.listdir(pop.maildir / "new") == [] and os.listdir(pop.maildir / "cur") == [pop.names[2] + ":2,"]


def test_pop3d_refuses_an_effective_uid_of_0(pop):  # noqa: F811
    # before: a checkpassword that changed only the real uid left qmail-pop3d serving with euid 0 (RETR of a
    # symlink in cur/ would then read any file)
    if os.getuid() != 0:
        pytest.skip("needs root")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("no setpriv")
    r = subprocess.run([setpriv, "--ruid", str(pop.uid), "--euid", "0", "--keep-groups", program("qmail-pop3d"),
                        "Maildir"], cwd=pop.home, input=b"STAT\r\nQUIT\r\n", capture_output=True, timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"qmail-pop3d invoked as uid 0, terminating\n")


# ---------------------------------------------------------------- a hostile client

@pytest.mark.parametrize("server", ["tcpserver", "qmail-tcpserver"])
def test_a_whole_session_pipelined_in_one_packet(procs, pop, server):  # noqa: F811
    # what follows PASS must reach qmail-pop3d, in order, none of it taken by qmail-popup or lost
    port = serve(procs, pop) if server == "tcpserver" else tls_serve(procs, pop, None, server)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK <")
        s.sendall(b"USER alice\r\nPASS " + PASSWORD + b"\r\nSTAT\r\nDELE 1\r\nDELE 1\r\nLIST 1\r\nTOP 2 0\r\n"
                  b"LAST\r\nQUIT\r\nNOOP\r\n")
        got = read_until(f, b"")
    size = sum(len(m) for m in MESSAGES)
    assert got == [b"+OK \r\n", b"+OK \r\n", b"+OK 3 %d\r\n" % size, b"+OK \r\n", b"-ERR already deleted\r\n",
                   b"-ERR already deleted\r\n", b"+OK \r\n", b"Subject: two\r\n", b"\r\n", b"\r\n", b".\r\n",
                   b"+OK 1\r\n", b"+OK \r\n", b""]
    assert sorted(os.listdir(pop.maildir / "cur")) == sorted(n + ":2," for n in pop.names[1:])
    assert os.listdir(pop.maildir / "new") == []


def test_a_client_that_leaves_without_quit_deletes_nothing(procs, pop):  # noqa: F811
    # qmail-pop3d runs under a shell that marks its end in $HOME, so the test waits for that, not a sleep
    ended = pop.home / "ended"
    checker = [program("qmail-checkpassword"), "sh", "-c", '"$@"; : > "$HOME/ended"', "sh"]
    port = serve(procs, pop, checker)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"USER alice\r\nPASS " + PASSWORD + b"\r\nDELE 1\r\nDELE 2\r\nNOOP\r\n")
        assert [f.readline() for _ in range(5)] == [b"+OK \r\n"] * 5  # USER, PASS, DELE, DELE, NOOP
        f.close()  # the socket closes only when its file is closed too
    deadline = time.monotonic() + 20
    while not ended.exists():
        assert time.monotonic() < deadline, "qmail-pop3d did not end after the client left"
        time.sleep(0.02)
    assert sorted(os.listdir(pop.maildir / "new")) == sorted(pop.names) and os.listdir(pop.maildir / "cur") == []


def test_a_client_that_never_reads_stops_qmail_pop3d_not_grows_it(procs, pop):  # noqa: F811
    big = b"Subject: big\n\n" + (b"x" * 75 + b"\n") * 200000  # 15 MB
    path = pop.maildir / "cur" / "0.big:2,"
    path.write_bytes(big)
    os.chown(path, pop.uid, -1)
    os.utime(path, (OLD, OLD))
    port = serve(procs, pop)
    server = procs.procs[-1].pid
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: a small window
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"USER alice\r\nPASS " + PASSWORD + b"\r\nRETR 1\r\n")  # then read nothing for a while
    found = []

    def pop3d_started():
        found[:] = [k for p in children(server) for k in children(p) if b"qmail-pop3d" in _cmd(k)]
        return found
    wait_for(pop3d_started, "no qmail-pop3d")
    pid = found[0]
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() - since < 1.0:  # until its writing has stopped for a second
        assert time.monotonic() < deadline
        now = written(pid)
        if now != last:
            last, since = now, time.monotonic()
        time.sleep(0.01)
    # blocked by the client, not buffering: about 10 MB measured (Python itself), 25 MB or more if it held the
    # message
    assert last < 8 * 1024 * 1024 and rss_kb(pid) < 24 * 1024
    assert f.readline() == b"+OK \r\n" and f.readline() == b"+OK \r\n" and f.readline() == b"+OK \r\n"
    got = b"".join(read_until(f, b".\r\n", deadline=60))
    assert got == big.replace(b"\n", b"\r\n") + b"\r\n.\r\n"
    s.sendall(b"QUIT\r\n")
    assert f.readline() == b"+OK \r\n"
    f.close()
    s.close()


def test_odd_message_numbers_in_one_session(procs, pop):  # noqa: F811
    c = login(serve(procs, pop))
    first, second = b"+OK 1 %d" % len(MESSAGES[0]), b"+OK 2 %d" % len(MESSAGES[1])
    for arg, reply in [("0", b"-ERR messages are counted from 1"), ("-1", b"-ERR syntax error"),
                       ("+1", b"-ERR syntax error"), ("4", b"-ERR not that many messages"),
                       ("9" * 40, b"-ERR not that many messages"), ("1x", first), ("   2", second),
                       ("18446744073709551616", b"-ERR messages are counted from 1"),  # 2^64 wraps: qmail's
                       ("18446744073709551618", second)]:
        try:
            got = c._shortcmd("LIST " + arg)
        except poplib.error_proto as e:
            got = e.args[0]
        assert got == reply, arg
    assert c.top(2, 2 ** 64 - 1)[1][-2:] == [b"line", b""]  # a huge line count wraps to 0: everything
    assert c.quit() == b"+OK "


# ---------------------------------------------------------------- maildir2mbox: planted links

def m2m(tmp_path, env=None):
    e = {"PATH": os.environ["PATH"], "MAILDIR": str(tmp_path / "Maildir"), "MAIL": str(tmp_path / "mbox"),
         "MAILTMP": str(tmp_path / "mbox.tmp")}
    e.update(env or {})
    return subprocess.run([program("maildir2mbox")], env=e, capture_output=True, timeout=10)


def maildir_with_one(tmp_path):
    md = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True)
    p = md / "new" / "1.a"
    p.write_bytes(b"Subject: x\n\nhello\n")
    os.utime(p, (OLD, OLD))
    return md


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_maildir2mbox_never_writes_through_a_planted_mailtmp(tmp_path, how):
    # before: MAILTMP was opened O_TRUNC following the link: the target was truncated and overwritten
    maildir_with_one(tmp_path)
    target = tmp_path / "precious"
    target.write_bytes(b"precious\n")
    if how == "symlink":
        (tmp_path / "mbox.tmp").symlink_to(target)
    else:
        os.link(target, tmp_path / "mbox.tmp")
    r = m2m(tmp_path)
    why = b"is a symbolic link" if how == "symlink" else b"has more than one link"
    tmp = bytes(tmp_path / "mbox.tmp")
    assert (r.returncode, r.stderr) == (111, b"maildir2mbox: fatal: unable to create %s: %s %s\n" % (tmp, tmp, why))
    assert target.read_bytes() == b"precious\n"
    assert (tmp_path / "mbox").read_bytes() == b""  # created for the lock, nothing more
    assert os.listdir(tmp_path / "Maildir" / "new") == ["1.a"]
    (tmp_path / "mbox.tmp").unlink()  # the administrator removes the planted link: then it works
    assert m2m(tmp_path).returncode == 0
    assert (tmp_path / "mbox").read_bytes().endswith(b"Subject: x\n\nhello\n\n")
    assert target.read_bytes() == b"precious\n" and os.listdir(tmp_path / "Maildir" / "new") == []


def test_maildir2mbox_a_full_disk_removes_nothing(tmp_path):
    # RLIMIT_FSIZE stands in for a full disk: the write to MAILTMP fails (EFBIG) midway
    import resource
    md = maildir_with_one(tmp_path)
    (tmp_path / "mbox").write_bytes(b"From XXX Sun Sep  9 01:46:40 2001\n\nold\n\n" * 4000)  # 160 KB
    before = (tmp_path / "mbox").read_bytes()

    def small():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    r = subprocess.run([program("maildir2mbox")], env={"PATH": os.environ["PATH"], "MAILDIR": str(md),
                       "MAIL": str(tmp_path / "mbox"), "MAILTMP": str(tmp_path / "mbox.tmp")},
                       capture_output=True, timeout=10, preexec_fn=small)
    assert r.returncode == 111
    assert r.stderr.startswith(b"maildir2mbox: fatal: unable to write to %s: " % bytes(tmp_path / "mbox.tmp"))
    assert (tmp_path / "mbox").read_bytes() == before and os.listdir(md / "new") == ["1.a"]


def test_maildir2mbox_refuses_a_hard_linked_mail(tmp_path):
    # before: the copy of what the link shares (run by root: any file on that file system) became the new mbox,
    # and the other name kept the old text
    md = maildir_with_one(tmp_path)
    target = tmp_path / "other-name"
    target.write_bytes(b"not a mailbox\n")
    os.link(target, tmp_path / "mbox")
    r = m2m(tmp_path)
    assert (r.returncode, r.stderr) == (111, b"maildir2mbox: fatal: unable to lock %s: it has other hard links\n"
                                        % bytes(tmp_path / "mbox"))
    assert (tmp_path / "mbox").read_bytes() == b"not a mailbox\n" and os.listdir(md / "new") == ["1.a"]


@pytest.mark.parametrize("dangling", [True, False])
def test_maildir2mbox_refuses_a_symlinked_mail(tmp_path, dangling):
    # before: a dangling link's target was created (O_CREAT), and rename() then replaced the link by a
    # copy, so the mbox it pointed to never got the messages
    md = maildir_with_one(tmp_path)
    target = tmp_path / "elsewhere"
    if not dangling:
        target.write_bytes(b"")
    (tmp_path / "mbox").symlink_to(target)
    r = m2m(tmp_path)
    assert r.returncode == 111
    assert r.stderr == b"maildir2mbox: fatal: unable to lock %s: it is a symbolic link\n" % bytes(tmp_path / "mbox")
    assert (tmp_path / "mbox").is_symlink()
    assert target.exists() != dangling and (dangling or target.read_bytes() == b"")
    assert os.listdir(md / "new") == ["1.a"]  # nothing removed


def test_maildir2mbox_skips_fifos_and_directories(tmp_path):
    # before: open() of the FIFO blocked for ever while holding the mbox lock (deliveries waited too)
    md = maildir_with_one(tmp_path)
    os.mkfifo(md / "new" / "0.fifo")
    (md / "cur" / "0.dir").mkdir()
    for p in ("new/0.fifo", "cur/0.dir"):
        os.utime(md / p, (OLD - 1, OLD - 1))
    r = m2m(tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mbox").read_bytes().count(b"\nFrom ") + 1 == 1
    assert os.listdir(md / "new") == ["0.fifo"] and os.listdir(md / "cur") == ["0.dir"]


# ---------------------------------------------------------------- a hostile client under STLS

@pytest.mark.parametrize("server", ["tcpserver", "qmail-tcpserver"])
def test_stls_then_a_whole_session_in_one_record(procs, cert, server):
    # what follows PASS was read by qmail-popup's TLS reader: it must reach qmail-pop3d first, in order
    t, f = tls_session(procs, cert, server=server)
    t.sendall(b"USER alice\r\nPASS " + PASSWORD + b"\r\nSTAT\r\nDELE 1\r\nTOP 2 0\r\nQUIT\r\n")
    got = read_until(f, b"")
    assert got == [b"+OK \r\n", b"+OK \r\n", b"+OK 3 %d\r\n" % sum(map(len, MESSAGES)), b"+OK \r\n", b"+OK \r\n",
                   b"Subject: two\r\n", b"\r\n", b"\r\n", b".\r\n", b"+OK \r\n", b""]
    assert sorted(os.listdir(cert.maildir / "cur")) == sorted(n + ":2," for n in cert.names[1:])
    t.close()


@pytest.mark.parametrize("after_user", [False, True])
def test_an_overlong_line_under_tls_ends_the_session(procs, cert, after_user):
    t, f = tls_session(procs, cert)
    if after_user:
        t.sendall(b"USER alice\r\n")
        assert f.readline() == b"+OK \r\n"
    t.sendall(b"PASS " + b"x" * 5000 + b"\r\nQUIT\r\n")
    assert f.readline() == b"-ERR line too long\r\n"
    try:
        rest = f.read()
    except (OSError, ssl.SSLError):
        rest = b""
    assert rest == b""
    t.close()
    assert sorted(os.listdir(cert.maildir / "new")) == sorted(cert.names)


@pytest.mark.parametrize("server", ["tcpserver", "qmail-tcpserver"])
def test_plaintext_injected_after_stls_is_never_run_inside_tls(procs, cert, server):
    # the CVE-2011-0411 pattern: commands sent in plaintext behind STLS must not be taken as said over TLS
    port = tls_serve(procs, cert, None, server)  # loopback: USER would be accepted if it were run
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = raw.makefile("rb")
    assert f.readline().startswith(b"+OK <")
    raw.sendall(b"STLS\r\nUSER alice\r\nPASS " + PASSWORD + b"\r\nDELE 1\r\nQUIT\r\n")
    assert f.readline() == b"+OK Begin TLS negotiation\r\n"
    try:
        t = client_context().wrap_socket(raw)
        t.settimeout(30)
        t.sendall(b"NOOP\r\n")
        got = t.recv(4096)
    except (OSError, ssl.SSLError):
        got = b""  # the injected bytes went into the handshake, which failed: the session is over
    assert got in (b"", b"+OK \r\n")
    assert sorted(os.listdir(cert.maildir / "new")) == sorted(cert.names)  # nothing deleted or moved


def waiting_for_lock(pid, inode):
    """Whether pid waits for a flock on the file with this inode (/proc/locks' `->` lines)."""
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if "->" in fields and str(pid) in fields and any(x.endswith(":%d" % inode) for x in fields):
                return True
    return False


def wait_for(condition, what, deadline=20.0):
    stop = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < stop, what
        time.sleep(0.01)


def test_maildir2mbox_locks_the_mbox_that_is_there_when_its_turn_comes(tmp_path):
    # before: waiting on the old $MAIL's lock while another run renamed its copy over $MAIL, maildir2mbox went on
    # holding a lock on a file no longer there, so a delivery appending to the new $MAIL under its lock at
    # that moment was overwritten by maildir2mbox's rename: lost
    import fcntl
    md = maildir_with_one(tmp_path)
    mbox = tmp_path / "mbox"
    mbox.write_bytes(b"")
    first = os.open(mbox, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(first, fcntl.LOCK_EX)  # as another maildir2mbox at work
    p = subprocess.Popen([program("maildir2mbox")], env={"PATH": os.environ["PATH"], "MAILDIR": str(md),
                         "MAIL": str(mbox), "MAILTMP": str(tmp_path / "mbox.tmp")}, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: waiting_for_lock(p.pid, os.fstat(first).st_ino), "maildir2mbox never waited for the lock")
        # the other run renames its copy over $MAIL, then a delivery locks the new $MAIL and appends to it
        (tmp_path / "other").write_bytes(b"")
        os.rename(tmp_path / "other", mbox)
        second = os.open(mbox, os.O_WRONLY | os.O_APPEND)
        fcntl.flock(second, fcntl.LOCK_EX)
        os.close(first)  # the other run ends
        wait_for(lambda: p.poll() is not None or waiting_for_lock(p.pid, os.fstat(second).st_ino),
                 "maildir2mbox neither ended nor waited for the new mbox's lock")
        os.write(second, b"From late Sun Sep  9 01:46:40 2001\n\nlate delivery\n\n")
        os.fsync(second)
        os.close(second)
        assert p.wait(timeout=20) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
    text = mbox.read_bytes()
    assert b"late delivery" in text and text.endswith(b"Subject: x\n\nhello\n\n")
    assert os.listdir(md / "new") == []


def test_qmail_locals_mbox_delivery_survives_maildir2mbox_renaming_the_mbox(tmp_path):
    # qmail-local waits for maildir2mbox's lock on the old $MAIL, maildir2mbox renames its copy over $MAIL and
    # ends; the delivery then appends to the old, unlinked file and reports success: the message is lost
    import fcntl
    import sys
    mbox = tmp_path / "mbox"
    mbox.write_bytes(b"")
    message = tmp_path / "message"
    message.write_bytes(b"Subject: delivered\n\nwhile maildir2mbox ran\n")
    held = os.open(mbox, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(held, fcntl.LOCK_EX)  # maildir2mbox at work
    script = ("import os, sys\nfrom pyqmail.lib.local import mbox\n"
              "mbox.deliver(os.fsencode(sys.argv[1]), b'From x Sun Sep  9 01:46:40 2001\\n', os.open(sys.argv[2], 0))\n")
    p = subprocess.Popen([sys.executable, "-c", script, str(mbox), str(message)])
    try:
        wait_for(lambda: waiting_for_lock(p.pid, os.fstat(held).st_ino), "the delivery never waited for the lock")
        (tmp_path / "copy").write_bytes(b"From XXX Sun Sep  9 01:46:40 2001\n\nmoved\n\n")
        os.rename(tmp_path / "copy", mbox)  # maildir2mbox's rename of MAILTMP over $MAIL
        os.close(held)
        assert p.wait(timeout=40) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert b"while maildir2mbox ran" in mbox.read_bytes()


def test_maildir2mbox_run_by_root_never_copies_a_symlinked_message(tmp_path, world_tmp):
    # before: a user's Maildir holding new/x -> a file only root may read, and maildir2mbox run by root for that
    # user (their own, existing MAILTMP is reused): the file's text landed in the user's mbox
    if os.getuid() != 0:
        pytest.skip("needs root")
    import pwd
    nobody = pwd.getpwnam("nobody")
    md = maildir_with_one(tmp_path)
    secret = world_tmp / "root-only"
    secret.write_bytes(b"Subject: root only\n\nsecret text\n")
    os.chmod(secret, 0o600)
    os.utime(secret, (OLD - 1, OLD - 1))
    (md / "new" / "0.link").symlink_to(secret)
    os.utime(md / "new" / "0.link", (OLD - 1, OLD - 1), follow_symlinks=False)
    for p in (tmp_path / "mbox", tmp_path / "mbox.tmp"):
        p.write_bytes(b"")
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    r = m2m(tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "mbox").read_bytes()
    assert b"secret text" not in text and text.endswith(b"Subject: x\n\nhello\n\n")
    assert os.listdir(md / "new") == ["0.link"]  # left where it is


@pytest.mark.parametrize("sub", ["tmp", "new", "cur"])
def test_maildir2mbox_run_by_root_never_works_through_a_symlinked_subdirectory(tmp_path, sub):
    # before: with tmp/ a symlink, the 36-hour cleaning unlinked old files wherever it pointed; with new/ or cur/
    # one, every old regular file there was copied into the mbox and then unlinked (run by root: /etc)
    md = tmp_path / "Maildir"
    for s in ("new", "cur", "tmp"):
        if s != sub:
            (md / s).mkdir(parents=True)
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "passwd").write_bytes(b"precious\n")
    os.utime(victims / "passwd", (OLD, OLD))  # old enough for the cleaning and for the listing
    (md / sub).symlink_to(victims)
    r = m2m(tmp_path)
    if sub == "tmp":
        assert r.returncode == 0, r.stderr  # nothing to move; tmp/ left alone
    else:
        assert (r.returncode, r.stderr) == (111, b"maildir2mbox: fatal: unable to scan $MAILDIR/%s: it is a "
                                            b"symbolic link\n" % sub.encode())
    assert (victims / "passwd").read_bytes() == b"precious\n"
    assert not (tmp_path / "mbox").exists() or b"precious" not in (tmp_path / "mbox").read_bytes()
