"""qmail-tcpserver beside ucspi-tcp's tcpserver: same rules, environment and log; our programs in-process."""

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, HealthCheck, strategies as st

from conftest import free_port, need, program, qenv, queued, wait_port
from pyqmail.lib.tcpserver import tcprules, tcpserve

RULES = ('127.0.0.1:allow,FOO="bar",BAZ="x y",QMQPCLIENT=""\n127.0.0.2:deny\n127.0.5.:allow,NET="five"\n'
         '127.0.6.:allow,TCPLOCALHOST="over.example",EMPTY=""\n=host.example:deny\n:allow,DEF="d=e"\n')


def tcprules_cdb(dirpath, text):
    """Compile a rules table with the real tcprules; return its path."""
    need("tcprules")
    cdb = Path(dirpath) / "rules.cdb"
    subprocess.run(["tcprules", str(cdb), str(Path(dirpath) / "rules.tmp")], input=text.encode(), check=True)
    return cdb


class Log:
    """A server's log file, read from where the test's own connections begin."""

    def __init__(self, path):
        self.path = path
        self.start = 0

    def read_text(self):
        """Return the log since the mark."""
        return self.path.read_bytes()[self.start:].decode()

    def mark(self):
        """Start reading from here."""
        self.start = self.path.stat().st_size


def serve(procs, logdir, server, argv, options=(), host="127.0.0.1", env=None):
    """Start tcpserver or qmail-tcpserver with -v -H -R -l 0 on a free port; return (port, process, Log)."""
    port = free_port(host)
    log = Log(Path(logdir) / ("%s-%d.log" % (os.path.basename(server), port)))
    with open(log.path, "ab") as f:
        p = procs.start([server, "-v", "-H", "-R", "-l", "0", *options, host, str(port), *argv],
                        stdout=subprocess.DEVNULL, stderr=f, env=env or qenv(logdir))
    wait_port(host, port)
    # after the end line, a warning and (reused workers' records read late) status lines may come first
    wait_log(log, r"^tcpserver: end \d+ [^\n]*\n(?:tcpserver: (?:warning|status)[^\n]*\n)*tcpserver: status: 0/")
    log.mark()  # wait_port's own connection is over: what follows is the test's
    return port, p, log


def talk(port, source="127.0.0.1", send=b"", host="127.0.0.1", timeout=20):
    """Connect from source, send, half-close; return everything the server sends."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(timeout)
        s.bind((source, 0))
        s.connect((host, port))
        s.sendall(send)
        s.shutdown(socket.SHUT_WR)
        with s.makefile("rb") as f:
            return f.read()


def wait_log(log, pattern, timeout=30):
    """Wait until the log has a line matching pattern; return the match."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.search(pattern, log.read_text(), re.M)
        if m:
            return m
        time.sleep(0.02)
    raise AssertionError("no %r in %s" % (pattern, log.read_text()))


def normal_env(text):
    """Return an env(1) listing as a sorted list without the ports, which differ between servers."""
    return sorted(line for line in text.decode().splitlines() if not line.startswith(("TCPLOCALPORT=", "TCPREMOTEPORT=")))


def normal_log(text, port):
    """Return -v log lines with pids and the client's port made uniform."""
    text = re.sub(r"\b(pid|ok|deny|end) \d+", r"\1 N", text)
    text = re.sub(r":\d+$", ":P", text, flags=re.M)
    return text.replace(":%d " % port, ":LPORT ").splitlines()


@pytest.mark.interop
def test_same_rules_give_the_same_verdicts_environment_and_log_as_tcpserver(procs, world_tmp):
    need("tcpserver")
    cdb = tcprules_cdb(world_tmp, RULES)
    env = {"PATH": "/usr/bin:/bin", "KEEP": "me", "TCPREMOTEHOST": "stale.example", "TCPREMOTEINFO": "stale"}
    theirs = serve(procs, world_tmp, "tcpserver", ["/usr/bin/env"], ["-x", str(cdb)], env=env)
    ours = serve(procs, world_tmp, program("qmail-tcpserver"), ["/usr/bin/env"], ["-x", str(cdb)], env=env)
    for n, source in enumerate(("127.0.0.1", "127.0.0.2", "127.0.5.9", "127.0.6.1", "127.9.9.9"), 1):
        a, b = talk(theirs[0], source), talk(ours[0], source)
        if source == "127.0.6.1":
            assert "TCPLOCALHOST=over.example" in normal_env(b)
        for log in (theirs[2], ours[2]):  # one connection at a time, so that both logs have one order
            deadline = time.time() + 30
            while log.read_text().count("tcpserver: end ") < n and time.time() < deadline:
                time.sleep(0.02)
        assert normal_env(a) == normal_env(b), source
        assert (a == b"") == (source == "127.0.0.2")
    assert "KEEP=me" in normal_env(b) and "DEF=d=e" in normal_env(b) and "TCPREMOTEHOST=stale.example" not in normal_env(b)
    for _, p, _ in (theirs, ours):
        os.kill(p.pid, signal.SIGTERM)
        p.wait(30)
    assert normal_log(theirs[2].read_text(), theirs[0]) == normal_log(ours[2].read_text(), ours[0])


def test_in_process_program_gets_the_rules_environment(procs, tree, world_tmp):
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    (tree / "control" / "qmqpclients").write_text("10.9.\n")  # loopback refused unless QMQPCLIENT is set
    subprocess.run([program("qmail-newqmqpclients")], env=qenv(tree), check=True)
    cdb = tcprules_cdb(world_tmp, RULES)
    port, _, log = serve(procs, tree, program("qmail-tcpserver"), [program("qmail-qmqpd")], ["-x", str(cdb)],
                         env=qenv(tree))
    assert "in forked children" in log.path.read_text()
    assert re.fullmatch(rb"\d+:Kok \d+ qp \d+,", talk(port, "127.0.0.1", b"18:3:hi\n,3:a@b,3:c@d,,"))
    assert b"is not authorized" in talk(port, "127.9.9.9", b"18:3:hi\n,3:a@b,3:c@d,,")
    assert talk(port, "127.0.0.2") == b""  # denied before reading: sending would earn a reset
    [(mess, todo)] = queued(tree).values()
    assert b"Received: from unknown (127.0.0.1)\n  by 0 with QMQP" in mess


def test_qmail_qmqpd_launcher_in_qmailhome_runs_in_process_and_the_child_is_no_new_interpreter(procs, tree):
    from pyqmail.lib.util import launcher
    link = tree / "bin" / "qmail-qmqpd"  # qmail-setup's launcher, recognised as ours
    assert launcher.runs(str(link), "pyqmail.commands.qmail_qmqpd")
    port, p, log = serve(procs, tree, program("qmail-tcpserver"), [str(link)], env=qenv(tree))
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        pid = int(wait_log(log, r"^tcpserver: ok (\d+) ").group(1))
        cmdline = Path("/proc/%d/cmdline" % pid).read_bytes()
        assert b"qmail-tcpserver" in cmdline and b"qmail-qmqpd" in cmdline.split(b"\0")[-2]
        s.sendall(b"18:3:hi\n,3:a@b,3:c@d,,")
        assert re.match(rb"\d+:Kok ", s.recv(100))


def test_a_reused_worker_sees_control_files_change(procs, tree):
    """qmail-qmqpd keeps its control files' values between connections in a worker only while control/ and
    the files stay as they were."""
    control = tree / "control"
    (control / "qmqpderrordelay").write_text("0\n")
    for path in (control / "qmqpderrordelay", control):
        os.utime(path, ns=(10**9, 10**9))  # long settled: the worker may keep what it read
    port, _, log = serve(procs, tree, program("qmail-tcpserver"), [program("qmail-qmqpd")], ["-c", "1"],
                         env=qenv(tree))
    time.sleep(1.1)  # control/'s ctime too is then over a second old
    request = b"18:3:hi\n,3:a@b,3:c@d,,"
    assert re.fullmatch(rb"\d+:Kok \d+ qp \d+,", talk(port, send=request))
    (control / "qmqpdmaxbytes").write_text("2\n")  # a new file
    assert b"too large" in talk(port, send=request)
    (control / "qmqpdmaxbytes").write_text("9\n")  # the same file written in place
    assert re.fullmatch(rb"\d+:Kok \d+ qp \d+,", talk(port, send=request))
    pids = set(re.findall(r"tcpserver: ok (\d+) ", log.read_text()))
    assert len(pids) == 1, pids  # one worker served all three


@pytest.mark.interop
def test_qmqp_source_200_messages_through_qmail_tcpserver_all_queued_intact(procs, tree):
    need("qmqp-source")
    (tree / "control" / "qmqpderrordelay").write_text("0\n")
    port, _, log = serve(procs, tree, program("qmail-tcpserver"), [program("qmail-qmqpd")], env=qenv(tree))
    length = 900
    result = subprocess.run(["qmqp-source", "-c", "-s", "5", "-m", "200", "-l", str(length), "-f", "qs@example.org",
                             "-t", "rcpt@example.net", "127.0.0.1:%d" % port], capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr
    messages = queued(tree)
    assert len(messages) == 200
    for mess, todo in messages.values():
        head = re.match(rb"Received: \(qmail (\d+) invoked [^)]*\); [^\n]+\nReceived: from unknown \(127\.0\.0\.1\)\n"
                        rb"  by 0 with QMQP; [^\n]+\n", mess)
        assert head, mess[:300]
        payload = mess[head.end():]
        assert len(payload) == length and payload.startswith(b"From: <qs@example.org>\n")
        body = payload.split(b"\n\n", 1)[1].splitlines()
        assert [len(x) for x in body[:-1]] == list(range(1, len(body)))
        assert re.fullmatch(rb"u\d+\0p%s\0Fqs@example\.org\0Trcpt@example\.net\0" % head.group(1), todo), todo
    assert "crashed" not in log.read_text() and "internal error" not in log.read_text()


def test_concurrency_limit_makes_the_next_client_wait(procs, world_tmp):
    port, _, log = serve(procs, world_tmp, program("qmail-tcpserver"), ["/bin/cat"], ["-c", "2"])
    first, second, third = (socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3))
    for s in (first, second, third):
        s.sendall(b"ping")
    assert first.recv(10) == b"ping" and second.recv(10) == b"ping"
    third.settimeout(0.7)
    with pytest.raises(socket.timeout):
        third.recv(10)
    assert "tcpserver: status: 2/2" in log.read_text() and "status: 3/2" not in log.read_text()
    first.close()
    third.settimeout(10)
    assert third.recv(10) == b"ping"
    for s in (second, third):
        s.close()


@pytest.mark.root
def test_uid_and_gid_switch_like_tcpserver(procs, world_tmp):
    if os.getuid() != 0:
        pytest.skip("needs root")
    need("tcpserver")
    options = ["-u", "65534", "-g", "65533"]
    theirs = serve(procs, world_tmp, "tcpserver", ["/usr/bin/id"], options)[0]
    ours = serve(procs, world_tmp, program("qmail-tcpserver"), ["/usr/bin/id"], options)[0]
    a, b = talk(theirs), talk(ours)
    assert a == b and b.startswith(b"uid=65534") and b"gid=65533" in b, (a, b)


def test_uid_switch_refused_to_a_plain_user_with_exit_111(world_tmp):
    if os.getuid() == 0:
        pytest.skip("root may switch")
    r = subprocess.run([program("qmail-tcpserver"), "-u", "1", "127.0.0.1", "0", "true"], capture_output=True, timeout=10)
    assert r.returncode == 111 and b"unable to set uid" in r.stderr


def test_other_programs_are_execd_with_their_argv_and_no_shell(procs, world_tmp):
    argv = ["/bin/sh", "-c", 'printf "%s|" "$0" "$@"; printf "%s" "$$" ', "zero", "a;b $(x)", "*"]
    port, _, log = serve(procs, world_tmp, program("qmail-tcpserver"), argv)
    reply = talk(port).decode()
    assert reply.startswith("zero|a;b $(x)|*|")
    assert int(reply.rsplit("|", 1)[1]) == int(wait_log(log, r"^tcpserver: ok (\d+) ").group(1))  # exec, no fork
    cat = serve(procs, world_tmp, program("qmail-tcpserver"), ["cat"], env=dict(qenv(world_tmp), PATH="/bin:/usr/bin"))
    assert talk(cat[0], send=b"hello\n") == b"hello\n"


def test_a_child_crash_and_a_missing_program_are_logged_plainly(procs, tree):
    port, _, log = serve(procs, tree, program("qmail-tcpserver"), [program("qmail-qmqpd")], env=qenv(tree))
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pid = int(wait_log(log, r"^tcpserver: ok (\d+) ").group(1))
        os.kill(pid, signal.SIGKILL)
        wait_log(log, r"^tcpserver: warning: child %d crashed: killed by signal 9$" % pid)
        wait_log(log, r"^tcpserver: end %d status 9$" % pid)
    gone, _, gone_log = serve(procs, tree, program("qmail-tcpserver"), ["/nonexistent/program"])
    assert talk(gone) == b""
    wait_log(gone_log,
             r"^tcpserver: warning: dropping connection, unable to run /nonexistent/program: file does not exist$")
    assert "Traceback" not in log.read_text()


def test_unreadable_rules_drop_the_connection_unless_x_allows_a_missing_file(procs, world_tmp):
    missing = str(world_tmp / "none.cdb")
    port, _, log = serve(procs, world_tmp, program("qmail-tcpserver"), ["/bin/echo", "hi"], ["-x", missing])
    assert talk(port) == b""
    wait_log(log, r"^tcpserver: warning: dropping connection, unable to read %s: file does not exist$" % missing)
    assert talk(serve(procs, world_tmp, program("qmail-tcpserver"), ["/bin/echo", "hi"], ["-X", "-x", missing])[0]) == b"hi\n"
    (world_tmp / "bad.cdb").write_bytes(b"garbage")
    port, _, log = serve(procs, world_tmp, program("qmail-tcpserver"), ["/bin/echo", "hi"], ["-x", str(world_tmp / "bad.cdb")])
    assert talk(port) == b""
    wait_log(log, r"^tcpserver: warning: dropping connection, unable to read .*bad\.cdb: format error$")


def test_term_stops_the_listener_and_children_finish(procs, world_tmp):
    port, p, log = serve(procs, world_tmp, program("qmail-tcpserver"), ["/bin/sh", "-c", "sleep 1; echo done"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        wait_log(log, r"^tcpserver: ok ")
        os.kill(p.pid, signal.SIGTERM)
        assert p.wait(30) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        assert s.recv(10) == b"done\n"


def test_banner_port_printing_and_ipv6(procs, world_tmp):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        free_port("::1")
    except OSError:
        pytest.skip("no ::1")
    port, _, _ = serve(procs, world_tmp, program("qmail-tcpserver"), ["/usr/bin/env"], ["-B", "220 hi\r\n"], host="::1")
    reply = talk(port, source="::1", host="::1")
    assert reply.startswith(b"220 hi\r\n")
    assert {"PROTO=TCP6", "TCPREMOTEIP=::1", "TCPLOCALIP=::1"} <= set(reply[8:].decode().splitlines())
    p = subprocess.Popen([program("qmail-tcpserver"), "-1", "127.0.0.1", "0", "true"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    procs.procs.append(p)
    assert int(p.stdout.readline()) > 0


@pytest.mark.parametrize("argv,code,text", [
    (["127.0.0.1", "0"], 100, b"usage: tcpserver"),
    (["-Z", "127.0.0.1", "0", "true"], 100, b"usage: tcpserver"),
    (["-c", "x", "127.0.0.1", "0", "true"], 100, b"usage: tcpserver"),
    (["127.0.0.1", "no-such-service", "true"], 111, b"tcpserver: fatal: unable to figure out port number for no-such-service"),
    (["192.0.2.300", "0", "true"], 111, b"tcpserver: fatal: no IP address for 192.0.2.300"),
])
def test_bad_command_lines_exit_like_tcpserver(argv, code, text):
    r = subprocess.run([program("qmail-tcpserver"), *argv], capture_output=True, timeout=10,
                       env=dict(os.environ, LOCALDOMAIN="invalid"))
    assert r.returncode == code and text in r.stderr and b"Traceback" not in r.stderr


# the rules parser, as properties

names = st.binary(min_size=1, max_size=20).filter(lambda b: b"=" not in b and b"\0" not in b)
values = st.binary(max_size=30).filter(lambda b: b"\0" not in b)


def encode_value(deny, env):
    """Return the rules.cdb value tcprules writes for a rule (the inverse of tcprules.parse_value)."""
    out = b"D\0" if deny else b""
    return out + b"".join(b"+%s=%s\0" % (name, value) for name, value in env)


@given(st.booleans(), st.lists(st.tuples(names, values), max_size=5))
def test_encoded_rules_values_parse_back(deny, env):
    assert tcprules.parse_value(encode_value(deny, env)) == (deny, env)


@given(st.binary(max_size=200))
def test_any_value_parses_without_error_and_only_complete_entries_count(data):
    deny, env = tcprules.parse_value(data)
    assert tcprules.parse_value(data + b"+X=y") == (deny, env)  # no NUL: ignored, as tcpserver does
    assert all(tcprules.settable(n) or n == b"" for n, _ in env)


addresses = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ("%d.%d.%d.%d" % t).encode())


@given(addresses, st.sets(st.integers(0, 4)))
def test_the_most_specific_key_wins(ip, present):
    prefixes = [ip] + [b".".join(ip.split(b".")[:n]) + b"." for n in (3, 2, 1)] + [b""]
    table = {prefixes[i]: b"+K=%d\0" % i for i in present}
    rule = tcprules.lookup(table.get, ip)
    assert (rule is None) == (not present)
    if present:
        assert rule.key == prefixes[min(present)] and rule.env == [(b"K", b"%d" % min(present))]
    assert tcprules.keys(ip) == prefixes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["127.0.0.1", "127.0.0.", "127.", "10.1.2.3", ""]), st.booleans(),
                          st.lists(st.tuples(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True),
                                             st.from_regex(r"[a-z0-9 .=:@-]{0,12}", fullmatch=True)), max_size=3)),
                min_size=1, max_size=4, unique_by=lambda r: r[0]))
def test_values_written_by_the_real_tcprules_parse_as_written(world_tmp, rules):
    need("tcprules")
    import cdbx
    text = "".join("%s:%s%s\n" % (key, "deny" if deny else "allow", "".join(',%s="%s"' % kv for kv in env))
                   for key, deny, env in rules)
    table = cdbx.CDB(str(tcprules_cdb(world_tmp, text)))  # not `with`: cdbx's context manager is broken
    try:
        for key, deny, env in rules:
            got = tcprules.parse_value(table.get(key.encode()))
            assert got == (deny, [(n.encode(), v.encode()) for n, v in env]), (text, key)
    finally:
        table.close()


def test_options_as_tcpserver_reads_them():
    o = tcpserve.parse(["-vDoc5", "-x", "r.cdb", "-X", "-l", "me", "0", "628", "prog", "-a"], {})
    assert (o.verbosity, o.nodelay, o.kill_ipoptions, o.limit, o.rules, o.rules_optional, o.localname) == \
        (2, True, False, 5, "r.cdb", True, "me")
    assert (o.host, o.port, o.argv) == ("0", "628", ["prog", "-a"])
    assert tcpserve.parse(["-U", "h", "1", "p"], {"UID": "7", "GID": "8"}).uid == 7
    assert tcpserve.end_lines(5, 0) == ["tcpserver: end 5 status 0"]
    assert tcpserve.end_lines(5, 25600) == ["tcpserver: end 5 status 25600"]
