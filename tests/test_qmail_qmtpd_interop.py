"""qmail-qmtpd under the real tcpserver and under qmail-tcpserver, queueing in-process, delivering into a Maildir."""

import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import free_port, ipv6_tcpserver, make_tree, need, program, qenv, queued, tcpserver, wait_port
from mailsystem import ROOT, MailSystem, assign_users, make_home, make_system_tree
from test_qmail_qmtpd import K, RCPTHOSTS_D, lines, package, payloads, read_responses
from test_qmail_tcpserver import tcprules_cdb
from test_queuehere import owner

pytestmark = pytest.mark.interop

RULES = '127.0.0.2:allow,RELAYCLIENT="@relay.example"\n:allow\n'


def connect(port, source="127.0.0.1"):
    """A TCP connection from source to our server on loopback."""
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    return s


def exchange(port, data, count, source="127.0.0.1"):
    """Send data (all packages at once), read count responses, then close; return them."""
    with connect(port, source) as s:
        s.sendall(data)
        out, rest = read_responses(s, count)
        s.shutdown(socket.SHUT_WR)
        assert rest == b"" and s.recv(100) == b""
    return out


def mixed(n, tag=b""):
    """n packages alternating encodings, each to one local and one foreign recipient."""
    return b"".join(package(lines(b"Subject: %s%d\n\nbody %d\r\n" % (tag, i, i)), b"s@x",
                            [b"r%d@test.example" % i, b"f@foreign.example"], crlf=i % 2 == 1) for i in range(n))


def check_mixed(tree, n, tag=b"", relay=False):
    """The n messages of mixed() are queued byte-exact with the right envelopes."""
    want = []
    for i in range(n):
        rcpts = [b"r%d@test.example" % i, b"f@foreign.example"]
        if relay:
            rcpts = [r + b"@relay.example" for r in rcpts]
        else:
            rcpts = rcpts[:1]
        want.append((b"Subject: %s%d\n\nbody %d\r\n" % (tag, i, i), b"Fs@x\0T" + b"\0T".join(rcpts) + b"\0"))
    assert [p for p in payloads(tree) if p[0].startswith(b"Subject: %s" % tag)] == sorted(want)


@pytest.mark.parametrize("server", ["tcpserver", "qmail-tcpserver"])
def test_pipelined_packages_through_a_tcp_server_with_tcprules(procs, tree, world_tmp, server):
    need("tcpserver", "tcprules")
    cdb = tcprules_cdb(world_tmp, RULES)
    port = tcpserver(procs, tree, [program("qmail-qmtpd")], rules_cdb=cdb,
                     server=program(server) if server == "qmail-tcpserver" else server)
    out = exchange(port, mixed(10, b"a"), 20)
    assert all(K.fullmatch(r) for r in out[0::2]) and set(out[1::2]) == {RCPTHOSTS_D}
    out = exchange(port, mixed(10, b"b"), 20, source="127.0.0.2")  # RELAYCLIENT from the rules
    assert all(K.fullmatch(r) for r in out)
    check_mixed(tree, 10, b"a")
    check_mixed(tree, 10, b"b", relay=True)
    for mess, _ in queued(tree).values():
        assert re.search(rb"\nReceived: from unknown \(127\.0\.0\.[12]\)\n  by 0 with QMTP; ", mess)


def test_ipv6_under_ucspi_tcp_ipv6(procs, tree, world_tmp):
    """Debian's ucspi-tcp-ipv6 on ::1, with its tcprules table: an IPv6 rule sets RELAYCLIENT for ::1 only."""
    server = ipv6_tcpserver()
    tcprules = str(Path(server).parent / "tcprules")
    cdb, tmp = world_tmp / "qmtp6.cdb", world_tmp / "qmtp6.tmp"
    subprocess.run([tcprules, str(cdb), str(tmp)], input=b'::1:allow,RELAYCLIENT="@relay.example"\n:deny\n',
                   check=True)
    port = tcpserver(procs, tree, [program("qmail-qmtpd")], host="::1", rules_cdb=cdb, server=server)
    with socket.create_connection(("::1", port), timeout=30) as s:
        s.sendall(mixed(4, b"six"))
        out, rest = read_responses(s, 8)
        s.shutdown(socket.SHUT_WR)
        assert rest == b"" and s.recv(100) == b""
    assert all(K.fullmatch(r) for r in out)
    check_mixed(tree, 4, b"six", relay=True)
    for mess, _ in queued(tree).values():
        assert re.search(rb"\nReceived: from unknown \(::1\)\n  by 0 with QMTP; ", mess), mess[:200]


def test_qmail_tcpserver_runs_it_in_process(procs, tree, world_tmp):
    log_path = world_tmp / "listener.log"
    port = free_port()
    with open(log_path, "ab") as log:
        procs.start([program("qmail-tcpserver"), "-v", "-H", "-R", "-l", "0", "127.0.0.1", str(port),
                     str(tree / "bin" / "qmail-qmtpd")], env=qenv(tree), stdout=subprocess.DEVNULL, stderr=log)
    wait_port("127.0.0.1", port)
    out = exchange(port, package([b"x"], b"", [b"a@test.example"]), 1)
    assert K.fullmatch(out[0])
    assert "in forked children of this process (pyqmail.commands.qmail_qmtpd)" in log_path.read_text()


# ---- queueing in qmail-qmtpd's own process ----


@pytest.fixture
def own_tree(world_tmp):
    """A single-user tree owned by the account that runs qmail-qmtpd."""
    return make_tree(world_tmp / "own", "--user", owner().pw_name, "--me", "test.example")


def run_as_owner(tree, data, **env):
    """Run qmail-qmtpd as the tree's owner on data; return (its pid, its output)."""
    pw = owner()
    preexec = (lambda: (os.setgroups([]), os.setgid(pw.pw_gid), os.setuid(pw.pw_uid))) if ROOT else None
    proc = subprocess.Popen([program("qmail-qmtpd")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, preexec_fn=preexec,
                            env=qenv(tree, TCPREMOTEIP="127.0.0.1", TCPLOCALIP="127.0.0.1", **env))
    out = proc.communicate(data, timeout=60)[0]
    assert proc.returncode == 0
    return proc.pid, out


def test_in_process_queueing_writes_what_qmail_queue_writes(own_tree):
    data = mixed(6)
    pid, out = run_as_owner(own_tree, data)
    here = payloads(own_tree)
    assert re.fullmatch((rb"\d+:Kok \d+ qp %d," % pid + rb"66:" + re.escape(RCPTHOSTS_D) + b",") * 6, out), out
    for f in (own_tree / "queue").rglob("*"):
        if f.is_file() and f.parent.name in ("todo", "intd") or f.parent.parent.name == "mess":
            f.unlink()
    pid2, out2 = run_as_owner(own_tree, data, QMAILQUEUE=str(own_tree / "bin" / "qmail-queue"))
    assert b"qp %d," % pid2 not in out2 and out2.count(b"Kok") == 6
    assert payloads(own_tree) == here
    check_mixed(own_tree, 6)


# ---- end to end: QMTP in, Maildir out ----


def test_end_to_end_into_a_maildir(procs, world_tmp):
    tree = make_system_tree(world_tmp / "qmail")
    home = make_home(world_tmp)
    assign_users(tree, [("=", "joe", str(home), "", "")])
    system = MailSystem(procs, tree)
    port = tcpserver(procs, tree, [program("qmail-qmtpd")])
    bodies = [b"Subject: lf\n\nfirst \xff\x00 line\n\n.\n", b"Subject: crlf\n\nsecond\rline\nno newline at the end"]
    data = b"".join(package(lines(b), b"sender@example.org", [b"joe@test.example"], crlf=i == 1)
                    for i, b in enumerate(bodies))
    out = exchange(port, data, 2)
    assert all(K.fullmatch(r) for r in out)
    system.wait_log(b"end msg ", count=2)
    delivered = sorted(f.read_bytes() for f in (home / "Maildir" / "new").iterdir())
    assert len(delivered) == 2
    for body, mail in zip(sorted(bodies, key=lambda b: b[:20]), sorted(delivered, key=lambda m: m[m.index(b"Subject"):])):
        assert mail.startswith(b"Return-Path: <sender@example.org>\nDelivered-To: joe@test.example\nReceived: ")
        assert re.search(rb"\nReceived: from unknown \(127\.0\.0\.1\)\n  by 0 with QMTP; [^\n]+\n" + re.escape(body)
                         + rb"$", mail), mail
    assert system.stop() == 0


# ---- throughput: many QMTP sessions at once ----


def drive(port, sessions, per_session, size=2000):
    """Run sessions parallel clients, each sending per_session pipelined packages; return (seconds, responses)."""
    body = b"Subject: load\n\n" + b"x" * (size - 16) + b"\n"
    results = [None] * sessions

    def client(i):
        data = b"".join(package(lines(body), b"load@example.org", [b"u%d@test.example" % i], crlf=(i + j) % 2 == 1)
                        for j in range(per_session))
        results[i] = exchange(port, data, per_session)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(sessions)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return time.monotonic() - start, [r for rs in results for r in rs or []]


@pytest.mark.parametrize("server, owner_queues", [("tcpserver", False), ("qmail-tcpserver", False),
                                                  ("qmail-tcpserver", True)])
def test_throughput_with_parallel_sessions(procs, tree, own_tree, server, owner_queues, capsys):
    sessions, per_session = 10, 40
    target = own_tree if owner_queues else tree
    options = ["-c", str(sessions)]
    if owner_queues and ROOT:  # queue in qmail-qmtpd's own process, as the queue's owner
        options += ["-u", str(owner().pw_uid), "-g", str(owner().pw_gid)]
    port = tcpserver(procs, target, [program("qmail-qmtpd")], options=options,
                     server=program(server) if server == "qmail-tcpserver" else server)
    seconds, out = drive(port, sessions, per_session)
    n = sessions * per_session
    assert len(out) == n and all(K.fullmatch(r) for r in out)
    assert len(queued(target)) == n
    with capsys.disabled():
        print("\nqmail-qmtpd under %s%s: %d messages in %d sessions of %d pipelined packages: %.1f s, %.0f msg/s"
              % (server, " (queueing in-process)" if owner_queues else "", n, sessions, per_session, seconds,
                 n / seconds))
