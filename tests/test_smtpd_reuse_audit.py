"""An adversarial audit of qmail-smtpd in qmail-tcpserver's reused workers (issue 23): a hostile client or a tired
administrator gives session 1 some state (a line over the bound, a cut or refused TLS handshake, a reset or a
timeout in the middle of DATA, a burst it never reads, QMAILQUEUE or TCPLOCALHOST from the rules, an edited
greeting) and the next session on the SAME worker (-c 1, the worker's pid checked in the log) sees none of it,
and nothing accepted is lost. Complements tests/test_smtpd_reuse.py, which covers RELAYCLIENT, DATABYTES, the
rules' variables, TCPREMOTEHOST/INFO, TLS and AUTH left mid-transaction, servercert.pem, rcpthosts and
morercpthosts.cdb, the transaction and a line without its LF, and smtpdeadline."""

import os
import socket
import ssl
import struct
import time

import pytest

from conftest import program, queued
from test_qmail_smtpd import control, messages
from test_qmail_smtpd_interop import b64, queue_owner_tree, tls_tree  # noqa: F401 (tls_tree: a fixture)
from test_qmail_tcpserver import serve, tcprules_cdb
from test_smtpd_reuse import Client, idle_worker, one_worker, settle, settled_fds
from mailsystem import children

pytestmark = pytest.mark.interop
WHOLE = b"Subject: whole\r\n\r\nwhole\r\n"


def worker_of(log):
    """Return the pid of the worker that served the last `ok` line so far (the one serve()'s probe used)."""
    deadline = time.time() + 20
    while time.time() < deadline:
        pids = [int(line.split()[2]) for line in log.path.read_text().splitlines() if line.startswith("tcpserver: ok ")]
        if pids:
            return pids[-1]
        time.sleep(0.02)
    raise AssertionError(log.path.read_text())


def rules_worker(procs, tree, world_tmp, rules, options=()):
    """Run qmail-smtpd under qmail-tcpserver -c 1 with these rules (tcprules' text); return (port, log)."""
    cdb = tcprules_cdb(world_tmp, rules)
    port, _, log = serve(procs, tree, program("qmail-tcpserver"), [program("qmail-smtpd")],
                         ["-c", "1", "-x", str(cdb), *options], env=dict(os.environ, QMAILHOME=str(tree)))
    assert "in forked children" in log.path.read_text()
    return port, log


def queue_files(tree):
    """Return the names of every file in queue/pid, mess, intd and todo (pooled pid/pool.* files left out)."""
    found = []
    for kind in ("pid", "mess", "intd", "todo"):
        for root, _, files in os.walk(tree / "queue" / kind):
            found += [os.path.join(root, f) for f in files if not f.startswith("pool.")]
    return sorted(found)


def test_a_line_over_the_bound_plain_or_in_auth_leaves_nothing_to_the_next_session(procs, tls_tree, world_tmp):
    port, log = one_worker(procs, tls_tree, world_tmp)
    worker = worker_of(log)
    c = Client(port)
    # a hostile line: the bound is passed, then the client goes on sending what would be commands
    c.sock.sendall(b"MAIL FROM:<" + b"a" * 5000 + b"@b.example>\r\nRCPT TO:<far@away.example>\r\nDATA\r\n")
    assert c.reply() == b"500 command line too long (#5.5.2)\r\n"
    c.close()
    c = Client(port)
    assert c.greeting == b"220 test.example ESMTP\r\n"
    assert c.send(b"DATA") == b"503 MAIL first (#5.5.1)\r\n"  # no transaction, nothing of the long line's tail
    c.send(b"EHLO x")
    c.starttls()
    assert c.send(b"AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    c.sock.sendall(b64(b"joe") * 2000)  # a response over the bound, under TLS
    assert c.reply() == b"500 command line too long (#5.5.2)\r\n"
    c.close()
    c = Client(port)
    ehlo = c.send(b"EHLO x")
    assert b"250-STARTTLS\r\n" in ehlo and b"AUTH" not in ehlo  # plaintext, no TLS or AUTH state left
    assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
    assert c.send(b"RCPT TO:<far@away.example>") == \
        b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
    assert c.mail(body=WHOLE).startswith(b"250 ok ")
    c.quit()
    assert idle_worker(log, 3) == worker
    [(body, _, rcpts)] = messages(tls_tree)
    assert rcpts == [b"c@test.example"] and body.endswith(b"Subject: whole\n\nwhole\n")


def test_a_handshake_cut_or_refused_never_spoils_the_next_sessions_tls(procs, tls_tree, world_tmp):
    port, log = one_worker(procs, tls_tree, world_tmp)
    worker = worker_of(log)
    before = settled_fds(worker)
    c = Client(port)
    c.send(b"EHLO x")
    assert c.send(b"STARTTLS") == b"220 ready for tls\r\n"
    c.sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(20))  # half a ClientHello: gone
    c.close()
    c = Client(port)
    c.send(b"EHLO x")
    assert c.send(b"STARTTLS") == b"220 ready for tls\r\n"
    c.sock.sendall(b"\x16\x03\x01\x00\x05garbage")  # a handshake message OpenSSL refuses (its error queue)
    c.sock.settimeout(20)
    alert = c.sock.recv(100)
    assert alert[:1] in (b"\x15", b"")  # at most a TLS alert, never plaintext
    c.close()
    c = Client(port)
    assert c.send(b"AUTH PLAIN " + b64(b"\0joe\0s3cret")) == \
        b"538 encryption required for requested authentication mechanism (#5.7.11)\r\n"
    c.send(b"EHLO x")
    c.starttls()
    assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert c.send(b"AUTH PLAIN " + b64(b"\0joe\0s3cret")) == b"235 ok, go ahead (#2.0.0)\r\n"
    assert c.mail(rcpt=b"far@away.example", body=WHOLE).startswith(b"250 ok ")
    c.quit()
    c = Client(port)
    assert c.mail(body=WHOLE).startswith(b"250 ok ")  # plaintext, unauthenticated: SMTP, not ESMTPSA
    c.quit()
    assert idle_worker(log, 4) == worker
    assert settled_fds(worker) == before
    got = sorted((rcpts, body.split(b"\n", 2)[1].split(b" with ", 1)[1].split(b";")[0])
                 for body, _, rcpts in messages(tls_tree))
    assert got == [([b"c@test.example"], b"SMTP"), ([b"far@away.example"], b"ESMTPSA")]


def test_a_reset_or_a_timeout_in_data_queues_nothing_and_leaves_no_file_to_the_next(procs, world_tmp):
    tree, owner = queue_owner_tree(world_tmp)  # queued in the worker's own process, as the queue's owner
    control(tree, timeoutsmtpd=2)
    port, log = rules_worker(procs, tree, world_tmp, ":allow\n", owner)
    worker = worker_of(log)
    c = Client(port)
    assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
    assert c.send(b"RCPT TO:<c@test.example>") == b"250 ok\r\n"
    assert c.send(b"DATA") == b"354 go ahead\r\n"
    c.sock.sendall(b"Subject: reset\r\n\r\n" + b"r" * 200000)  # past what is held: mess/N has been written
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # a reset, mid-DATA
    c = Client(port)
    assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
    assert c.send(b"RCPT TO:<c@test.example>") == b"250 ok\r\n"
    assert c.send(b"DATA") == b"354 go ahead\r\n"
    c.sock.sendall(b"Subject: silent\r\n\r\n" + b"s" * 100000)
    assert c.reply() == b"451 timeout (#4.4.2)\r\n"  # then silent for the timeout
    c.close()
    c = Client(port)
    assert c.mail(sender=b"last@x.example", body=WHOLE).startswith(b"250 ok ")
    c.quit()
    assert idle_worker(log, 3) == worker
    [(n, (mess, todo))] = queued(tree).items()
    assert mess.endswith(b"Subject: whole\n\nwhole\n") and b"\0Flast@x.example\0" in todo
    assert queue_files(tree) == sorted(str(tree / "queue" / kind / name) for kind, name in
                                       (("mess", "%d/%d" % (n % 23, n)), ("intd", "%d" % n), ("todo", "%d" % n)))


def test_qmailqueue_and_tcplocalhost_from_the_rules_apply_to_that_session_only(procs, world_tmp):
    tree, owner = queue_owner_tree(world_tmp)
    seen = world_tmp / "seen"
    seen.mkdir(mode=0o777)
    seen.chmod(0o777)
    filter_ = world_tmp / "filter"
    filter_.write_text("#!/bin/sh\necho refused >> %s/log\nexit 31\n" % seen)
    filter_.chmod(0o755)
    rules = '127.0.0.6:allow,QMAILQUEUE="%s",TCPLOCALHOST="over.example"\n:allow\n' % filter_
    port, log = rules_worker(procs, tree, world_tmp, rules, owner)
    worker = worker_of(log)
    refused = b"554 mail server permanently rejected message (#5.3.0)\r\n"
    for n, source in enumerate(("127.0.0.6", "127.0.0.2", "127.0.0.6", "127.0.0.2")):
        c = Client(port, source)
        reply = c.mail(body=b"Subject: %d\r\n\r\nbody\r\n" % n)
        c.quit()
        assert reply == refused if source == "127.0.0.6" else reply.startswith(b"250 ok "), (source, reply)
    assert idle_worker(log, 4) == worker
    assert (seen / "log").read_text() == "refused\n" * 2
    got = queued(tree)
    assert len(got) == 2
    for mess, _ in got.values():  # queued in process (qp: the worker), by this host's own name
        assert mess.startswith(b"Received: (qmail %d invoked " % worker)
        assert b"\n  by 0 with SMTP; " in mess and b"over.example" not in mess


def test_a_greeting_and_a_timeout_edited_in_place_reach_the_next_session(procs, tree, world_tmp):
    control(tree, smtpgreeting="old.example hello", timeoutsmtpd=1)
    ctl = tree / "control"
    port, log = one_worker(procs, tree, world_tmp)
    worker = worker_of(log)
    settle(*ctl.iterdir(), ctl)
    c = Client(port)
    assert c.greeting == b"220 old.example hello ESMTP\r\n"
    assert c.reply()  # silent: the timeout of 1 second ends the session == b"451 timeout (#4.4.2)\r\n"
    c.close()
    for name, text in (("smtpgreeting", "new.example howdy\n"), ("timeoutsmtpd", "9\n")):
        with open(ctl / name, "r+") as f:  # written in place: control/ itself does not change
            f.write(text)
            f.truncate()
    c = Client(port)
    assert c.greeting == b"220 new.example howdy ESMTP\r\n"
    time.sleep(1.5)  # longer than the old timeout: the new one applies
    assert c.send(b"HELO x") == b"250 new.example howdy\r\n"
    c.quit()
    assert idle_worker(log, 2) == worker


def test_a_client_that_never_reads_its_replies_holds_the_worker_only_for_the_timeout(procs, tree, world_tmp):
    control(tree, timeoutsmtpd=2)
    port, log = one_worker(procs, tree, world_tmp)
    worker = worker_of(log)
    c = Client(port)
    c.sock.setblocking(False)
    burst = b"NOOP\r\n" * 100000
    sent, deadline = 0, time.time() + 10
    while time.time() < deadline:  # send until the server stops reading (its replies fill both buffers)
        try:
            sent += c.sock.send(burst)
        except BlockingIOError:
            break
    started = time.time()
    c2 = Client(port)  # waits behind the stuck session (-c 1): served once its timeout ends it
    assert time.time() - started < 15
    assert c2.mail(body=WHOLE).startswith(b"250 ok ")
    c2.quit()
    c.close()
    assert idle_worker(log, 2) == worker
    assert len(queued(tree)) == 1
    assert "end %d status 256" % worker in log.read_text()  # the stuck session: exit 1, Gone


def test_an_auth_exchange_left_half_done_and_smtputf8_never_reach_the_next_session(procs, tls_tree, world_tmp):
    control(tls_tree, smtputf8=1)
    port, log = one_worker(procs, tls_tree, world_tmp)
    worker = worker_of(log)
    c = Client(port)
    c.send(b"EHLO x")
    c.starttls()
    assert c.send(b"AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
    assert c.send(b64(b"joe")) == b"334 UGFzc3dvcmQ6\r\n"  # Password: asked, and the client is gone
    c.close()
    c = Client(port)
    c.send(b"EHLO x")
    c.starttls()
    assert c.send(b"AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"  # the exchange starts over: Username:
    assert c.send(b64(b"joe")) == b"334 UGFzc3dvcmQ6\r\n"
    assert c.send(b64(b"s3cret")) == b"235 ok, go ahead (#2.0.0)\r\n"
    assert c.send(b"MAIL FROM:<a@b.example> SMTPUTF8") == b"250 ok\r\n"
    assert c.send(b"RCPT TO:<far@away.example>") == b"250 ok\r\n"
    assert c.send(b"DATA") == b"354 go ahead\r\n"
    c.sock.sendall(WHOLE + b".\r\n")
    assert c.reply().startswith(b"250 ok ")
    c.quit()
    c = Client(port)
    assert c.mail(body=WHOLE).startswith(b"250 ok ")
    c.quit()
    assert idle_worker(log, 3) == worker
    assert (world_tmp / "seen").read_bytes().count(b"|") == 1  # only the whole exchange reached checkpassword
    got = sorted(body.split(b"\n", 2)[1].split(b" with ", 1)[1].split(b";")[0] for body, _, _ in messages(tls_tree))
    assert got == [b"SMTP", b"UTF8SMTPSA"]


def test_real_peers_an_abandoned_openssl_session_then_swaks_and_smtp_source_on_the_same_worker(procs, tls_tree,
                                                                                              world_tmp):
    import subprocess
    from conftest import need
    need("openssl", "swaks", "smtp-source")
    port, log = one_worker(procs, tls_tree, world_tmp)
    worker = worker_of(log)
    before = settled_fds(worker)
    s_client = procs.start(["openssl", "s_client", "-quiet", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % port],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    s_client.stdin.write(b"AUTH PLAIN " + b64(b"\0joe\0s3cret") + b"\r\nMAIL FROM:<a@b.example>\r\n")
    s_client.stdin.flush()
    assert s_client.stdout.readline() == b"235 ok, go ahead (#2.0.0)\r\n"
    assert s_client.stdout.readline() == b"250 ok\r\n"
    procs.stop(s_client, sig=9)  # killed: no QUIT, no close_notify, mid-transaction, authenticated
    swaks = ["swaks", "--server", "127.0.0.1", "--port", str(port), "--from", "a@b.example", "--helo", "c.example"]
    r = subprocess.run(swaks + ["--to", "far@away.example", "--local-interface", "127.0.0.2"], capture_output=True,
                       timeout=60)  # not 127.0.0.1, which RELAYCLIENT is set for
    assert r.returncode != 0 and b"553 sorry, that domain isn't in my list of allowed rcpthosts" in r.stdout
    r = subprocess.run(swaks + ["--to", "c@test.example", "--pipeline"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout
    r = subprocess.run(["smtp-source", "-s", "1", "-m", "20", "-l", "600", "-f", "ss@x.example", "-t",
                        "c@test.example", "127.0.0.1:%d" % port], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert idle_worker(log, 3 + 20) == worker
    assert settled_fds(worker) == before
    got = messages(tls_tree)
    assert len(got) == 21 and all(rcpts == [b"c@test.example"] for _, _, rcpts in got)
    assert all(b" with SMTP; " in body.split(b"\n", 2)[1] for body, _, _ in got)


def test_an_encrypted_servercert_key_is_refused_with_454_never_asked_for_on_a_terminal(tls_tree, world_tmp):
    # defect found by this audit: OpenSSL asked for the key's pass phrase on the controlling terminal, so
    # qmail-tcpserver started from one hung in its listener (making the context to share) before any greeting,
    # and a worker meeting such a file after a change hung in STARTTLS, with no timeout
    import pty
    import subprocess
    from conftest import free_port, qenv, stop_pty_child, terminal_said, wait_port
    key, cert = world_tmp / "enc-key.pem", world_tmp / "enc-cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-passout", "pass:secret", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=test.example"], check=True, capture_output=True)
    assert b"ENCRYPTED" in key.read_bytes()
    pem = tls_tree / "control" / "servercert.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    settle(pem)  # settled: the listener makes its context before forking workers
    port = free_port()
    env = qenv(tls_tree)
    pid, terminal = pty.fork()  # the server gets a controlling terminal, as when an administrator starts it by hand
    if pid == 0:
        os.execve(program("qmail-tcpserver"), [program("qmail-tcpserver"), "-c", "1", "127.0.0.1", str(port),
                                               program("qmail-smtpd")], env)
    try:
        wait_port("127.0.0.1", port)
        c = Client(port)
        assert c.greeting == b"220 test.example ESMTP\r\n"
        assert b"250-STARTTLS\r\n" in c.send(b"EHLO x")
        assert c.send(b"STARTTLS") == b"454 TLS not available due to temporary reason (#4.3.0)\r\n"
        assert c.send(b"NOOP") == b"250 ok\r\n"
        c.quit()
        said = terminal_said(terminal)
        assert b"pass phrase" not in said, said
    finally:
        stop_pty_child(pid, terminal, group=True)  # the listener and its workers: pty.fork made it a group leader


def test_a_qmailhome_from_the_rules_gives_that_client_its_own_tree_and_the_next_its_own(procs, tree, world_tmp):
    from conftest import make_tree
    other = make_tree(world_tmp / "other", "--single-user", "--me", "other.example")
    control(tree, rcpthosts="test.example")
    control(other, rcpthosts="other.example", databytes=1000)
    settle(*(tree / "control").iterdir(), tree / "control", *(other / "control").iterdir(), other / "control")
    port, log = rules_worker(procs, tree, world_tmp, '127.0.0.7:allow,QMAILHOME="%s"\n:allow\n' % other)
    worker = worker_of(log)
    big = b"Subject: big\r\n\r\n" + b"b" * 2000 + b"\r\n"
    for n in range(2):  # twice each way: the controls each tree's session kept must stay that tree's
        c = Client(port, "127.0.0.7")
        assert c.greeting == b"220 other.example ESMTP\r\n"
        assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
        assert c.send(b"RCPT TO:<x@test.example>")[:4] == b"553 "
        assert c.send(b"RSET") == b"250 flushed\r\n"
        assert c.mail(rcpt=b"x@other.example", body=big) == \
            b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
        assert c.mail(rcpt=b"x@other.example", body=WHOLE).startswith(b"250 ok ")
        c.quit()
        c = Client(port, "127.0.0.2")
        assert c.greeting == b"220 test.example ESMTP\r\n"
        assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
        assert c.send(b"RCPT TO:<x@other.example>")[:4] == b"553 "
        assert c.send(b"RSET") == b"250 flushed\r\n"
        assert c.mail(rcpt=b"x@test.example", body=big).startswith(b"250 ok ")
        c.quit()
    assert idle_worker(log, 4) == worker
    assert sorted(r for _, _, r in messages(other)) == [[b"x@other.example"]] * 2
    assert sorted(r for _, _, r in messages(tree)) == [[b"x@test.example"]] * 2


def test_a_qmail_queue_that_crashes_or_checkpassword_that_dies_leaves_the_worker_whole(procs, tls_tree, world_tmp):
    crasher = world_tmp / "crash"
    crasher.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crasher.chmod(0o755)
    dying = world_tmp / "dying"
    dying.write_text("#!/bin/sh\nkill -KILL $$\n")
    dying.chmod(0o755)
    port, log = rules_worker(procs, tls_tree, world_tmp,
                             '127.0.0.8:allow,QMAILQUEUE="%s"\n:allow\n' % crasher)
    worker = worker_of(log)
    c = Client(port, "127.0.0.8")
    assert c.mail(body=WHOLE) == b"451 qq crashed (#4.3.0)\r\n"
    assert c.mail(body=WHOLE) == b"451 qq crashed (#4.3.0)\r\n"  # the session goes on
    c.quit()
    control(tls_tree, smtpcheckpassword=dying)
    c = Client(port)
    c.send(b"EHLO x")
    c.starttls()
    assert c.send(b"AUTH PLAIN " + b64(b"\0joe\0s3cret")) == b"454 temporary authentication failure (#4.3.0)\r\n"
    c.quit()
    c = Client(port)
    assert c.mail(body=WHOLE).startswith(b"250 ok ")
    c.quit()
    assert idle_worker(log, 3) == worker
    assert "crashed" not in log.read_text()  # the worker itself never did
    assert children(worker) == []  # and it reaped the crashed qmail-queue and the killed checkpassword
    assert len(messages(tls_tree)) == 1


def test_a_data_rate_deadline_reached_never_reaches_the_next_sessions_data(procs, tree, world_tmp):
    import select
    control(tree, timeoutsmtpd=2, smtpminrate=10000)
    port, log = one_worker(procs, tree, world_tmp)
    worker = worker_of(log)
    c = Client(port)
    assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
    assert c.send(b"RCPT TO:<c@test.example>") == b"250 ok\r\n"
    assert c.send(b"DATA") == b"354 go ahead\r\n"
    deadline = time.time() + 20
    while time.time() < deadline and not select.select([c.sock], [], [], 0.3)[0]:
        c.sock.sendall(b"t")  # a byte every 0.3 s: within the per-read timeout, far below the rate
    assert c.reply() == b"451 timeout (#4.4.2)\r\n"
    c.close()
    c = Client(port)  # a DATA deadline left from the last session would end this one's DATA at once
    assert c.mail(body=WHOLE).startswith(b"250 ok ")
    c.quit()
    assert idle_worker(log, 2) == worker
    [(body, _, _)] = messages(tree)
    assert body.endswith(b"Subject: whole\n\nwhole\n")


def test_a_resumed_tls_session_resumes_no_auth_and_no_transaction(procs, tls_tree, world_tmp):
    settle(tls_tree / "control" / "servercert.pem")  # settled: one TLS context (its ticket keys) for both sessions
    port, log = one_worker(procs, tls_tree, world_tmp)
    worker = worker_of(log)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    def starttls(c, session=None):
        c.send(b"EHLO x")
        assert c.send(b"STARTTLS") == b"220 ready for tls\r\n"
        c.sock = ctx.wrap_socket(c.sock, session=session)
        c.file = c.sock.makefile("rb")

    c = Client(port)
    starttls(c)
    assert c.send(b"AUTH PLAIN " + b64(b"\0joe\0s3cret")) == b"235 ok, go ahead (#2.0.0)\r\n"  # the ticket came before
    assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
    assert c.send(b"RCPT TO:<far@away.example>") == b"250 ok\r\n"
    ticket = c.sock.session
    assert ticket is not None and ticket.has_ticket
    try:  # gone mid-transaction, authenticated; with a close_notify, so that the client may resume the session
        c.sock.unwrap()
    except (OSError, ValueError):
        pass  # the server ends the session at the client's close_notify without one of its own
    c.close()
    c = Client(port)
    starttls(c, ticket)
    assert c.sock.session_reused  # the same TLS session, resumed on the same worker
    ehlo = c.send(b"EHLO y")
    assert ehlo.endswith(b"250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n")  # not authenticated
    assert c.send(b"DATA") == b"503 MAIL first (#5.5.1)\r\n"
    assert c.send(b"MAIL FROM:<a@b.example>") == b"250 ok\r\n"
    assert c.send(b"RCPT TO:<far@away.example>") == \
        b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
    c.quit()
    assert idle_worker(log, 2) == worker
    assert messages(tls_tree) == []


def test_a_tls_session_ends_with_a_close_notify_after_the_last_reply(procs, tls_tree, world_tmp):
    # defect found by this audit: the connection was closed after 221 with no close_notify (RFC 8446 6.1: each party
    # MUST send one before closing its write side); OpenSSL's clients report `unexpected eof while reading`
    port, log = one_worker(procs, tls_tree, world_tmp)
    worker = worker_of(log)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # Python's default hides a missing close_notify
    control(tls_tree, timeoutsmtpd=2)
    for end, reply in ((b"QUIT", b"221 test.example\r\n"), (None, b"451 timeout (#4.4.2)\r\n")):
        c = Client(port)
        c.send(b"EHLO x")
        assert c.send(b"STARTTLS") == b"220 ready for tls\r\n"
        c.sock = ctx.wrap_socket(c.sock, suppress_ragged_eofs=False)  # an EOF without close_notify: SSLEOFError
        c.file = c.sock.makefile("rb")
        if end:
            c.sock.sendall(end + b"\r\n")
        assert c.reply() == reply
        assert c.file.read() == b""  # the close_notify, then the end: no SSLEOFError
        c.close()
    assert idle_worker(log, 2) == worker
