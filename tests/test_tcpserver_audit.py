"""An adversarial audit of qmail-tcpserver and tcp-env: a tired administrator's command lines and rules files,
hostile clients, a small descriptor limit; each against the installed programs on loopback."""

import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import time

import pytest
from hypothesis import given, strategies as st

from conftest import program, qenv, wait_until
from test_tcppool import qmqp, request
from pyqmail.lib.tcpserver import tcpserve


def start(procs, env, argv, options=(), host="127.0.0.1", nofile=None, log=None, port=0, close=None):
    """Start qmail-tcpserver -v -1 on port (0: it prints the port it got); return (process, port, log path)."""
    log = log or os.path.join(env["QMAILHOME"], "tcpserver-%d.log" % time.time_ns())

    def prepare():
        """In the child: the descriptor limit, and a descriptor closed, as asked."""
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        if close is not None:
            os.close(close)
    with open(log, "ab") as f:
        p = procs.start([program("qmail-tcpserver"), "-1", "-v", "-H", "-R", "-l", "0", *options, host, str(port),
                         *argv], stdout=subprocess.PIPE, stderr=f, env=env, preexec_fn=prepare)
    assert select.select([p.stdout], [], [], 30)[0], "qmail-tcpserver printed no port"
    line = p.stdout.readline()
    assert line.strip().isdigit(), "qmail-tcpserver did not start: %s" % text(log)
    return p, int(line), log


def text(log):
    """Return the log so far."""
    with open(log, "rb") as f:
        return f.read().decode("utf-8", "replace")


def cpu_ticks(pid):
    """Return the user+system clock ticks a process has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def children(pid):
    """Return {pid: state} of a process's children (state Z: a zombie)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out[int(entry)] = fields[0]
    return out


def read_all(port, host="127.0.0.1", timeout=10):
    """Connect, read until the server closes; return what it sent."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


# --- the administrator's command line ---

@pytest.mark.parametrize("argv", [
    ["-b", "2147483648"], ["-b", "1" + "0" * 30], ["-u", "4294967295"], ["-u", "1" + "0" * 30],
    ["-g", "1" + "0" * 30],
])
def test_a_number_beyond_what_the_system_takes_is_a_usage_error_not_an_internal_one(argv):
    r = subprocess.run([program("qmail-tcpserver"), *argv, "127.0.0.1", "0", "true"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 100, r.stderr
    assert b"internal error" not in r.stderr and b"usage: tcpserver" in r.stderr
    assert re.search(rb"option %s wants a number up to \d+" % argv[0].encode(), r.stderr), r.stderr


@pytest.mark.parametrize("port", ["65536", "99999", "4294967297"])
def test_a_port_beyond_65535_is_refused_never_wrapped_to_another(port):
    r = subprocess.run([program("qmail-tcpserver"), "-1", "127.0.0.1", port, "true"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 111 and r.stdout == b""  # 99999 would have listened on 34463
    assert r.stderr == b"tcpserver: fatal: unable to figure out port number for %s\n" % port.encode()


@given(st.sampled_from("cbugt"), st.text("0123456789", min_size=1, max_size=40))
def test_numeric_options_parse_within_their_bounds_or_are_usage_errors(flag, digits):
    n, bound = int(digits), tcpserve.BOUNDS.get(flag)
    wrong = (bound is not None and n > bound) or (flag == "c" and n == 0)
    try:
        o = tcpserve.parse(["-" + flag, digits, "127.0.0.1", "25", "true"], {})
    except tcpserve.UsageError:
        assert wrong
        return
    assert not wrong and getattr(o, tcpserve.NUMERIC[flag]) == n


# --- the rules file ---

@pytest.mark.parametrize("kind", ["fifo", "directory", "empty", "truncated"])
@pytest.mark.parametrize("reused", [False, True])
def test_rules_that_are_a_fifo_a_directory_or_no_whole_cdb_drop_the_connection_at_once(procs, tree, kind, reused):
    rules = tree / "rules.cdb"
    if kind in ("empty", "truncated"):
        from test_qmail_tcpserver import tcprules_cdb
        whole = tcprules_cdb(tree, "127.0.0.1:allow\n:deny\n").read_bytes()
        rules.write_bytes(whole[:2060] if kind == "truncated" else b"")  # cut inside the records
    os.mkfifo(rules) if kind == "fifo" else rules.mkdir() if kind == "directory" else None
    argv = [program("qmail-qmqpd")] if reused else ["/bin/echo", "served"]
    p, port, log = start(procs, qenv(tree), argv, ["-X", "-x", str(rules)])
    for _ in range(3):  # more than one: a child stuck on the FIFO would hold its slot for ever
        assert read_all(port, timeout=10) == b""
    wait_until(lambda: text(log).count("tcpserver: warning: dropping connection, unable to read %s: " % rules) == 3,
             what="three dropped connections")
    assert "Traceback" not in text(log)
    os.rmdir(rules) if kind == "directory" else os.unlink(rules)
    if reused:
        assert qmqp(port).startswith(b"Kok ")  # -X: now the file is missing, and served
    else:
        assert read_all(port) == b"served\n"


# --- resources ---

@pytest.mark.parametrize("nofile", [10, 20])
def test_a_small_descriptor_limit_serves_with_a_child_per_connection_and_never_spins(procs, tree, nofile):
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    p, port, log = start(procs, qenv(tree), [program("qmail-qmqpd")], ["-c", "3"], nofile=nofile)
    for i in range(5):
        reply = qmqp(port)
        # 10 descriptors are too few for qmail-queue: a temporary failure, never silence
        assert reply.startswith(b"Kok " if nofile == 20 else b"Z"), (reply, text(log))
    assert "tcpserver: warning: descriptor limit %d too low for reused workers: one child per connection" % nofile \
        in text(log)
    before = cpu_ticks(p.pid)
    time.sleep(1)
    assert cpu_ticks(p.pid) - before <= 10  # was: workers forked, died at start and forked again, all silently
    assert not [pid for pid, state in children(p.pid).items() if state == "Z"]


def test_too_few_descriptors_for_a_pipe_give_one_clear_line(tree):
    # before: `internal error: OSError: [Errno 24] Too many open files`
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (6, 6))
    p = subprocess.run([program("qmail-tcpserver"), "-H", "-R", "-l", "0", "127.0.0.1", "0", program("qmail-qmqpd")],
                       env=qenv(tree), capture_output=True, preexec_fn=limit, timeout=60)
    assert (p.returncode, p.stderr) == (111, b"tcpserver: fatal: unable to create pipe: process cannot open more files\n")


def test_too_few_descriptors_for_the_pool_serve_with_a_child_per_connection(procs, tree):
    # before: the pool's pipe failed with EMFILE at start (an internal error, exit 111) instead of this fallback
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    p, port, log = start(procs, qenv(tree), [program("qmail-qmqpd")], nofile=7)
    # the listener's directory descriptor is closed without workers: the connection is taken (before: unable to
    # accept, ten times a second for ever); qmail-qmqpd then has too few for qmail-queue's pipes and exits 111
    # without a reply, as qmail's does (its resources()), saying why
    assert qmqp(port) == b""
    wait_until(lambda: "unable to start qmail-queue for " in text(log), what="qmail-qmqpd's line")
    assert "descriptor limit 7 too low for reused workers: one child per connection" in text(log)
    assert "internal error" not in text(log) and "unable to accept" not in text(log)


# --- hostile clients against reused workers ---

def test_workers_keep_the_limit_under_held_and_reset_connections_and_leak_nothing(procs, tree):
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    p, port, log = start(procs, qenv(tree), [program("qmail-qmqpd")], ["-c", "2"])
    assert qmqp(port).startswith(b"Kok ")
    wait_until(lambda: "tcpserver: end " in text(log), what="the first end line")
    fds = len(os.listdir("/proc/%d/fd" % p.pid))
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]  # never send
    wait_until(lambda: text(log).count("tcpserver: ok ") == 3, what="both held connections taken")
    third = socket.create_connection(("127.0.0.1", port), timeout=0.7)
    third.sendall(request(b"Subject: third\n\nbody\n"))  # a whole request: it waits for a worker
    with pytest.raises(socket.timeout):
        third.recv(100)
    assert len(children(p.pid)) <= 2 and "status: 3/2" not in text(log)
    held[0].close()
    third.settimeout(20)
    assert b":Kok " in third.recv(100)  # served once a worker is free
    third.close()
    held[1].close()
    for i in range(200):  # connect and reset at once, or in the middle of a request
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.connect(("127.0.0.1", port))
        if i % 4 == 0:
            s.sendall(b"100:Subject")
        s.close()
    for _ in range(500):
        os.kill(p.pid, signal.SIGCHLD)  # a storm of false wake-ups
    os.kill(max(children(p.pid)), signal.SIGKILL)  # an idle (or just busy) worker killed by an administrator
    for i in range(200):
        assert qmqp(port).startswith(b"Kok ")
    assert p.poll() is None and len(os.listdir("/proc/%d/fd" % p.pid)) == fds
    wait_until(lambda: all(state != "Z" for state in children(p.pid).values()), what="no zombie")
    assert len(children(p.pid)) <= 2
    assert "Traceback" not in text(log) and "internal error" not in text(log)


# --- rules and addresses ---

def have_ipv6():
    """True if ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_an_ipv4_client_of_a_dual_stack_listener_is_judged_and_shown_as_ipv4(procs, tree):
    if not have_ipv6():
        pytest.skip("no ::1")
    from test_qmail_tcpserver import tcprules_cdb
    rules = tcprules_cdb(tree, '127.0.0.2:deny\n127.0.0.1:allow,WHO="v4"\n:deny\n')
    p, port, log = start(procs, qenv(tree), ["/usr/bin/env"], ["-x", str(rules)], host="::")
    env = {}
    with socket.socket() as s:  # from 127.0.0.1 to the "::" listener: ::ffff:127.0.0.1 on the server's side
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        local = s.getsockname()
    env = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
    assert (env["WHO"], env["PROTO"], env["TCPREMOTEIP"], env["TCPLOCALIP"], env["TCPREMOTEPORT"]) == \
        ("v4", "TCP", "127.0.0.1", "127.0.0.1", str(local[1]))
    with socket.socket() as s:
        s.settimeout(10)
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", port))
        assert s.recv(100) == b""
    assert read_all(port, host="::1") == b""  # ::1 falls to the `:deny` line
    wait_until(lambda: re.search(r"^tcpserver: deny \d+ 0:127\.0\.0\.1:%d :127\.0\.0\.2::\d+$" % port, text(log), re.M),
             what="the IPv4 deny line")
    wait_until(lambda: re.search(r"^tcpserver: deny \d+ 0:::1:%d :::1::\d+$" % port, text(log), re.M),
             what="the IPv6 deny line")


def test_rules_renamed_into_place_apply_to_the_next_connection_of_the_same_worker(procs, tree):
    from test_qmail_tcpserver import tcprules_cdb
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    rules = tcprules_cdb(tree, "127.0.0.1:allow\n:deny\n")
    p, port, log = start(procs, qenv(tree), [program("qmail-qmqpd")], ["-c", "1", "-x", str(rules)])
    assert qmqp(port).startswith(b"Kok ")
    tcprules_cdb(tree, "127.0.0.1:deny\n:allow\n")  # tcprules writes rules.tmp and renames it over rules.cdb
    try:
        assert qmqp(port) == b""
    except ConnectionResetError:
        pass  # closed with the request unread: a reset
    wait_until(lambda: "tcpserver: deny " in text(log), what="the deny line")
    tcprules_cdb(tree, ":allow\n")
    assert qmqp(port).startswith(b"Kok ")
    pids = re.findall(r"^tcpserver: (?:ok|deny) (\d+) ", text(log), re.M)
    assert len(pids) == 3 and len(set(pids)) == 1, text(log)  # one worker saw all three files


# --- tcp-env ---

def tcp_env_on(sock):
    """Run tcp-env -R env with sock as fd 0; return (exit code, environment dict, stderr)."""
    r = subprocess.run([program("tcp-env"), "-R", "env"], stdin=sock, capture_output=True, timeout=60,
                       env={"PATH": os.environ["PATH"]})
    env = dict(line.split("=", 1) for line in r.stdout.decode().splitlines() if "=" in line)
    return r.returncode, env, r.stderr


def test_tcp_env_on_ipv6_and_ipv4_mapped_connections_and_on_sockets_that_are_no_tcp_connection():
    if not have_ipv6():
        pytest.skip("no ::1")
    for listen, connect in (("::1", "::1"), ("::", "127.0.0.1")):
        with socket.socket(socket.AF_INET6) as lst:
            lst.bind((listen, 0))
            lst.listen(1)
            with socket.create_connection((connect, lst.getsockname()[1]), timeout=10) as cli:
                srv, _ = lst.accept()
                with srv:
                    code, env, err = tcp_env_on(srv)
                assert (code, err) == (0, b"")
                assert (env["PROTO"], env["TCPREMOTEIP"], env["TCPLOCALIP"], env["TCPREMOTEPORT"],
                        env["TCPLOCALPORT"]) == ("TCP", connect, connect, str(cli.getsockname()[1]),
                                                 str(lst.getsockname()[1]))
    a, b = socket.socketpair()
    with socket.socket() as lst, a, b:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        for sock in (a, lst):  # a Unix socket, a listening socket: silently 111, as qmail's
            code, env, err = tcp_env_on(sock)
            assert (code, err) == (111, b"") and "PROTO" not in env


@pytest.mark.root
def test_workers_start_as_the_u_user_in_a_working_directory_it_cannot_read(procs, tree, world_tmp):
    if os.getuid() != 0:
        pytest.skip("needs root to switch to nobody")
    private = world_tmp / "private"
    private.mkdir(mode=0o700)  # root's, as /root: the listener starts here, then becomes nobody
    env = qenv(tree)
    p = procs.start([program("qmail-tcpserver"), "-1", "-v", "-u", "65534", "-g", "65534", "127.0.0.1", "0",
                     program("qmail-qmqpd")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=private)
    assert select.select([p.stdout], [], [], 30)[0]
    port = int(p.stdout.readline())
    reply = qmqp(port)  # was: no reply ever; each worker died opening "." and the listener forked the next at once
    assert reply[:1] in (b"K", b"Z"), reply  # nobody may not be able to queue here: a reply, never silence
    before = cpu_ticks(p.pid)
    time.sleep(1)
    assert cpu_ticks(p.pid) - before <= 10


@pytest.mark.parametrize("closed", [None, 2])
def test_after_term_a_busy_worker_frees_the_port_for_the_restarted_listener_and_finishes(procs, tree, closed):
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    # closed 2: started with fd 2 closed (2>&-), the listening socket was fd 2, kept by every worker as its stderr
    p, port, log = start(procs, qenv(tree), [program("qmail-qmqpd")], ["-c", "3"], close=closed)
    held = socket.create_connection(("127.0.0.1", port), timeout=20)  # a session in progress
    req = request(b"Subject: held\n\nbody\n")
    held.sendall(req[:1])
    wait_until(lambda: any(serving(pid) for pid in children(p.pid)), what="a worker serving it")
    p.send_signal(signal.SIGTERM)  # svc -t: the supervisor starts a new listener at once
    assert p.wait(10) == 0
    # was: the busy worker kept the listening socket, and the new listener failed with `unable to bind: address
    # already in use` for as long as that session lasted (qmail-qmqpd's: up to an hour)
    again, port2, log2 = start(procs, qenv(tree), [program("qmail-qmqpd")], ["-c", "3"], port=port,
                               log=str(tree / "again.log"))
    assert port2 == port and qmqp(port).startswith(b"Kok ")
    held.sendall(req[1:])  # the old worker still finishes its session
    assert b":Kok " in rest(held)
    held.close()


def serving(pid):
    """True if a worker's fd 0 is a connection (it is /dev/null between connections)."""
    try:
        return os.readlink("/proc/%d/fd/0" % pid).startswith("socket:")
    except OSError:
        return False


def rest(sock):
    """Read a socket until the peer closes it."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


@pytest.mark.root
def test_a_worker_that_cannot_start_says_why_and_is_not_forked_again_in_a_tight_loop(procs, tree, world_tmp):
    if os.getuid() != 0:
        pytest.skip("needs root to start the listener as nobody inside root's private directory")
    private = world_tmp / "private"
    private.mkdir(mode=0o700)  # the listener itself (not only -u) cannot open its working directory
    log = world_tmp / "log"
    with open(log, "ab") as f:
        p = procs.start([program("qmail-tcpserver"), "-1", "127.0.0.1", "0", program("qmail-qmqpd")],
                        stdout=subprocess.PIPE, stderr=f, env=qenv(tree), cwd=private, user=65534, group=65534)
    assert select.select([p.stdout], [], [], 30)[0]
    port = int(p.stdout.readline())
    waiting = socket.create_connection(("127.0.0.1", port), timeout=10)  # a connection waits: workers are forked
    wait_until(lambda: "tcpserver: warning: unable to start a worker: PermissionError: " in text(log),
             what="the worker's own reason")  # was: nothing at all
    before = cpu_ticks(p.pid)
    time.sleep(2)
    assert cpu_ticks(p.pid) - before <= 20  # was: each worker forked at once after the last one died
    waiting.close()


SHOW_OPTIONS = ("import socket, sys; s = socket.socket(fileno=0); "
                "sys.stdout.buffer.write(s.getsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, 40).hex().encode() + b'.')")


@pytest.mark.parametrize("host", ["127.0.0.1", "::"])
def test_ip_options_of_an_ipv4_client_are_killed_on_a_dual_stack_listener_too(procs, tree, host):
    if host == "::" and not have_ipv6():
        pytest.skip("no IPv6")
    import sys
    record_route = b"\x07\x07\x04" + b"\0" * 5  # the client asks every hop to record itself
    for options, kept in ((["-o"], True), ([], False)):  # -O is the default, as in tcpserver
        p, port, log = start(procs, qenv(tree), [sys.executable, "-c", SHOW_OPTIONS], options, host=host)
        with socket.socket() as s:
            s.settimeout(10)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, record_route)
            s.connect(("127.0.0.1", port))
            seen = rest(s)
        assert seen.endswith(b".") and (seen != b".") == kept, (options, seen)  # was: kept on "::" without -o
        procs.stop(p)


def test_a_worker_out_of_descriptors_logs_and_waits_then_recovers(procs, tree):
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    p, port, log = start(procs, qenv(tree), [program("qmail-qmqpd")], ["-c", "1"])
    assert qmqp(port).startswith(b"Kok ")
    worker = int(wait_until(lambda: re.search(r"^tcpserver: end (\d+) ", text(log), re.M), what="an end").group(1))
    limits = resource.prlimit(worker, resource.RLIMIT_NOFILE)
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (3, limits[1]))  # fds 0-2 open: accept(2) gets EMFILE
    waiting = socket.create_connection(("127.0.0.1", port), timeout=30)
    wait_until(lambda: "tcpserver: warning: unable to accept: " in text(log), what="the worker's warning")
    before = cpu_ticks(worker)
    time.sleep(1)
    assert cpu_ticks(worker) - before <= 20  # was: a silent accept loop at 100 % CPU
    resource.prlimit(worker, resource.RLIMIT_NOFILE, limits)  # descriptors again: the waiting client is served
    waiting.sendall(request(b"Subject: waited\n\nbody\n"))
    assert b":Kok " in rest(waiting)
    waiting.close()
