"""qmail-remote's STARTTLS and SIZE against a private Postfix smtpd; AUTH and TLS failures against a scripted server.

Postfix's smtpd needs Cyrus SASL or Dovecot for AUTH (neither is set up here), so AUTH is tested against a small
scripted server that checks the exact commands.
"""

import base64
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, need, wait_port
from test_qmail_remote import remote, route, start_sink

PF_IP = "127.0.0.4"
MASTER = """{ip}:{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""
MAIN = """compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
myhostname = pf.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_tls_security_level = may
smtpd_tls_cert_file = {d}/cert.pem
smtpd_tls_key_file = {d}/key.pem
smtpd_tls_received_header = yes
virtual_mailbox_domains = sink.test
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
maillog_file_prefixes = {d}
maillog_file = {d}/maillog
alias_maps =
alias_database =
smtputf8_enable = no
message_size_limit = 100000
"""


def self_signed(directory, name):
    """Make a self-signed certificate for mx.tls.test and 127.0.0.4; return (cert, key) paths."""
    cert, key = directory / (name + "-cert.pem"), directory / (name + "-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=mx.tls.test",
                    "-addext", "subjectAltName=DNS:mx.tls.test,IP:%s" % PF_IP],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


@pytest.fixture
def postfix(world_tmp, tree):
    """A private Postfix (own config, queue and port on 127.0.0.4) delivering sink.test to a Maildir."""
    need("postfix", "openssl")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root")
    d = world_tmp / "postfix"
    for sub in ("queue", "data", "mail"):
        (d / sub).mkdir(parents=True)
    shutil.chown(d / "mail", 65534, 65534)
    shutil.chown(d / "data", "postfix")
    cert, key = self_signed(d, "server")
    os.rename(cert, d / "cert.pem")
    os.rename(key, d / "key.pem")
    port = free_port(PF_IP)
    (d / "main.cf").write_text(MAIN.format(d=d))
    (d / "master.cf").write_text(MASTER.format(ip=PF_IP, port=port))
    subprocess.run(["postfix", "-c", str(d), "start"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(PF_IP, port)
        route(tree, b"sink.test:[%s]:%d" % (PF_IP.encode(), port))
        yield d
    finally:
        subprocess.run(["postfix", "-c", str(d), "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pidfile = d / "queue" / "pid" / "master.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().split()[0]), 9)
            except (ProcessLookupError, ValueError):
                pass


def delivered(d, wait=10.0):
    """Return the messages Postfix delivered to the Maildir."""
    new = d / "mail" / "box" / "new"
    deadline = time.time() + wait
    while time.time() < deadline:
        if new.exists() and os.listdir(new):
            return [(new / n).read_bytes() for n in sorted(os.listdir(new))]
        time.sleep(0.05)
    return []


def test_opportunistic_starttls_with_postfix(tree, world_tmp, postfix):
    code, out = remote(tree, world_tmp, ["sink.test", "a@b.example", "box@sink.test"], b"Subject: tls\n\nhello\n")
    assert out.startswith(b"r\0K127.0.0.4 accepted message.\nRemote host said: 250 2.0.0 Ok: queued as ")
    [message] = delivered(postfix)
    assert b"(using TLSv1." in message and b"with ESMTPS id" in message
    assert message.endswith(b"Subject: tls\n\nhello\n") or b"\nhello\n" in message


def test_required_and_verified_tls(tree, world_tmp, postfix):
    (tree / "control" / "tlsdestinations").write_bytes(b"sink.test:verify\n")
    shutil.copy(postfix / "cert.pem", tree / "control" / "tlscafile")
    assert remote(tree, world_tmp, ["sink.test", "a@b", "box@sink.test"])[1].startswith(b"r\0K127.0.0.4 accepted")
    other, _ = self_signed(world_tmp, "other")
    shutil.copy(other, tree / "control" / "tlscafile")
    out = remote(tree, world_tmp, ["sink.test", "a@b", "box@sink.test"])[1]
    assert out.startswith(b"ZConnected to 127.0.0.4 but TLS failed: CERTIFICATE_VERIFY_FAILED")
    assert len(delivered(postfix)) == 1


def test_size_is_declared(tree, world_tmp, postfix):
    out = remote(tree, world_tmp, ["sink.test", "a@b", "box@sink.test"], b"Subject: big\n\n" + b"x" * 200000 + b"\n")
    assert out[1] == (b"DConnected to 127.0.0.4 but sender was rejected.\n"
                      b"Remote host said: 552 5.3.4 Message size exceeds fixed limit\n\0")


def test_required_tls_refuses_a_server_without_starttls(procs, tree, world_tmp):
    port, dump = start_sink(procs, world_tmp)
    route(tree, b":[127.0.0.2]:%d" % port)
    (tree / "control" / "tlsdestinations").write_bytes(b".example\n")
    out = remote(tree, world_tmp, ["x.example", "a@b", "c@x.example"])[1]
    assert out.startswith(b"ZConnected to 127.0.0.2 but it does not offer STARTTLS, which control/tlsdestinations"
                          b" requires.\nRemote host said: 250-")
    assert os.listdir(dump) == []
    assert remote(tree, world_tmp, ["other.test", "a@b", "c@other.test"])[1].startswith(b"r\0K127.0.0.2 ")


class Scripted:
    """A scripted SMTP server on 127.0.0.6: EHLO offers `ehlo` lines; AUTH answers from `auth`; records commands."""

    def __init__(self, ehlo, auth=(), sessions=1, bad_tls=False):
        self.ehlo, self.auth, self.bad_tls = list(ehlo), list(auth), bad_tls
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.6", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.commands = []
        self.thread = threading.Thread(target=self.serve, args=(sessions,), daemon=True)
        self.thread.start()

    def serve(self, sessions):
        """Answer `sessions` connections."""
        self.sock.settimeout(20)
        for _ in range(sessions):
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(20)
                self.session(conn.makefile("rwb"))
        self.sock.close()

    def session(self, f):
        """One SMTP session."""
        f.write(b"220 scripted ESMTP\r\n")
        f.flush()
        auth = list(self.auth)
        in_data = False
        for line in f:
            self.commands.append(line)
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    f.write(b"250 ok queued\r\n")
                f.flush()
                continue
            verb = line.split()[0].upper() if line.split() else b""
            if verb == b"EHLO":
                f.write(b"".join(b"250-%s\r\n" % e for e in [b"scripted"] + self.ehlo[:-1]) + b"250 %s\r\n" %
                        (self.ehlo[-1] if self.ehlo else b"scripted"))
            elif verb == b"STARTTLS" and self.bad_tls:
                f.write(b"220 go ahead\r\n")
                f.flush()
                f.write(b"this is not TLS\r\n" * 20)
                f.flush()
                return
            elif verb == b"QUIT":
                f.write(b"221 bye\r\n")
                f.flush()
                return
            elif verb == b"DATA":
                in_data = True
                f.write(b"354 go\r\n")
            elif auth and not line.startswith((b"MAIL", b"RCPT")):
                f.write(auth.pop(0) + b"\r\n")
            else:
                f.write(b"250 ok\r\n")
            f.flush()


def auth_file(tree, text, mode=0o600):
    """Write control/remoteauth with mode."""
    path = tree / "control" / "remoteauth"
    path.write_bytes(text)
    os.chmod(path, mode)


def test_auth_plain(tree, world_tmp):
    s = Scripted([b"AUTH LOGIN PLAIN", b"SIZE 1000000"], auth=[b"235 2.7.0 ok"])
    route(tree, b"example.com:[127.0.0.6]:%d" % s.port)
    auth_file(tree, b"[127.0.0.6]:joe:se:cret\n")
    out = remote(tree, world_tmp, ["example.com", "a@b", "c@example.com"])[1]
    assert out == b"r\0K127.0.0.6 accepted message.\nRemote host said: 250 ok queued\n\0"
    s.thread.join(10)
    assert s.commands[1] == b"AUTH PLAIN " + base64.b64encode(b"\0joe\0se:cret") + b"\r\n"
    assert s.commands[2].startswith(b"MAIL FROM:<a@b> SIZE=")


def test_auth_login(tree, world_tmp):
    s = Scripted([b"AUTH LOGIN"], auth=[b"334 VXNlcm5hbWU6", b"334 UGFzc3dvcmQ6", b"235 ok"])
    route(tree, b"example.com:[127.0.0.6]:%d" % s.port)
    auth_file(tree, b"# relays\n[127.0.0.6]:joe:pw\n")
    assert remote(tree, world_tmp, ["example.com", "a@b", "c@example.com"])[1].startswith(b"r\0K127.0.0.6 ")
    s.thread.join(10)
    assert s.commands[1:4] == [b"AUTH LOGIN\r\n", base64.b64encode(b"joe") + b"\r\n", base64.b64encode(b"pw") + b"\r\n"]


def test_auth_refused_defers(tree, world_tmp):
    s = Scripted([b"AUTH PLAIN"], auth=[b"535 5.7.8 bad credentials"])
    route(tree, b"example.com:[127.0.0.6]:%d" % s.port)
    auth_file(tree, b"[127.0.0.6]:joe:wrong\n")
    assert remote(tree, world_tmp, ["example.com", "a@b", "c@example.com"])[1] == (
        b"ZConnected to 127.0.0.6 but my authentication was rejected.\n"
        b"Remote host said: 535 5.7.8 bad credentials\n\0")


def test_auth_file_readable_by_others_is_not_used(tree, world_tmp):
    route(tree, b"example.com:[127.0.0.6]:%d" % free_port("127.0.0.6"))
    auth_file(tree, b"[127.0.0.6]:joe:pw\n", 0o644)
    assert remote(tree, world_tmp, ["example.com", "a@b", "c@example.com"])[1] == (
        b"ZSorry, control/remoteauth can be read by others; I won't use its passwords. (#4.3.0)\n\0")


def test_failed_opportunistic_tls_retries_in_plain_text(tree, world_tmp):
    s = Scripted([b"STARTTLS"], sessions=2, bad_tls=True)
    route(tree, b"example.com:[127.0.0.6]:%d" % s.port)
    assert remote(tree, world_tmp, ["example.com", "a@b", "c@example.com"])[1].startswith(b"r\0K127.0.0.6 ")
    s.thread.join(10)
    assert s.commands.count(b"STARTTLS\r\n") == 1
    assert s.commands[-1] == b"QUIT\r\n"


SMUGGLED = b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<box@sink.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n"


@pytest.mark.parametrize("end", [b"\r\n.\r\n", b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n", b"\r.\n"])
def test_no_smuggling_into_postfix(tree, world_tmp, postfix, end):
    """Every end-of-data look-alike inside a message: Postfix stores one message, holding the would-be commands."""
    message = b"Subject: carrier\n\nbefore" + end + SMUGGLED + b".\r\nafter\n"
    out = remote(tree, world_tmp, ["sink.test", "a@b", "box@sink.test"], message)[1]
    assert out.startswith(b"r\0K127.0.0.4 accepted message.")
    time.sleep(0.5)
    [stored] = delivered(postfix)
    want = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    assert stored.split(b"\n\n", 1)[1] == want.split(b"\n\n", 1)[1]
    assert b"MAIL FROM:<evil@x.example>\n" in stored
