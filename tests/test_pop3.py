"""qmail-popup, qmail-checkpassword and qmail-pop3d (docs/qmail-popup.8.md, qmail-pop3d.8.md,
qmail-checkpassword.8.md): Python's poplib (and fetchmail) against the three under ucspi-tcp's tcpserver,
the byte-exact replies and qmail's quirks, the hand-over on fd 3, bounded lines, and the parsers."""

import hashlib
import os
import poplib
import pwd
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from conftest import need, program, qenv, tcpserver
from pyqmail.lib.pop3 import checkpw, pop3d, pop3io, popup

PASSWORD = b"s3cret pass"
MESSAGES = [
    b"From: a@example\nSubject: one\n\nfirst body\n.leading dot\nlast\n",
    b"Subject: two\n\n" + b"line\n" * 10,
    b"Subject: three\n\nno final newline",
]


def account():
    """(uid, gid) the POP user runs as: nobody when root (qmail-pop3d refuses root), else ourselves."""
    if os.getuid() == 0:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    return os.getuid(), os.getgid()


@pytest.fixture
def pop(tree, world_tmp):
    """A user `alice` in users/pop3passwords with three messages in ~/Maildir/new; returns a namespace."""
    uid, gid = account()
    home = world_tmp / "alice"
    for sub in ("new", "cur", "tmp"):
        (home / "Maildir" / sub).mkdir(parents=True)
    past = time.time() - 100
    names = []
    for i, text in enumerate(MESSAGES):
        name = "%d.M%dP1.host" % (1000 + i, i)
        path = home / "Maildir" / "new" / name
        path.write_bytes(text)
        os.utime(path, (past + i, past + i))  # listed (mtime before now) in this order
        names.append(name)
    line = b"alice:" + checkpw.make_hash(PASSWORD) + b":%d:%d:%s\n" % (uid, gid, str(home).encode())
    pwfile = tree / checkpw.PASSWORD_FILE
    pwfile.write_bytes(b"# test accounts\n" + line)
    os.chmod(pwfile, 0o600)
    for dirpath, dirs, files in os.walk(home):
        for n in [dirpath] + [os.path.join(dirpath, f) for f in files]:
            os.chown(n, uid, gid)

    class Pop:
        pass
    p = Pop()
    p.tree, p.home, p.maildir, p.names, p.uid = tree, home, home / "Maildir", names, uid
    return p


def serve(procs, pop, checker=None):
    """qmail-popup → qmail-checkpassword → qmail-pop3d under tcpserver; return the port."""
    checker = checker or [program("qmail-checkpassword")]
    return tcpserver(procs, pop.tree, [program("qmail-popup"), "pop.example", *checker,
                                       program("qmail-pop3d"), "Maildir"])


def login(port):
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    client.user("alice")
    client.pass_(PASSWORD.decode())
    return client


def raw(port, lines, end=True):
    """Send lines (bytes, CRLF added) one at a time, each after the previous reply; return everything read."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        got = [f.readline()]
        for line in lines:
            s.sendall(line + b"\r\n")
            got.append(f.readline())
        if end:
            s.shutdown(socket.SHUT_WR)
            got.append(f.read())
        return got


def test_session_every_command(procs, pop):
    port = serve(procs, pop)
    c = poplib.POP3("127.0.0.1", port, timeout=30)
    welcome = c.getwelcome()
    assert welcome.startswith(b"+OK <") and welcome.endswith(b"@pop.example>")
    pid, when = welcome[5:-len(b"@pop.example>")].split(b".")
    assert int(pid) > 0 and abs(int(when) - time.time()) < 60
    assert c.noop() == b"+OK "
    assert c.user("alice") == b"+OK "
    assert c.pass_(PASSWORD.decode()) == b"+OK "
    sizes = [len(m) for m in MESSAGES]
    assert c.stat() == (3, sum(sizes))
    resp, listing, _ = c.list()
    assert resp == b"+OK " and listing == [b"%d %d" % (i + 1, s) for i, s in enumerate(sizes)]
    assert c.list(2) == b"+OK 2 %d" % sizes[1]
    resp, uids, _ = c.uidl()
    assert uids == [b"%d %s" % (i + 1, n.encode()) for i, n in enumerate(pop.names)]
    assert c.uidl(3) == b"+OK 3 " + pop.names[2].encode()
    resp, lines, _ = c.retr(1)
    # poplib undoes the dot-stuffing; qmail adds an empty line before the final dot
    assert lines == [b"From: a@example", b"Subject: one", b"", b"first body", b".leading dot", b"last", b""]
    resp, lines, _ = c.retr(3)
    assert lines == [b"Subject: three", b"", b"no final newline", b""]
    resp, lines, _ = c.top(2, 3)
    assert lines == [b"Subject: two", b"", b"line", b"line", b"line", b""]
    resp, lines, _ = c.top(2, 0)
    assert lines == [b"Subject: two", b"", b""]
    assert c.dele(2) == b"+OK "
    assert c.stat() == (3, sizes[0] + sizes[2])  # qmail counts the deleted message
    assert c.list()[1] == [b"1 %d" % sizes[0], b"3 %d" % sizes[2]]
    assert c._shortcmd("LAST") == b"+OK 2"
    with pytest.raises(poplib.error_proto, match="already deleted"):
        c.retr(2)
    assert c.rset() == b"+OK "
    assert c._shortcmd("LAST") == b"+OK 0"
    assert c.stat() == (3, sum(sizes))
    assert c.dele(1) == b"+OK "
    assert c.quit() == b"+OK "
    new = sorted(os.listdir(pop.maildir / "new"))
    cur = sorted(os.listdir(pop.maildir / "cur"))
    assert new == [] and cur == sorted(n + ":2," for n in pop.names[1:])


def test_errors_after_login(procs, pop):
    port = serve(procs, pop)
    c = login(port)
    for command, error in [("RETR 0", b"-ERR messages are counted from 1"),
                           ("RETR 4", b"-ERR not that many messages"),
                           ("DELE x", b"-ERR syntax error"), ("LIST 99", b"-ERR not that many messages"),
                           ("UIDL 0", b"-ERR messages are counted from 1"), ("TOP", b"-ERR syntax error"),
                           ("CAPA", b"-ERR unimplemented"), ("STLS", b"-ERR unimplemented")]:
        with pytest.raises(poplib.error_proto) as e:
            c._shortcmd(command)
        assert e.value.args[0] == error, command
    c.quit()
    assert len(os.listdir(pop.maildir / "new")) == 0  # QUIT moves the unread to cur/


def test_authorization_replies_byte_exact(procs, pop):
    port = serve(procs, pop)
    got = raw(port, [b"STAT", b"PASS x", b"USER", b"user alice", b"NOOP", b"PASS", b"APOP alice", b"QUIT"])
    assert got[0].startswith(b"+OK <") and got[0].endswith(b"@pop.example>\r\n")
    assert got[1:] == [b"-ERR authorization first\r\n", b"-ERR USER first\r\n", b"-ERR syntax error\r\n",
                       b"+OK \r\n", b"+OK \r\n", b"-ERR syntax error\r\n", b"-ERR syntax error\r\n",
                       b"+OK \r\n", b""]


def test_transaction_replies_byte_exact(procs, pop):
    port = serve(procs, pop)
    got = raw(port, [b"USER alice", b"PASS " + PASSWORD, b"stat", b"list 1", b"LAST", b"noop",
                     b"TOP 1 0", b"QUIT"])
    size = len(MESSAGES[0])
    assert b"".join(got[1:]) == (b"+OK \r\n+OK \r\n+OK 3 %d\r\n+OK 1 %d\r\n+OK 0\r\n+OK \r\n"
                                 % (sum(map(len, MESSAGES)), size)
                                 + b"+OK \r\nFrom: a@example\r\nSubject: one\r\n\r\n\r\n.\r\n+OK \r\n")


def test_wrong_password(procs, pop):
    port = serve(procs, pop)
    c = poplib.POP3("127.0.0.1", port, timeout=30)
    c.user("alice")
    with pytest.raises(poplib.error_proto, match="authorization failed"):
        c.pass_("wrong")
    assert c.file.read() == b""  # the session ends
    c.close()
    c = poplib.POP3("127.0.0.1", port, timeout=30)
    c.user("nobody-here")
    with pytest.raises(poplib.error_proto) as e:
        c.pass_(PASSWORD.decode())
    assert e.value.args[0] == b"-ERR authorization failed"  # no hint which part was wrong
    c.close()
    assert sorted(os.listdir(pop.maildir / "new")) == sorted(pop.names)


FAKE = textwrap.dedent("""\
    import os, sys
    data = b""
    while True:
        chunk = os.read(3, 4096)
        if not chunk:
            break
        data += chunk
    open(sys.argv[1], "wb").write(data)
    os._exit(int(sys.argv[2]))
    """)


@pytest.mark.parametrize("code, reply", [(1, b"-ERR authorization failed\r\n"), (0, b"")])
def test_apop_and_pass_hand_over_fd3(procs, pop, world_tmp, code, reply):
    script = world_tmp / "fake.py"
    script.write_text(FAKE)
    out = world_tmp / "fd3"
    port = tcpserver(procs, pop.tree, [program("qmail-popup"), "h.example", sys.executable, str(script),
                                       str(out), str(code)])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        greeting = f.readline()
        digest = hashlib.md5(greeting[4:-2] + b"pw").hexdigest().encode()
        s.sendall(b"APOP  bob " + digest + b"\r\n")
        assert f.read() == reply
    stamp = greeting[4:-2]
    assert out.read_bytes() == b"bob\0" + digest + b"\0" + stamp + b"\0"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        stamp = f.readline()[4:-2]
        s.sendall(b"USER  carol x \r\nPASS a b\r\n")
        assert f.readline() == b"+OK \r\n"
        assert f.read() == reply
    assert out.read_bytes() == b"carol x \0a b\0" + stamp + b"\0"


def test_child_crash_reported(procs, pop, world_tmp):
    script = world_tmp / "crash.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    port = tcpserver(procs, pop.tree, [program("qmail-popup"), "h", sys.executable, str(script)])
    got = raw(port, [b"USER u", b"PASS p"])
    assert got[2] == b"-ERR aack, child crashed\r\n" and got[3] == b""


def test_popup_usage():
    r = subprocess.run([program("qmail-popup"), "host"], stdin=subprocess.DEVNULL, capture_output=True)
    assert r.returncode == 1 and r.stdout == b"-ERR usage: popup hostname subprogram\r\n"


@pytest.mark.parametrize("after_login", [False, True])
def test_over_long_line_ends_the_session(procs, pop, after_login):
    port = serve(procs, pop)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        f.readline()
        if after_login:
            s.sendall(b"USER alice\r\nPASS " + PASSWORD + b"\r\n")
            assert f.readline() == b"+OK \r\n" and f.readline() == b"+OK \r\n"
        s.sendall(b"NOOP " + b"x" * 1100 + b"\r\nNOOP\r\n")
        assert f.readline() == b"-ERR line too long\r\n"
        assert f.read() == b""
    assert sorted(os.listdir(pop.maildir / "new")) == sorted(pop.names)  # no QUIT: nothing moved


def test_longest_line_accepted(procs, pop):
    port = serve(procs, pop)
    line = b"NOOP " + b"x" * (pop3io.LINE_MAX - 7)  # with CRLF: exactly LINE_MAX bytes
    assert raw(port, [line, b"QUIT"])[1:] == [b"+OK \r\n", b"+OK \r\n", b""]


def test_endless_input(procs, pop):
    port = serve(procs, pop)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        f.readline()
        sent = 0
        try:
            while sent < 50 << 20:
                s.sendall(b"y" * 65536)
                sent += 65536
        except OSError:
            pass  # the server stopped reading and closed: a reset
        try:
            rest = f.read()
        except OSError:
            rest = b""
    assert sent < 50 << 20 and rest in (b"", b"-ERR line too long\r\n")


def test_pop3d_refuses_root_and_missing_maildir(tree, world_tmp):
    if os.getuid() == 0:
        r = subprocess.run([program("qmail-pop3d"), "Maildir"], capture_output=True, stdin=subprocess.DEVNULL)
        assert r.returncode == 1 and r.stderr == b"qmail-pop3d invoked as uid 0, terminating\n"
        uid = account()[0]
    else:
        uid = None
    r = subprocess.run([program("qmail-pop3d"), str(world_tmp / "none")], capture_output=True,
                       stdin=subprocess.DEVNULL, user=uid)
    assert r.returncode == 0 and r.stdout == b"-ERR this user has no $HOME/Maildir\r\n"


def checkpassword(tree, data, argv=("true",), **kw):
    """Run qmail-checkpassword with data on fd 3 (through a file: a shell's redirection)."""
    fd3 = Path(tree) / "fd3-request"
    fd3.write_bytes(data)
    return subprocess.run(["sh", "-c", 'exec "$@" 3< "$FD3"', "sh", program("qmail-checkpassword"), *argv],
                          env=qenv(tree, FD3=fd3), capture_output=True, stdin=subprocess.DEVNULL, **kw)


def test_checkpassword_sets_up_the_user(pop):
    res = checkpassword(pop.tree, b"alice\0" + PASSWORD + b"\0<1.2@h>\0",
                        ("sh", "-c", 'echo "$USER $HOME $SHELL"; pwd; id -u'))
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().split("\n") == ["alice %s /bin/sh" % pop.home, str(pop.home), str(pop.uid), ""]


def test_checkpassword_refusals(pop):
    start = time.monotonic()
    assert checkpassword(pop.tree, b"alice\0wrong\0\0").returncode == 1
    assert time.monotonic() - start >= checkpw.DELAY  # a refusal takes its time
    assert checkpassword(pop.tree, b"alice\0\0\0").returncode == 1  # empty password
    assert checkpassword(pop.tree, b"alice" + PASSWORD).returncode == 2  # no NULs: misuse
    assert checkpassword(pop.tree, b"x" * 600 + b"\0p\0\0").returncode == 2
    assert checkpassword(pop.tree, b"alice\0" + PASSWORD + b"\0\0", argv=()).returncode == 2
    root = b"toor:" + checkpw.make_hash(b"pw") + b":0:0:/:/bin/sh\n"
    with open(pop.tree / checkpw.PASSWORD_FILE, "ab") as f:
        f.write(root)
    assert checkpassword(pop.tree, b"toor\0pw\0\0").returncode == 1  # root is refused
    assert checkpassword(pop.tree, b"alice\0" + PASSWORD + b"\0\0", argv=("/nonexistent/prog",)).returncode == 111


def test_checkpassword_hash_tool(tree):
    r = subprocess.run([program("qmail-checkpassword"), "-H"], input=b"pw word\n", capture_output=True)
    assert r.returncode == 0
    field = r.stdout.rstrip(b"\n")
    assert checkpw.verify_scrypt(b"pw word", field) and not checkpw.verify_scrypt(b"pw wore", field)
    assert field != checkpw.make_hash(b"pw word")  # salted


def test_crypt_shadow_hashes():
    # the SHA-crypt specification's first test vector
    vector = b"$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
    if checkpw.crypt(b"x", b"$6$abc") is None:
        pytest.skip("no libcrypt")
    assert checkpw.verify_crypt(b"Hello world!", vector)
    assert not checkpw.verify_crypt(b"Hello world?", vector)
    assert not checkpw.verify_crypt(b"", b"!" + vector[:-1])
    assert not checkpw.verify_crypt(b"x", b"*")


def test_fetchmail_retrieves_and_deletes(procs, pop, world_tmp):
    need("fetchmail")
    port = serve(procs, pop)
    out = world_tmp / "fetched"
    rc = world_tmp / "fetchmailrc"
    rc.write_text('poll 127.0.0.1 protocol pop3 port %d user "alice" password "%s" no keep '
                  'sslproto "" mda "cat >> %s"\n' % (port, PASSWORD.decode(), out))
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=str(world_tmp), FETCHMAILHOME=str(world_tmp))
    r = subprocess.run(["fetchmail", "-f", str(rc), "--nosyslog"], env=env, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0, r.stderr
    got = out.read_bytes()
    for text in (b"first body", b"Subject: two", b"no final newline"):
        assert text in got
    assert os.listdir(pop.maildir / "new") == [] and os.listdir(pop.maildir / "cur") == []


# ---- the parsers and state machines, in process

def reference_parse(line):
    """qmail's commands(), written the C way: NUL ends, CR before LF dropped, verb, spaces, argument."""
    if line[-1:] == b"\r":
        line = line[:-1]
    buf = bytearray(line) + b"\0"
    end = buf.index(0)
    i = 0
    while i < end and buf[i] != 32:
        i += 1
    arg = i
    while arg < end and buf[arg] == 32:
        arg += 1
    return bytes(buf[:i]).lower(), bytes(buf[arg:end])


@given(st.binary(max_size=80).filter(lambda b: b"\n" not in b))
def test_parse_matches_qmail(line):
    verb, arg = pop3io.parse(line)
    assert (verb, arg) == reference_parse(line)
    assert b" " not in verb and b"\0" not in verb + arg and not arg.startswith(b" ")


@given(st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=20), st.binary(max_size=30))
def test_line_reader_bounded_and_exact(lines, tail):
    r, w = os.pipe()
    data = b"".join(line + b"\n" for line in lines) + tail.replace(b"\n", b"")
    os.write(w, data)
    os.close(w)
    reader = pop3io.LineReader(r, timeout=5, exact=True)
    try:
        assert [reader.line() for _ in lines] == lines
        with pytest.raises(pop3io.Closed):
            reader.line()
    finally:
        os.close(r)


def test_line_reader_timeout_and_limit():
    r, w = os.pipe()
    try:
        with pytest.raises(pop3io.Closed):
            pop3io.LineReader(r, timeout=0.1).line()
        os.write(w, b"z" * (pop3io.LINE_MAX + 10))
        with pytest.raises(pop3io.LineTooLong):
            pop3io.LineReader(r, timeout=5).line()
    finally:
        os.close(r)
        os.close(w)


def reference_blast(message, limit):
    """qmail-pop3d's blast(), line by line; but a CR already before an LF is not doubled (nor counted when
    looking for the header's end), as in docs/qmail-pop3d.8.md."""
    out = b""
    inheaders = True
    lines = message.split(b"\n")
    for i, line in enumerate(lines):
        match = i < len(lines) - 1
        if not match and not line:
            break
        if limit and not inheaders:
            limit -= 1
            if not limit:
                break
        if match and line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            inheaders = False
        elif line[:1] == b".":
            out += b"."
        out += line + b"\r\n"
    return out + b"\r\n.\r\n"


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=300).map(lambda b: b.replace(b"a", b"\n").replace(b"b", b".")),
                 st.lists(st.sampled_from([b"\n", b".", b"\r", b"x", b"\r\n", b"\r\n\r\n"]), max_size=60).map(b"".join)),
       st.integers(0, 6), st.integers(1, 7))
def test_blast_matches_qmail(message, limit, chunk):
    pos = [0]

    def read(n):
        piece = message[pos[0]:pos[0] + min(n, chunk)]
        pos[0] += len(piece)
        return piece
    assert b"".join(pop3d.blast(read, limit)) == reference_blast(message, limit)


@given(st.binary(max_size=30))
def test_scan_ulong(s):
    n, used = pop3d.scan_ulong(s)
    digits = len(s) - len(s.lstrip(b"0123456789"))
    assert used == digits and n == (int(s[:used]) % (1 << 64) if used else 0)


@given(st.lists(st.tuples(st.sampled_from(["dele", "rset", "list", "stat", "retr", "top"]),
                          st.sampled_from([b"", b"0", b"1", b"2", b"3", b"4", b"x", b"2 1", b"18446744073709551617"])),
                max_size=25))
def test_mailbox_state_machine(commands):
    box = pop3d.Mailbox([(b"new/a:2,", 10), (b"cur/b:2,S", 20), (b"new/c", 30)])
    deleted = set()
    last = 0
    for verb, arg in commands:
        n, used = pop3d.scan_ulong(arg)
        if verb == "rset":
            assert box.rset() == b"+OK \r\n"
            deleted, last = set(), 0
            continue
        if verb == "stat":
            total = sum(s for i, s in enumerate((10, 20, 30)) if i + 1 not in deleted)
            assert box.stat() == b"+OK 3 %d\r\n" % total
            continue
        if verb == "list" and not arg:
            want = b"".join(b"%d %d\r\n" % (i, s) for i, s in ((1, 10), (2, 20), (3, 30)) if i not in deleted)
            assert box.listing(b"", False) == b"+OK \r\n" + want + b".\r\n"
            continue
        if not used:
            expect = b"-ERR syntax error\r\n"
        elif n == 0:
            expect = b"-ERR messages are counted from 1\r\n"
        elif n > 3:
            expect = b"-ERR not that many messages\r\n"
        elif n in deleted:
            expect = b"-ERR already deleted\r\n"
        else:
            expect = None
        if verb == "dele":
            assert box.dele(arg) == (expect or b"+OK \r\n")
            if expect is None:
                deleted.add(n)
                last = max(last, n)
        elif verb == "list":
            assert box.listing(arg, False) == (expect or b"+OK %d %d\r\n" % (n, n * 10))
        else:
            error, i, limit = box.top(arg)
            assert error == (expect or b"")
        assert box.last == last
    assert box.uid(0) == b"a" and box.uid(1) == b"b" and box.uid(2) == b"c"


@given(st.lists(st.tuples(st.sampled_from([b"user", b"pass", b"apop", b"noop", b"quit", b"stat", b"USER"]),
                          st.binary(max_size=12).filter(lambda b: b"\0" not in b and b"\n" not in b)),
                max_size=12))
def test_popup_state_machine(commands):
    p = popup.Popup(b"h.example", 42, 7)
    assert p.greeting() == b"+OK <42.7@h.example>\r\n"
    user = None
    for verb, arg in commands:
        reply, auth, end = p.command(verb, arg)
        if verb == b"user" and arg:
            user = arg
            assert (reply, auth, end) == (b"+OK \r\n", None, False)
        elif verb == b"pass" and user is not None and arg:
            assert auth.data() == user + b"\0" + arg + b"\0<42.7@h.example>\0" and end
            return
        elif verb == b"apop" and b" " in arg:
            u, _, pw = arg.partition(b" ")
            assert auth.data() == u + b"\0" + pw + b"\0<42.7@h.example>\0" and end
            return
        elif verb == b"quit":
            assert (reply, auth, end) == (b"+OK \r\n", None, True)
            return
        else:
            assert auth is None and not end and reply in (
                b"+OK \r\n", b"-ERR syntax error\r\n", b"-ERR USER first\r\n", b"-ERR authorization first\r\n")


@given(st.binary(max_size=600))
def test_parse_request(data):
    got = checkpw.parse_request(data)
    if len(data) > checkpw.REQUEST_MAX or data.count(b"\0") < 2:
        assert got is None
    else:
        login, password, stamp = got
        assert data.startswith(login + b"\0" + password + b"\0" + stamp)


@given(st.binary(max_size=80))
def test_password_file_lines(line):
    entry = checkpw.parse_line(line)
    if entry is not None:
        fields = line.split(b":")
        assert entry.login == fields[0] and entry.uid == int(fields[2]) and entry.home.startswith(b"/")


def test_scrypt_rejects_malformed():
    good = checkpw.make_hash(b"pw")
    assert checkpw.verify_scrypt(b"pw", good)
    for bad in (b"", b"scrypt$", good.replace(b"16384", b"16383"), good.replace(b"16384", b"4194304"),
                good[:-6] + (b"AAAA==" if good[-6:] != b"AAAA==" else b"BBBB=="), b"md5$1$2$3$4$5"):
        assert not checkpw.verify_scrypt(b"pw", bad)


def pop3d_session(pop, commands):
    """Run qmail-pop3d directly (as the POP user) in its home with commands on stdin; return its output."""
    uid = pop.uid if os.getuid() == 0 else None
    r = subprocess.run([program("qmail-pop3d"), "Maildir"], cwd=pop.home, user=uid, input=commands,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_listing_skips_this_seconds_messages_and_cleans_tmp(pop):
    future = pop.maildir / "new" / "9999.M1P1.host"
    future.write_bytes(b"Subject: later\n\n")
    os.utime(future, (time.time() + 100, time.time() + 100))  # modified "now or later": not listed (qmail's)
    old, fresh = pop.maildir / "tmp" / "old", pop.maildir / "tmp" / "fresh"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 130000, time.time() - 130000))  # accessed more than 36 hours ago
    dot = pop.maildir / "cur" / ".hidden"
    dot.write_bytes(b"z")
    os.utime(dot, (time.time() - 100, time.time() - 100))
    for p in (future, old, fresh, dot):
        os.chown(p, pop.uid, -1)
    out = pop3d_session(pop, b"STAT\r\nUIDL 4\r\n")  # and end of input: no QUIT, nothing moves
    assert out == b"+OK \r\n+OK 3 %d\r\n-ERR not that many messages\r\n" % sum(map(len, MESSAGES))
    assert not old.exists() and fresh.exists() and future.exists()
    assert sorted(os.listdir(pop.maildir / "new")) == sorted(pop.names + [future.name])


def test_quit_reports_unlink_failures(pop):
    os.chmod(pop.maildir / "new", 0o555)
    try:
        out = pop3d_session(pop, b"DELE 1\r\ndele 3\r\nQUIT\r\nNOOP\r\n")
    finally:
        os.chmod(pop.maildir / "new", 0o755)
    assert out == (b"+OK \r\n+OK \r\n+OK \r\n-ERR unable to unlink all deleted messages\r\n"
                   b"-ERR unable to unlink all deleted messages\r\n+OK \r\n")
    assert sorted(os.listdir(pop.maildir / "new")) == sorted(pop.names)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create an account with a shadow password")
def test_checkpassword_system_account(tree, world_tmp):
    name = "pyqpop3"
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True)
    home = world_tmp / "sys-home"
    home.mkdir()
    subprocess.run(["usermod", "-d", str(home), name], check=True)
    subprocess.run(["chpasswd"], input=b"%s:Sys pass 1\n" % name.encode(), check=True)
    pw = pwd.getpwnam(name)
    res = checkpassword(tree, name.encode() + b"\0Sys pass 1\0\0", ("sh", "-c", 'echo "$USER $HOME"; id -u; id -G'))
    assert res.returncode == 0, res.stderr
    user_home, uid, gids = res.stdout.decode().splitlines()
    assert user_home == "%s %s" % (name, home) and int(uid) == pw.pw_uid
    assert gids.split() == [str(g) for g in os.getgrouplist(name, pw.pw_gid)]
    assert checkpassword(tree, name.encode() + b"\0Sys pass 2\0\0").returncode == 1
    assert checkpassword(tree, b"root\0whatever\0\0").returncode == 1
