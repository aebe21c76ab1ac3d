"""qmail-popup + qmail-checkpassword + qmail-pop3d against real POP3 clients from Debian (getmail6, fetchmail),
keeping and deleting, under ucspi-tcp's tcpserver and under qmail-tcpserver; mutt then reads the Maildir the
server left (kept messages in cur/ with `:2,`, deleted ones gone); wrong passwords cost a delay and give no hint."""

import mailbox
import os
import socket
import subprocess
import time

import pytest

import test_pop3
from conftest import mutt_screen, need, program, tcpserver
from test_pop3 import MESSAGES, account, pop  # noqa: F401  (pop is a fixture)
from pyqmail.lib.pop3 import checkpw

PASSWORD = test_pop3.PASSWORD.decode()  # the clients take it as text
SERVERS = ["tcpserver", "qmail-tcpserver"]


def serve(procs, pop, server):
    """The three programs under ucspi-tcp's tcpserver or qmail-tcpserver; return the port."""
    argv = [program("qmail-popup"), "pop.example", program("qmail-checkpassword"), program("qmail-pop3d"),
            "Maildir"]
    if server == "qmail-tcpserver":
        return tcpserver(procs, pop.tree, argv, server=program("qmail-tcpserver"))
    return tcpserver(procs, pop.tree, argv)


def client_env(world_tmp):
    return {"PATH": os.environ["PATH"], "HOME": str(world_tmp), "LANG": "C.UTF-8"}


def getmail(world_tmp, port, keep, ssl=False, password=PASSWORD):
    """Retrieve every message with getmail6 into world_tmp/dest (a Maildir); return the Maildir (ssl: POP3S)."""
    need("getmail")
    dest = world_tmp / "dest"
    for sub in ("new", "cur", "tmp"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    gdir = world_tmp / "getmail"
    gdir.mkdir(exist_ok=True)
    rc = gdir / "getmailrc"
    rc.write_text("[retriever]\ntype = %s\nserver = 127.0.0.1\nport = %d\nusername = alice\n"
                  "password = %s\ntimeout = 30\n\n[destination]\ntype = Maildir\npath = %s/\n\n"
                  "[options]\nread_all = false\ndelete = %s\nverbose = 1\n"
                  % ("SimplePOP3SSLRetriever" if ssl else "SimplePOP3Retriever", port, password, dest,
                     "false" if keep else "true"))
    os.chmod(rc, 0o600)
    # getmail refuses to deliver as root: as root it runs as the POP account (nobody), as a mail user would
    uid, gid = account()
    for d in (dest, dest / "new", dest / "cur", dest / "tmp", gdir, rc):
        os.chown(d, uid, gid)
    as_user = {"user": uid, "group": gid, "extra_groups": []} if os.getuid() == 0 else {}
    r = subprocess.run(["getmail", "--getmaildir", str(gdir), "--rcfile", str(rc)], env=client_env(world_tmp),
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=120, cwd=gdir, **as_user)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return dest


def fetchmail(world_tmp, port, keep):
    """Retrieve every message with fetchmail (-k keeps them on the server, -K deletes) into a file; return it."""
    need("fetchmail")
    out = world_tmp / "fetched"
    rc = world_tmp / "fetchmailrc"
    rc.write_text('poll 127.0.0.1 protocol pop3 port %d user "alice" password "%s" sslproto "" '
                  'mda "cat >> %s"\n' % (port, PASSWORD, out))
    os.chmod(rc, 0o600)
    env = dict(client_env(world_tmp), FETCHMAILHOME=str(world_tmp))
    argv = ["fetchmail", "-f", str(rc), "--nosyslog", "-a"] + (["-k"] if keep else ["-K"])
    r = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return out


def check_server_side(pop, world_tmp, keep):
    """What the POP server left: kept → every message in cur/ as name:2, (mutt: old, unread); else none."""
    new = sorted(os.listdir(pop.maildir / "new"))
    cur = sorted(os.listdir(pop.maildir / "cur"))
    assert new == []
    if keep:
        assert cur == sorted(n + ":2," for n in pop.names)
        for name in pop.names:
            assert (pop.maildir / "cur" / (name + ":2,")).read_bytes() == MESSAGES[pop.names.index(name)]
        box = mailbox.Maildir(str(pop.maildir), factory=None, create=False)
        assert sorted(m["Subject"] for m in box) == ["one", "three", "two"]
        assert all(m.get_subdir() == "cur" and m.get_flags() == "" for m in box)
        want = [b"COUNT 3 NEW 0 OLD 3"] + [b"IDX O   [%s]" % s for s in (b"one", b"two", b"three")]
    else:
        assert cur == []
        want = [b"COUNT 0"]
    screen = mutt_screen(pop.maildir, world_tmp, want,
                         'set mark_old=yes index_format="IDX %Z [%s]" status_format="COUNT %m NEW %n OLD %o"')
    assert all(w in screen for w in want), screen.decode("latin-1")
    assert b"IDX N" not in screen  # %Z: N new, O old (seen by a reader, not read), padded to 4 columns


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("keep", [True, False], ids=["keep", "delete"])
def test_getmail_retrieves(procs, pop, world_tmp, server, keep):
    port = serve(procs, pop, server)
    dest = getmail(world_tmp, port, keep)
    box = mailbox.Maildir(str(dest), factory=None, create=False)
    got = sorted(box, key=lambda m: m["Subject"])
    assert [m["Subject"] for m in got] == ["one", "three", "two"]
    bodies = {m["Subject"]: m.get_payload() for m in got}
    # the dot-stuffing undone; qmail-pop3d's empty line before the final dot stays (qmail's quirk)
    assert bodies["one"] == "first body\n.leading dot\nlast\n\n"
    assert bodies["two"] == "line\n" * 10 + "\n"
    assert bodies["three"] == "no final newline\n\n"
    check_server_side(pop, world_tmp, keep)
    if keep:  # a second run: getmail remembers the UIDLs (read_all off) and fetches nothing again
        getmail(world_tmp, port, keep)
        assert len(list(mailbox.Maildir(str(dest), factory=None, create=False))) == 3
        assert sorted(os.listdir(pop.maildir / "cur")) == sorted(n + ":2," for n in pop.names)


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("keep", [True, False], ids=["keep", "delete"])
def test_fetchmail_retrieves(procs, pop, world_tmp, server, keep):
    port = serve(procs, pop, server)
    out = fetchmail(world_tmp, port, keep)
    got = out.read_bytes()
    for text in (b"Subject: one", b"\n.leading dot\n", b"Subject: two", b"no final newline"):
        assert text in got
    assert got.count(b"Subject: ") == 3
    check_server_side(pop, world_tmp, keep)


def attempt(port, user, password):
    """One login over a raw socket (deadline 30 s); return (USER reply, PASS reply, rest, seconds PASS took)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK <")
        s.sendall(b"USER " + user + b"\r\n")
        user_reply = f.readline()
        start = time.monotonic()
        s.sendall(b"PASS " + password + b"\r\n")
        s.shutdown(socket.SHUT_WR)  # and end of input: a good login ends without QUIT, nothing moves
        pass_reply = f.readline()
        took = time.monotonic() - start
        return user_reply, pass_reply, f.read(), took


@pytest.mark.parametrize("server", SERVERS)
def test_wrong_passwords_delay_without_hint(procs, pop, server):
    port = serve(procs, pop, server)
    bad_password = attempt(port, b"alice", b"wrong")
    unknown_user = attempt(port, b"nobody-here", PASSWORD.encode())
    near_miss = attempt(port, b"alice", PASSWORD.encode() + b"x")
    for user_reply, pass_reply, rest, took in (bad_password, unknown_user, near_miss):
        # the same bytes for every failure: nothing tells a wrong login from a wrong password
        assert (user_reply, pass_reply, rest) == (b"+OK \r\n", b"-ERR authorization failed\r\n", b"")
        assert checkpw.DELAY <= took < checkpw.DELAY + 20
    # an unknown login costs the same (scrypt work and delay) as a known one: within a second of each other
    assert abs(bad_password[3] - unknown_user[3]) < 1.0
    good = attempt(port, b"alice", PASSWORD.encode())
    assert good[1] == b"+OK \r\n" and good[3] < checkpw.DELAY
    assert sorted(os.listdir(pop.maildir / "new")) == sorted(pop.names)  # no QUIT after login: nothing moved


def test_qmail_popup_runs_pre_loaded_under_qmail_tcpserver(procs, pop):
    """qmail-tcpserver serves qmail-popup from a pre-loaded forked child (no new interpreter for the greeting
    and the login dialogue); the child then execs the checkpassword chain, and the session works."""
    import re
    import poplib
    argv = [program("qmail-popup"), "pop.example", program("qmail-checkpassword"), program("qmail-pop3d"),
            "Maildir"]
    port = tcpserver(procs, pop.tree, argv, options=["-v"], server=program("qmail-tcpserver"))
    log = next(pop.tree.glob("tcpserver-%d.log" % port))
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    deadline = time.monotonic() + 20
    ours = r"tcpserver: ok (\d+) \S+ :127\.0\.0\.1::%d\n" % client.sock.getsockname()[1]  # not the port probe's
    while not re.search(ours, log.read_text()):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    assert "running %s in forked children" % program("qmail-popup") in log.read_text()
    pid = int(re.search(ours, log.read_text()).group(1))
    try:
        cmdline = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")
    except FileNotFoundError:
        raise AssertionError(log.read_text())
    assert any(b"qmail-tcpserver" in part for part in cmdline), cmdline  # the listener's image, forked
    client.user("alice")
    client.pass_(PASSWORD)
    assert client.stat()[0] == len(MESSAGES)
    assert client.retr(1)[1][-1] is not None
    client.quit()
