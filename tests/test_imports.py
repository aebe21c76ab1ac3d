"""Per-message programs import only what their code path needs (start-up cost: docs/benchmarks.md).

Each program is run for real, on a real message, under `python -X importtime`; the modules it imported are read
from that report and checked against a deny-list of heavy modules.
"""

import os
import pwd
import subprocess
import sys

import pytest

from conftest import program, qenv, tcpserver

ROOT = os.geteuid() == 0
HEAVY = {"asyncio", "email", "ssl", "logging", "dns", "re", "typing", "subprocess", "argparse", "docopt",
         "hypothesis", "json", "http", "urllib", "threading", "pathlib", "locale", "tempfile", "shutil"}


def imported(stderr):
    """Return the top-level package names of every module in a -X importtime report."""
    names = set()
    for line in stderr.decode(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name.split(".")[0])
    return names


def run_timed(name, tree, stdin=b"", argv=(), fds=None, preexec=None, env=None):
    """Run an installed program's launcher under -X importtime; return (exit code, top-level modules)."""
    launcher = program(name)
    e = qenv(tree, **(env or {}))
    proc = subprocess.run([sys.executable, "-X", "importtime", launcher, *argv], input=stdin, env=e,
                          stdout=fds if fds is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                          preexec_fn=preexec)
    return proc.returncode, imported(proc.stderr)


def test_qmail_queue_imports_nothing_heavy(tree):
    r, w = os.pipe()
    os.write(w, b"Fa@b.example\0Tc@d.example\0\0")
    os.close(w)
    code, mods = run_timed("qmail-queue", tree, b"Subject: x\n\nbody\n", fds=r)
    os.close(r)
    assert code == 0
    assert not mods & HEAVY, sorted(mods & HEAVY)


def test_qmail_qmqpd_imports_nothing_heavy(tree):
    body = b"".join(b"%d:%s," % (len(f), f) for f in (b"Subject: x\n\nbody\n", b"a@b.example", b"c@d.example"))
    request = b"%d:%s," % (len(body), body)
    code, mods = run_timed("qmail-qmqpd", tree, request, env={"TCPREMOTEIP": "127.0.0.1", "TCPLOCALPORT": "628"})
    assert code == 0
    assert not mods & HEAVY, sorted(mods & HEAVY)


def test_qmail_qmqpd_under_tcpserver_imports_nothing_heavy(procs, tree):
    """The same through a real socket (fd 0 is a TCP connection; the peer comes from tcpserver's variables)."""
    port = tcpserver(procs, tree, [sys.executable, "-X", "importtime", program("qmail-qmqpd")])
    import socket
    body = b"".join(b"%d:%s," % (len(f), f) for f in (b"Subject: x\n\nbody\n", b"a@b.example", b"c@d.example"))
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"%d:%s," % (len(body), body))
        reply = s.recv(100)
    assert b":K" in reply
    log = (tree / ("tcpserver-%d.log" % port)).read_bytes()
    mods = imported(log)
    assert "pyqmail" in mods
    assert not mods & HEAVY, sorted(mods & HEAVY)
    assert "_socket" not in mods  # an IPv4 peer from tcpserver's variables needs no socket module


def qmqp_request():
    """One QMQP request: a message, its sender and one recipient."""
    body = b"".join(b"%d:%s," % (len(f), f) for f in (b"Subject: x\n\nbody\n", b"a@b.example", b"c@d.example"))
    return b"%d:%s," % (len(body), body)


def qmtp_package():
    """One QMTP package (LF encoding) for a recipient in rcpthosts."""
    message, rcpts = b"\nSubject: x\nbody\n", b"14:c@test.example,"
    return b"%d:%s,11:a@b.example,%d:%s," % (len(message), message, len(rcpts), rcpts)


SMTP_SESSION = b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@test.example>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"


@pytest.mark.parametrize("name,request_bytes,port", [
    ("qmail-qmqpd", qmqp_request(), "628"), ("qmail-qmtpd", qmtp_package(), "209"), ("qmail-smtpd", SMTP_SESSION, "25")])
def test_network_servers_queueing_themselves_never_import_os(tree, name, request_bytes, port):
    """Under qmail-setup's launcher (-S), queueing in their own process, the per-connection servers do
    without os: importing it costs about 1.5 ms of CPU per start, a tenth of a connection under tcpserver."""
    preexec = None
    if ROOT:  # in-process queueing needs the queue's owner, not root
        pw = pwd.getpwnam("nobody")
        for path in [tree, *tree.rglob("*")]:
            os.lchown(path, pw.pw_uid, pw.pw_gid)
        preexec = lambda: (os.setgroups([]), os.setgid(pw.pw_gid), os.setuid(pw.pw_uid))  # noqa: E731
    (tree / "control" / "rcpthosts").write_bytes(b"test.example\n")
    launcher = tree / "bin" / name
    shebang = launcher.read_bytes().split(b"\n", 1)[0].decode()
    assert shebang.startswith("#!") and shebang.endswith(" -S"), shebang
    proc = subprocess.Popen([shebang[2:-3], "-S", "-X", "importtime", str(launcher)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec,
                            env=qenv(tree, TCPREMOTEIP="127.0.0.1", TCPLOCALPORT=port))
    out, err = proc.communicate(request_bytes, timeout=60)
    assert proc.returncode == 0, (out, err)
    assert b" qp %d" % proc.pid in out, out  # accepted, and qmail-queue's work done in this process
    mods = imported(err)
    assert "pyqmail" in mods
    assert not mods & {"os", "posixpath", "_collections_abc"}, sorted(mods & {"os", "posixpath", "_collections_abc"})


@pytest.fixture
def home(world_tmp):
    """A home with a Maildir, owned by the delivery account (nobody when root)."""
    pw = pwd.getpwnam("nobody") if ROOT else pwd.getpwuid(os.getuid())
    h = world_tmp / "home"
    for d in (h, h / "Maildir", h / "Maildir/new", h / "Maildir/cur", h / "Maildir/tmp"):
        d.mkdir()
        os.chmod(d, 0o755)
        os.chown(d, pw.pw_uid, pw.pw_gid)
    return h, pw


def test_qmail_local_maildir_delivery_imports_nothing_heavy(tree, home):
    h, pw = home
    preexec = (lambda: (os.setgid(pw.pw_gid), os.setgroups([]), os.setuid(pw.pw_uid))) if ROOT else None
    argv = ["--", pw.pw_name, str(h), "joe", "", "", "test.example", "a@b.example", "./Maildir/"]
    msgfile = h / "msg"
    msgfile.write_bytes(b"Subject: x\n\nbody\n")
    with open(msgfile, "rb") as msg:
        proc = subprocess.run([sys.executable, "-X", "importtime", program("qmail-local"), *argv], stdin=msg,
                              env=qenv(tree), stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec)
    assert proc.returncode == 0, proc.stdout
    assert len(os.listdir(h / "Maildir/new")) == 1
    mods = imported(proc.stderr)
    assert not mods & HEAVY, sorted(mods & HEAVY)


def test_qmail_remote_routed_delivery_imports_nothing_heavy(procs, tree, world_tmp):
    """qmail-remote to an smtproutes IP literal (smtp-sink offers no STARTTLS): no dns, no ssl, no re."""
    from test_qmail_remote import OK, route, start_sink
    port, _ = start_sink(procs, world_tmp)
    route(tree, b":[127.0.0.2]:%d" % port)
    msg = world_tmp / "msg"
    msg.write_bytes(b"Subject: x\n\nbody\n")
    with open(msg, "rb") as f:
        proc = subprocess.run([sys.executable, "-X", "importtime", program("qmail-remote"), "x.example", "a@b",
                               "c@x.example"], stdin=f, env=qenv(tree), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout == b"r\0" + OK
    mods = imported(proc.stderr)
    assert "pyqmail" in mods
    assert not mods & HEAVY, sorted(mods & HEAVY)


def test_qmail_inject_imports_nothing_heavy(tree):
    """qmail-inject's plain path: header rewriting, added fields, queueing (in process or through qmail-queue)."""
    message = b"To: a@b.example, Joe <joe>\nCc: (x) c\nSubject: x\n\nbody\n"
    for argv in ([], ["-n", "-f", "s@x.example", "r@y.example"]):
        code, mods = run_timed("qmail-inject", tree, message, argv=argv, env={"USER": "joe", "NAME": "Joe"})
        assert code == 0
        assert "pyqmail" in mods
        assert not mods & HEAVY, sorted(mods & HEAVY)


def test_qmail_qmtpd_imports_nothing_heavy(tree):
    """Two pipelined packages (LF and CRLF encoding), rcpthosts and morercpthosts.cdb consulted."""
    import cdbx
    cdbx.CDB.make(str(tree / "control" / "morercpthosts.cdb")).commit()  # an empty table: looked up, no match
    packages = b""
    for first, sep in ((b"\n", b"\n"), (b"\r", b"\r\n")):
        message = first + sep.join([b"Subject: x", b"", b"body", b""])
        rcpts = b"14:c@test.example,11:d@elsewhere,"
        packages += b"%d:%s,11:a@b.example,%d:%s," % (len(message), message, len(rcpts), rcpts)
    code, mods = run_timed("qmail-qmtpd", tree, packages, env={"TCPREMOTEIP": "127.0.0.1", "TCPLOCALPORT": "209"})
    assert code == 0
    assert "pyqmail" in mods and "cdbx" in mods
    assert not mods & HEAVY, sorted(mods & HEAVY)


def test_qmail_smtpd_imports_nothing_heavy(tree):
    """A whole plain session (EHLO, MAIL, RCPT, DATA, QUIT) queues a message without ssl, re, email ..."""
    script = b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@test.example>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    code, mods = run_timed("qmail-smtpd", tree, script, env={"TCPREMOTEIP": "127.0.0.1"})
    assert code == 0
    assert "pyqmail" in mods
    assert not mods & HEAVY, sorted(mods & HEAVY)
