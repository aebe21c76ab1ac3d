"""qmail-smtpd with real peers on loopback: swaks (plain, pipelined, STARTTLS, AUTH) and Postfix's smtp-source,
under ucspi-tcp's tcpserver and under qmail-tcpserver (in-process, as the queue's owner)."""

import os
import pwd
import re
import socket
import ssl
import subprocess

import pytest

from conftest import ipv6_tcpserver, need, program, qenv, queued, tcpserver
from mailsystem import ROOT, make_system_tree
from test_qmail_smtpd import control, messages
from test_qmqpd import read_all

pytestmark = pytest.mark.interop
CHECKPASSWORD = """#!/usr/bin/python3
import os, sys
data = os.read(3, 513)
open(%r, "ab").write(data + b"|")
user, password = data.split(b"\\0")[:2]
if (user, password) != (b"joe", b"s3cret"):
    sys.exit(1)
os.execv(sys.argv[1], sys.argv[1:])
"""


def swaks(port, *options, to="c@test.example"):
    """Run swaks against 127.0.0.1:port; return (exit code, transcript)."""
    need("swaks")
    p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(port), "--from", "a@b.example", "--to", to,
                        "--helo", "client.example", *options], capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode(errors="replace")


def serve(procs, tree, server="tcpserver", options=(), **env):
    """Run qmail-smtpd on a free loopback port under server; return the port."""
    return tcpserver(procs, tree, [program("qmail-smtpd")], env=qenv(tree, **env), options=options,
                     server=server if server == "tcpserver" else program(server))


def test_swaks_plain_and_pipelined_under_tcpserver(procs, tree):
    port = serve(procs, tree)
    assert swaks(port, "--header", "Subject: plain")[0] == 0
    assert swaks(port, "--pipeline", "--header", "Subject: pipelined")[0] == 0
    got = messages(tree)
    assert len(got) == 2
    for body, sender, rcpts in got:
        assert (sender, rcpts) == (b"a@b.example", [b"c@test.example"])
        assert re.match(rb"Received: from unknown \(HELO client\.example\) \(127\.0\.0\.1\)\n  by 0 with SMTP;",
                        body)
        assert b"\r" not in body and b"\nSubject: " in body


def test_smtp_source_500_messages_in_20_sessions_all_queued_intact(procs, tree):
    need("smtp-source")
    port = serve(procs, tree)
    r = subprocess.run(["smtp-source", "-s", "20", "-m", "500", "-l", "600", "-f", "ss@x.example", "-t",
                        "c@test.example", "127.0.0.1:%d" % port], capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr
    got = messages(tree)
    assert len(got) == 500
    for body, sender, rcpts in got:
        assert (sender, rcpts) == (b"ss@x.example", [b"c@test.example"])
        assert body.count(b"\n") > 5 and b"\r" not in body


def queue_owner_tree(world_tmp):
    """A tree whose queue belongs to qmailq when root (else to us), and the -u/-g options to run as its owner."""
    tree = make_system_tree(world_tmp / "sys")
    st = os.stat(tree / "queue")
    return tree, (["-u", str(st.st_uid), "-g", str(st.st_gid)] if ROOT else [])


def test_qmail_tcpserver_runs_it_in_process_and_queues_without_qmail_queue(procs, world_tmp):
    tree, options = queue_owner_tree(world_tmp)
    port = serve(procs, tree, "qmail-tcpserver", options + ["-v"])
    for n in range(3):
        assert swaks(port, "--pipeline", "--header", "Subject: n%d" % n)[0] == 0
    owner = os.stat(tree / "queue").st_uid
    # in-process, a network server records what qmail-queue writes for qmaild in a tree with qmail's users
    recorded, who = (pwd.getpwnam("qmaild").pw_uid, b"from network") if ROOT else (owner, b"by uid %d" % owner)
    got = queued(tree)
    assert len(got) == 3
    for mess, todo in got.values():
        qq = re.match(rb"Received: \(qmail (\d+) invoked ([^)]*)\)", mess)
        if ROOT or pwd.getpwuid(owner).pw_name not in ("alias", "qmaild", "qmails"):
            assert qq and qq.group(2) == who
        assert todo.startswith(b"u%d\0p%s\0" % (recorded, qq.group(1)))
    log = next(tree.glob("tcpserver-*.log")).read_text()
    assert "in forked children" in log
    children = set(re.findall(r"^tcpserver: ok (\d+) ", log, re.M))
    qps = set(re.match(rb"Received: \(qmail (\d+) ", mess).group(1).decode() for mess, _ in got.values())
    assert qps <= children  # queued by the connection's own process: no qmail-queue was run


@pytest.fixture
def tls_tree(tree, world_tmp):
    """A tree with control/servercert.pem (self-signed, made by openssl) and a checkpassword for joe/s3cret."""
    need("openssl")
    key, cert = world_tmp / "key.pem", world_tmp / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=test.example"], check=True, capture_output=True)
    (tree / "control" / "servercert.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    checker = world_tmp / "checkpassword"
    checker.write_text(CHECKPASSWORD % str(world_tmp / "seen"))
    checker.chmod(0o755)
    (tree / "control" / "smtpcheckpassword").write_text("%s\n/bin/true\n" % checker)
    control(tree, rcpthosts="test.example")
    return tree


@pytest.mark.parametrize("server", ["tcpserver", "qmail-tcpserver"])
def test_swaks_starttls_and_auth_plain_and_login_relay_only_when_authenticated(procs, tls_tree, world_tmp, server):
    port = serve(procs, tls_tree, server)
    code, out = swaks(port, "--tls", to="far@away.example")
    assert code != 0 and "553 sorry, that domain isn't in my list of allowed rcpthosts" in out
    assert "250-STARTTLS" in out and "250-AUTH LOGIN PLAIN" in out  # AUTH offered only after STARTTLS
    for mech in ("PLAIN", "LOGIN"):
        code, out = swaks(port, "--tls", "--auth", mech, "--auth-user", "joe", "--auth-password", "s3cret",
                          to="far@away.example")
        assert code == 0, out
        assert "235 ok, go ahead (#2.0.0)" in out
    code, out = swaks(port, "--tls", "--auth", "PLAIN", "--auth-user", "joe", "--auth-password", "wrong")
    assert code != 0 and "535 authentication failed (#5.7.8)" in out
    code, out = swaks(port, "--auth", "PLAIN", "--auth-user", "joe", "--auth-password", "s3cret")
    assert code != 0  # no AUTH without TLS
    got = messages(tls_tree)
    assert len(got) == 2 and all(rcpts == [b"far@away.example"] for _, _, rcpts in got)
    assert all(b" with ESMTPSA; " in body.split(b"\n", 2)[1] for body, _, _ in got)
    seen = (world_tmp / "seen").read_bytes().split(b"|")
    assert re.fullmatch(rb"joe\0s3cret\0<\d+\.\d+@test\.example>\0", seen[0])


def test_plaintext_pipelined_after_starttls_is_discarded(procs, tls_tree):
    port = serve(procs, tls_tree)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        f = s.makefile("rb")
        assert f.readline() == b"220 test.example ESMTP\r\n"
        s.sendall(b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<c@test.example>\r\n")
        lines = [f.readline() for _ in range(5)]
        assert lines[-2:] == [b"250 8BITMIME\r\n", b"220 ready for tls\r\n"], lines
        with ctx.wrap_socket(s) as t:
            t.sendall(b"RCPT TO:<c@test.example>\r\nNOOP\r\nEHLO y\r\nQUIT\r\n")
            data = read_all(t)
    assert data.startswith(b"503 MAIL first (#5.5.1)\r\n250 ok\r\n250-test.example\r\n250-PIPELINING\r\n")
    assert b"STARTTLS" not in data and b"250-AUTH LOGIN PLAIN\r\n" in data and data.endswith(b"221 test.example\r\n")
    assert queued(tls_tree) == {}


class TlsClient:
    """A raw SMTP client on a socket: plaintext, then TLS after STARTTLS; reads replies line by line."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.file = self.sock.makefile("rb")

    def reply(self):
        """Return one whole (possibly multi-line) reply."""
        lines = [self.file.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(self.file.readline())
        return b"".join(lines)

    def send(self, line):
        """Send one line and return the reply."""
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def starttls(self):
        """EHLO, STARTTLS, handshake."""
        self.reply()
        self.send(b"EHLO x")
        assert self.send(b"STARTTLS") == b"220 ready for tls\r\n"
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")
        return self

    def close(self):
        """Close the connection."""
        self.sock.close()


def b64(data):
    """Base64 without newline."""
    import base64
    return base64.b64encode(data)


def test_auth_exchanges_byte_for_byte(procs, tls_tree, world_tmp):
    port = serve(procs, tls_tree)
    plain = TlsClient(port)
    assert plain.reply() == b"220 test.example ESMTP\r\n"
    assert plain.send(b"AUTH PLAIN " + b64(b"\0joe\0s3cret")) == \
        b"538 encryption required for requested authentication mechanism (#5.7.11)\r\n"
    plain.close()
    c = TlsClient(port).starttls()
    assert c.send(b"EHLO y").endswith(b"250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n")
    assert c.send(b"AUTH CRAM-MD5") == b"504 unrecognized authentication type (#5.5.4)\r\n"
    assert c.send(b"AUTH PLAIN") == b"334 \r\n"
    assert c.send(b"*") == b"501 auth exchange cancelled (#5.0.0)\r\n"
    assert c.send(b"AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert c.send(b64(b"joe")) == b"334 UGFzc3dvcmQ6\r\n"
    assert c.send(b64(b"nope")) == b"535 authentication failed (#5.7.8)\r\n"
    assert c.send(b"AUTH PLAIN !!!") == b"501 malformed auth input (#5.5.4)\r\n"
    assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
    assert c.send(b"AUTH PLAIN " + b64(b"\0joe\0s3cret")) == b"503 no AUTH during a mail transaction (#5.5.1)\r\n"
    assert c.send(b"RSET") == b"250 flushed\r\n"
    assert c.send(b"AUTH PLAIN") == b"334 \r\n"
    assert c.send(b64(b"admin\0joe\0s3cret")) == b"235 ok, go ahead (#2.0.0)\r\n"
    assert c.send(b"AUTH PLAIN " + b64(b"\0joe\0s3cret")) == b"503 you are already authenticated (#5.5.1)\r\n"
    assert c.send(b"QUIT") == b"221 test.example\r\n"
    c.close()


def test_auth_temporary_checkpassword_trouble_is_454(procs, tls_tree, world_tmp):
    broken = world_tmp / "broken"
    broken.write_text("#!/bin/sh\nexit 111\n")
    broken.chmod(0o755)
    (tls_tree / "control" / "smtpcheckpassword").write_text("%s\n/bin/true\n" % broken)
    c = TlsClient(serve(procs, tls_tree)).starttls()
    assert c.send(b"AUTH PLAIN " + b64(b"\0joe\0s3cret")) == b"454 temporary authentication failure (#4.3.0)\r\n"
    (tls_tree / "control" / "smtpcheckpassword").write_text("/nonexistent/checkpassword\n")
    c2 = TlsClient(serve(procs, tls_tree)).starttls()
    assert c2.send(b"AUTH PLAIN " + b64(b"\0joe\0s3cret")) == b"454 temporary authentication failure (#4.3.0)\r\n"
    for client in (c, c2):
        client.close()


@pytest.mark.parametrize("server", ["qmail-tcpserver", "ucspi-tcp-ipv6"])
def test_ipv6_client(procs, tree, server):
    """swaks over ::1 under qmail-tcpserver and under Debian's ucspi-tcp-ipv6 tcpserver."""
    need("swaks")
    server = program(server) if server == "qmail-tcpserver" else ipv6_tcpserver()
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no ::1")
    port = tcpserver(procs, tree, [program("qmail-smtpd")], host="::1", server=server)
    assert swaks_v6(port) != 0  # [IPv6:::1] is no rcpthosts domain (and the extension is off)
    control(tree, smtpipv6literals=1, localiphost="test.example")
    assert swaks_v6(port) == 0
    [(body, _, rcpts)] = messages(tree)
    assert rcpts == [b"c@test.example"]
    assert body.startswith(b"Received: from unknown (HELO [IPv6:::1]) (::1)\n  by 0 with SMTP; ")


def swaks_v6(port):
    """swaks over ::1 to c@[IPv6:::1]; return its exit code."""
    return subprocess.run(["swaks", "-6", "--server", "::1", "--port", str(port), "--from", "a@b.example",
                           "--to", "c@[IPv6:::1]", "--helo", "[IPv6:::1]"], capture_output=True, timeout=60).returncode
