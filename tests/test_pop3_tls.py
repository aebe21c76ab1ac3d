"""STLS in qmail-popup (docs/qmail-popup.8.md): CAPA, the plaintext-login rule, Python's poplib stls() and
fetchmail through qmail-popup → qmail-checkpassword → qmail-pop3d under tcpserver with TCPREMOTEIP faked to a
non-loopback address by a tcprules table, the relay's bounds, and the rule's parsers; fetchmail over STLS keeping
and deleting under tcpserver and qmail-tcpserver, and getmail6 (no STLS for POP3) refused a plaintext login."""

import mailbox
import os
import poplib
import socket
import ssl
import subprocess
import time

import pytest
from hypothesis import given, strategies as st

from conftest import need, program, qenv, tcpserver
from test_pop3 import MESSAGES, PASSWORD, pop  # noqa: F401  (pop is a fixture)
from test_pop3_peers import SERVERS, account, check_server_side, client_env
from test_qmail_tcpserver import tcprules_cdb
from pyqmail.lib.pop3 import popup

REMOTE = "192.0.2.7"  # TEST-NET-1: what the faked TCPREMOTEIP says


@pytest.fixture
def cert(pop, world_tmp):  # noqa: F811
    """control/servercert.pem: a self-signed certificate and key made by openssl."""
    need("openssl")
    key, crt = world_tmp / "key.pem", world_tmp / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "2", "-subj", "/CN=pop.example"], check=True, capture_output=True)
    (pop.tree / "control" / "servercert.pem").write_bytes(crt.read_bytes() + key.read_bytes())
    return pop


def serve(procs, pop, remote=REMOTE, server="tcpserver"):  # noqa: F811
    """The POP3 chain on 127.0.0.1 under ucspi-tcp's tcpserver (or qmail-tcpserver); the rules table sets
    TCPREMOTEIP to remote."""
    rules = tcprules_cdb(pop.tree, '127.0.0.1:allow,TCPREMOTEIP="%s"\n' % remote) if remote else None
    return tcpserver(procs, pop.tree, [program("qmail-popup"), "pop.example", program("qmail-checkpassword"),
                                       program("qmail-pop3d"), "Maildir"], rules_cdb=rules,
                     server=program("qmail-tcpserver") if server == "qmail-tcpserver" else "tcpserver")


def client_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def capa(c):
    return sorted(c.capa())


def test_plaintext_refused_then_stls_login_and_retr(procs, cert):
    port = serve(procs, cert)
    c = poplib.POP3("127.0.0.1", port, timeout=30)
    assert capa(c) == ["STLS", "TOP", "UIDL"]  # no USER before TLS
    with pytest.raises(poplib.error_proto) as e:
        c.user("alice")
    assert e.value.args[0] == b"-ERR plaintext login refused without TLS: use STLS"
    with pytest.raises(poplib.error_proto, match="plaintext login refused"):
        c._shortcmd("APOP alice 0123456789abcdef")
    assert c.stls(client_context()) == b"+OK Begin TLS negotiation"
    assert capa(c) == ["TOP", "UIDL", "USER"]
    with pytest.raises(poplib.error_proto) as e:
        c._shortcmd("STLS")
    assert e.value.args[0] == b"-ERR already in TLS"
    assert c.user("alice") == b"+OK "
    assert c.pass_(PASSWORD.decode()) == b"+OK "
    assert c.stat() == (3, sum(map(len, MESSAGES)))
    resp, lines, _ = c.retr(1)
    assert lines == [b"From: a@example", b"Subject: one", b"", b"first body", b".leading dot", b"last", b""]
    resp, lines, _ = c.retr(2)
    assert lines == [b"Subject: two", b""] + [b"line"] * 10 + [b""]
    assert c.dele(1) == b"+OK "
    assert c.quit() == b"+OK "
    assert sorted(os.listdir(cert.maildir / "cur")) == sorted(n + ":2," for n in cert.names[1:])


def test_wrong_password_over_tls_and_stls_after_user(procs, cert):
    port = serve(procs, cert, remote=None)  # loopback: plaintext USER allowed, STLS then refused after it
    c = poplib.POP3("127.0.0.1", port, timeout=30)
    assert capa(c) == ["STLS", "TOP", "UIDL", "USER"]
    assert c.user("alice") == b"+OK "
    with pytest.raises(poplib.error_proto) as e:
        c._shortcmd("STLS")
    assert e.value.args[0] == b"-ERR STLS not allowed after USER"
    c.close()
    c = poplib.POP3("127.0.0.1", port, timeout=30)
    c.stls(client_context())
    c.user("alice")
    with pytest.raises(poplib.error_proto) as e:
        c.pass_("wrong")
    assert e.value.args[0] == b"-ERR authorization failed"  # the reply after the relay, over TLS
    assert c.file.read() == b""
    c.close()


def test_without_certificate_no_stls_and_pop3plaintext(procs, pop):  # noqa: F811
    port = serve(procs, pop)
    c = poplib.POP3("127.0.0.1", port, timeout=30)
    assert capa(c) == ["TOP", "UIDL"]
    with pytest.raises(poplib.error_proto) as e:
        c._shortcmd("STLS")
    assert e.value.args[0] == b"-ERR authorization first"  # qmail's answer
    with pytest.raises(poplib.error_proto, match="plaintext login refused"):
        c.user("alice")
    c.close()
    (pop.tree / "control" / "pop3plaintext").write_text("1\n")  # qmail's behaviour
    c = poplib.POP3("127.0.0.1", port, timeout=30)
    c.user("alice")
    c.pass_(PASSWORD.decode())
    assert c.stat()[0] == 3
    c.quit()


def children(pid):
    """Pids whose parent is pid."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d))
    return out


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def written(pid):
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def tls_session(procs, cert, remote=REMOTE, server="tcpserver", timeout=30):
    """Connect, STLS, handshake; return (TLS socket, its file)."""
    port = serve(procs, cert, remote, server)
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = raw.makefile("rb")
    assert f.readline().startswith(b"+OK <")
    raw.sendall(b"STLS\r\n")
    assert f.readline() == b"+OK Begin TLS negotiation\r\n"
    t = client_context().wrap_socket(raw)
    t.settimeout(timeout)
    return t, t.makefile("rb")


def test_relay_is_bounded_when_the_client_stops_reading(procs, cert):
    big = b"Subject: big\n\n" + (b"x" * 75 + b"\n") * 200000  # 15 MB
    name = "2000.M9P1.host"
    path = cert.maildir / "new" / name
    path.write_bytes(big)
    os.utime(path, (time.time() - 50, time.time() - 50))
    os.chown(path, cert.uid, os.stat(cert.maildir).st_gid)
    t, f = tls_session(procs, cert, timeout=60)
    t.sendall(b"USER alice\r\nPASS " + PASSWORD + b"\r\n")
    assert f.readline() == b"+OK \r\n" and f.readline() == b"+OK \r\n"
    t.sendall(b"RETR 4\r\n")  # then read nothing for a while
    # find qmail-popup (our connection's tcpserver child) and qmail-pop3d (its child)
    server = procs.procs[-1].pid  # tcpserver: qmail-popup is its child
    popups = [p for p in children(server) if b"qmail-popup\0pop.example\0" in _cmd(p)]
    assert len(popups) == 1
    parent = popups[0]
    deadline = time.time() + 30
    pop3d = None
    while time.time() < deadline and pop3d is None:
        kids = children(parent)
        pop3d = kids[0] if kids and b"qmail-pop3d" in _cmd(kids[0]) else None
        time.sleep(0.01)  # (not a busy loop: on two cores it would starve the processes it waits for)
    assert pop3d
    # wait until qmail-pop3d's writing stops (blocked by the full relay), then check the bounds
    last, stable_since = -1, time.time()
    while time.time() < deadline:
        now = written(pop3d)
        if now != last:
            last, stable_since = now, time.time()
        elif time.time() - stable_since > 1.0:
            break
        time.sleep(0.01)
    assert last < 8 * 1024 * 1024  # far from the 15 MB message: back-pressure reached the writer
    assert rss_kb(parent) < 64 * 1024
    got = bytearray()
    while not got.endswith(b"\r\n.\r\n"):
        chunk = t.recv(1 << 20)
        assert chunk
        got += chunk
    body = bytes(got).split(b"\r\n", 1)[1]
    assert body == big.replace(b"\n", b"\r\n") + b"\r\n.\r\n"
    t.sendall(b"QUIT\r\n")
    assert f.readline() == b"+OK \r\n"
    t.close()


def _cmd(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_fetchmail_uses_stls(procs, cert, world_tmp):
    need("fetchmail")
    port = serve(procs, cert)
    out = world_tmp / "fetched.mbox"
    mda = world_tmp / "mda.sh"
    mda.write_text("#!/bin/sh\ncat >> %s\n" % out)
    mda.chmod(0o755)
    rc = world_tmp / "fetchmailrc"
    rc.write_text('poll 127.0.0.1 with proto POP3 port %d\n'
                  '  user "alice" there with password "%s" is "x" here\n'
                  '  sslproto \"auto\" no sslcertck fetchall mda "%s"\n' % (port, PASSWORD.decode(), mda))
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(world_tmp), FETCHMAILHOME=str(world_tmp))
    r = subprocess.run(["fetchmail", "-f", str(rc), "--nosyslog", "-v"], env=env, capture_output=True, timeout=120)
    log = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, log
    assert "STLS" in log and "3 messages" in log
    data = out.read_bytes()
    assert b"first body" in data and b"no final newline" in data
    assert os.listdir(cert.maildir / "new") == [] and os.listdir(cert.maildir / "cur") == []  # fetchmail deleted them


def fetchmail_stls(world_tmp, port, keep):
    """fetchmail with TLS required (sslproto TLS1.2+ without ssl: STLS or nothing), -k keeps, -K deletes;
    return (the delivered file's bytes, the verbose log)."""
    need("fetchmail")
    out = world_tmp / "fetched.mbox"
    rc = world_tmp / "fetchmailrc"
    rc.write_text('poll 127.0.0.1 with proto POP3 port %d\n'
                  '  user "alice" there with password "%s" is "x" here\n'
                  '  sslproto "TLS1.2+" no sslcertck mda "cat >> %s"\n' % (port, PASSWORD.decode(), out))
    rc.chmod(0o600)
    env = dict(client_env(world_tmp), FETCHMAILHOME=str(world_tmp))
    argv = ["fetchmail", "-f", str(rc), "--nosyslog", "-v", "-a"] + (["-k"] if keep else ["-K"])
    r = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
    log = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, log
    return out.read_bytes(), log


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("keep", [True, False], ids=["keep", "delete"])
def test_fetchmail_stls_retrieves(procs, cert, world_tmp, server, keep):
    """fetchmail over STLS from a non-loopback TCPREMOTEIP (plaintext USER would be refused), keeping or
    deleting, under both servers; the server's Maildir afterwards as test_pop3_peers checks it."""
    port = serve(procs, cert, server=server)
    got, log = fetchmail_stls(world_tmp, port, keep)
    assert "> STLS" in log and "< +OK Begin TLS negotiation" in log, log
    assert "3 messages" in log, log
    for text in (b"Subject: one", b"\n.leading dot\n", b"Subject: two", b"no final newline"):
        assert text in got
    assert got.count(b"Subject: ") == 3
    check_server_side(cert, world_tmp, keep)


# getmail6 (6.18.11, Debian's) has no STARTTLS/STLS for POP3: its POP3 retrievers are either plain
# (SimplePOP3Retriever, poplib.POP3 without stls()) or POP3-over-SSL on a separate port
# (SimplePOP3SSLRetriever), and qmail-popup offers no POP3S (implicit TLS), only STLS. So getmail6 cannot
# retrieve from a non-loopback client here; what is tested is that its plaintext login is refused and
# nothing on the server moves (docs/qmail-popup.8.md, SEE ALSO).
@pytest.mark.parametrize("server", SERVERS)
def test_getmail6_without_stls_is_refused_plaintext_login(procs, cert, world_tmp, server):
    need("getmail")
    port = serve(procs, cert, server=server)
    dest = world_tmp / "dest"
    for sub in ("new", "cur", "tmp"):
        (dest / sub).mkdir(parents=True)
    gdir = world_tmp / "getmail"
    gdir.mkdir()
    rc = gdir / "getmailrc"
    rc.write_text("[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = %d\nusername = alice\n"
                  "password = %s\ntimeout = 30\n\n[destination]\ntype = Maildir\npath = %s/\n\n"
                  "[options]\ndelete = true\nverbose = 1\n" % (port, PASSWORD.decode(), dest))
    os.chmod(rc, 0o600)
    uid, gid = account()  # getmail refuses to deliver as root: as root it runs as nobody (test_pop3_peers)
    for d in (dest, dest / "new", dest / "cur", dest / "tmp", gdir, rc):
        os.chown(d, uid, gid)
    as_user = {"user": uid, "group": gid, "extra_groups": []} if os.getuid() == 0 else {}
    r = subprocess.run(["getmail", "--getmaildir", str(gdir), "--rcfile", str(rc)], env=client_env(world_tmp),
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=120, cwd=gdir, **as_user)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode != 0, out
    assert "plaintext login refused without TLS: use STLS" in out, out
    assert list(mailbox.Maildir(str(dest), factory=None, create=False)) == []
    assert sorted(os.listdir(cert.maildir / "new")) == sorted(cert.names)
    assert os.listdir(cert.maildir / "cur") == []


@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
def test_loopback_v4(a, b, c):
    assert popup.loopback("127.%d.%d.%d" % (a, b, c))
    assert popup.loopback("::ffff:127.%d.%d.%d" % (a, b, c))
    assert not popup.loopback("%d.%d.%d.1" % (128 + a % 100, b, c))


@given(st.text(max_size=40))
def test_loopback_never_crashes(text):
    result = popup.loopback(text)
    assert isinstance(result, bool)
    if result:
        assert text.lower().lstrip(":f").startswith("127.") or ":" in text


def test_loopback_v6_and_rule():
    for ip in ("::1", "0:0:0:0:0:0:0:1", "0::1"):
        assert popup.loopback(ip)
    for ip in ("", "::2", "192.0.2.7", "127.0.0", "127.0.0.1.5", "127.0.0.256", "fe80::1", "1127.0.0.1"):
        assert not popup.loopback(ip), ip
    assert popup.plaintext_allowed({"TCPREMOTEIP": "127.0.0.1"}, 0)
    assert not popup.plaintext_allowed({"TCPREMOTEIP": REMOTE}, 0)
    assert not popup.plaintext_allowed({}, 0)
    assert popup.plaintext_allowed({"TCPREMOTEIP": REMOTE}, 1)
    assert not popup.plaintext_allowed({"TCPREMOTEIP": REMOTE}, 2)


@given(st.sampled_from([b"user", b"pass", b"apop", b"stls", b"capa", b"noop", b"quit", b"stat"]),
       st.binary(max_size=20), st.booleans(), st.booleans())
def test_popup_state_machine(verb, arg, cert_present, plaintext):
    p = popup.Popup(b"h", 1, 2, tls_available=cert_present, plaintext=plaintext)
    reply, auth, end = p.command(verb, arg)
    assert reply == b"" and auth is not None or reply.endswith(b"\r\n")
    if verb in (b"user", b"pass", b"apop") and not plaintext:
        assert reply == popup.PLAINTEXT_REFUSED and auth is None
    if verb == b"stls":
        assert p.start_tls == cert_present
    if verb == b"capa":
        assert (b"\r\nSTLS\r\n" in reply) == cert_present and (b"\r\nUSER\r\n" in reply) == plaintext
        assert reply.endswith(b"\r\n.\r\n")


def serve_pop3s(procs, pop, server):
    """qmail-popup -s (TLS from the first byte) under the given server, TCPREMOTEIP not loopback."""
    cdb = tcprules_cdb(pop.tree, '127.0.0.1:allow,TCPREMOTEIP="%s"\n' % REMOTE)
    return tcpserver(procs, pop.tree, [program("qmail-popup"), "-s", "pop.example", program("qmail-checkpassword"),
                                       program("qmail-pop3d"), "Maildir"], rules_cdb=cdb,
                     server=program("qmail-tcpserver") if server == "qmail-tcpserver" else "tcpserver")


@pytest.mark.parametrize("server", SERVERS)
def test_pop3s_poplib(procs, cert, server):
    """-s: the handshake first, then qmail's greeting and a whole session over TLS, with no plaintext at all."""
    port = serve_pop3s(procs, cert, server)
    c = poplib.POP3_SSL("127.0.0.1", port, context=client_context(), timeout=30)
    assert c.getwelcome().startswith(b"+OK <")
    assert "STLS" not in capa(c) and "USER" in capa(c)
    c.user("alice")
    c.pass_(PASSWORD.decode())
    assert c.stat()[0] == len(MESSAGES)
    c.quit()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # a plaintext client learns nothing
        s.sendall(b"USER alice\r\n")
        try:
            answer = s.recv(100)
        except ConnectionResetError:  # the failed handshake ends the session
            answer = b""
        assert not answer.startswith(b"+OK")


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("keep", [True, False], ids=["keep", "delete"])
def test_getmail6_over_pop3s(procs, cert, world_tmp, server, keep):
    """getmail6, which has no STLS, retrieves over POP3S (qmail-popup -s), keeping or deleting."""
    need("getmail")
    from test_pop3_peers import getmail
    port = serve_pop3s(procs, cert, server)
    dest = getmail(world_tmp, port, keep, ssl=True, password=PASSWORD.decode())
    assert len(list(mailbox.Maildir(str(dest), factory=None, create=False))) == len(MESSAGES)
    check_server_side(cert, world_tmp, keep)


def test_an_encrypted_servercert_key_is_refused_never_asked_for_on_a_terminal(cert, world_tmp):
    """A key with a pass phrase in servercert.pem: STLS is answered `-ERR TLS not available` and the session goes
    on; OpenSSL never asks for the pass phrase on the controlling terminal (qmail-popup started by hand hung)."""
    import pty
    from conftest import stop_pty_child, terminal_said
    key, crt = world_tmp / "enc-key.pem", world_tmp / "enc-cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-passout", "pass:secret", "-keyout", str(key),
                    "-out", str(crt), "-days", "2", "-subj", "/CN=pop.example"], check=True, capture_output=True)
    assert b"ENCRYPTED" in key.read_bytes()
    (cert.tree / "control" / "servercert.pem").write_bytes(crt.read_bytes() + key.read_bytes())
    with socket.create_server(("127.0.0.1", 0)) as listener:  # a TCP connection: STLS is offered on one only
        mine = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
    env = dict(qenv(cert.tree), TCPREMOTEIP=REMOTE)
    pid, terminal = pty.fork()  # a controlling terminal, as when an administrator runs it by hand
    if pid == 0:
        os.dup2(theirs.fileno(), 0)
        os.dup2(theirs.fileno(), 1)
        os.execve(program("qmail-popup"), [program("qmail-popup"), "pop.example", program("qmail-checkpassword"),
                                           program("qmail-pop3d"), "Maildir"], env)
    theirs.close()
    mine.settimeout(30)
    reader = mine.makefile("rb")
    try:
        assert reader.readline().startswith(b"+OK <")
        mine.sendall(b"STLS\r\n")
        assert reader.readline() == b"-ERR TLS not available\r\n"
        mine.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"+OK")
        said = terminal_said(terminal)
        assert b"pass phrase" not in said, said
    finally:
        stop_pty_child(pid, terminal)
        reader.close()
        mine.close()
