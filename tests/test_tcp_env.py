"""tcp-env: the real program given a real TCP connection as fd 0, as inetd does; an ident server on
127.0.0.1:113 (a thread of the test, as root) for TCPREMOTEINFO; xinetd when installed."""

import os
import socket
import subprocess
import threading
import time

import pytest
from hypothesis import given, strategies as st

from conftest import free_port, need, program, wait_port
from pyqmail.lib.tcpserver.remoteinfo import INFO_MAX, parse_reply

SHOW = ["sh", "-c", "env; head -c 5"]  # the environment, then 5 bytes read from the connection


def env_of(text):
    return dict(line.split("=", 1) for line in text.decode().splitlines() if "=" in line)


def connection():
    """Return (listener, client, server end) of a fresh loopback connection."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    return lst, cli, srv


def tcp_env(*args, extra=None, stdin=None, send=b"hello"):
    """Run tcp-env on a new connection; return (exit code, stdout env dict, stdout, stderr, client, listener)."""
    lst, cli, srv = connection()
    env = {"PATH": os.environ["PATH"], "TCPREMOTEINFO": "stale", "TCPREMOTEHOST": "stale"}
    env.update(extra or {})
    cli.sendall(send)
    try:
        p = subprocess.run([program("tcp-env"), *args], stdin=srv if stdin is None else stdin, env=env,
                           capture_output=True, timeout=60)
    finally:
        srv.close()
    return p, env_of(p.stdout), cli, lst


def expected_name(ip):
    try:
        return socket.gethostbyaddr(ip)[0].lower()
    except OSError:
        return None


def test_sets_the_tcp_environment_from_the_socket():
    p, env, cli, lst = tcp_env("-R", *SHOW)
    try:
        assert (p.returncode, p.stderr) == (0, b"")
        assert env["PROTO"] == "TCP"
        assert env["TCPLOCALIP"] == "127.0.0.1" and env["TCPLOCALPORT"] == str(lst.getsockname()[1])
        assert env["TCPREMOTEIP"] == "127.0.0.1" and env["TCPREMOTEPORT"] == str(cli.getsockname()[1])
        assert env.get("TCPREMOTEHOST") == expected_name("127.0.0.1")
        assert env.get("TCPLOCALHOST") == expected_name("127.0.0.1")
        assert "TCPREMOTEINFO" not in env
        assert p.stdout.endswith(b"hello")  # fd 0 is still the connection
    finally:
        cli.close()
        lst.close()


def test_proto_tcp_already_set_changes_nothing():
    r, w = os.pipe()
    os.close(w)
    try:
        p, env, cli, lst = tcp_env("-R", *SHOW, extra={"PROTO": "TCP", "TCPREMOTEIP": "192.0.2.1"}, stdin=r)
    finally:
        os.close(r)
    cli.close()
    lst.close()
    assert p.returncode == 0 and env["TCPREMOTEIP"] == "192.0.2.1" and env["TCPREMOTEINFO"] == "stale"


def test_failures_exit_111():
    r, w = os.pipe()
    os.close(w)
    try:
        p = subprocess.run([program("tcp-env"), "-R", "true"], stdin=r, capture_output=True, timeout=30,
                           env={"PATH": os.environ["PATH"]})
    finally:
        os.close(r)
    assert p.returncode == 111  # fd 0 is no socket
    for args in ([], ["-R"], ["-R", "/nonexistent/program"]):
        p, _, cli, lst = tcp_env(*args)
        cli.close()
        lst.close()
        assert (p.returncode, p.stdout) == (111, b"")
    p, _, cli, lst = tcp_env("-x", "true")
    cli.close()
    lst.close()
    assert (p.returncode, p.stderr) == (111, b"tcp-env: illegal option -- x\n")


@pytest.fixture
def identd():
    """A one-thread ident server on 127.0.0.1:113; set .reply (None: never answer) before connecting."""
    if os.geteuid() != 0:
        pytest.skip("port 113 needs root")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", 113))
    except OSError as e:
        pytest.skip("port 113 not free: %s" % e)
    s.listen(5)

    class Server:
        reply = b""
        queries = []
        held = []

    def serve():
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            data = b""
            while b"\n" not in data:
                more = c.recv(100)
                if not more:
                    break
                data += more
            Server.queries.append(data)
            if Server.reply is None:
                Server.held.append(c)  # never answers
                continue
            c.sendall(Server.reply % tuple(int(x) for x in data.split(b",")))
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield Server
    s.shutdown(socket.SHUT_RDWR)
    s.close()
    t.join(5)
    for c in Server.held:
        c.close()


def test_remoteinfo_from_the_ident_server(identd):
    identd.reply = b"%d , %d : USERID : UNIX : joe \r\n"
    p, env, cli, lst = tcp_env(*SHOW)
    try:
        assert p.returncode == 0 and env["TCPREMOTEINFO"] == "joe"
        assert identd.queries == [b"%d , %d\r\n" % (cli.getsockname()[1], lst.getsockname()[1])]
    finally:
        cli.close()
        lst.close()
    identd.reply = b"%d , %d : ERROR : NO-USER\r\n"
    p, env, cli, lst = tcp_env("-R", "-r", *SHOW)
    cli.close()
    lst.close()
    assert p.returncode == 0 and env["TCPREMOTEINFO"] == ""  # qmail's: the text after a third colon, none here


def test_ident_timeout(identd):
    identd.reply = None
    start = time.monotonic()
    p, env, cli, lst = tcp_env("-t1", *SHOW)
    cli.close()
    lst.close()
    assert p.returncode == 0 and "TCPREMOTEINFO" not in env and env["PROTO"] == "TCP"
    assert time.monotonic() - start < 15
    assert len(identd.queries) == 1


def test_under_xinetd(tmp_path, procs):
    need("xinetd")
    port = free_port()
    show = tmp_path / "show"  # xinetd splits server_args at blanks, without quoting: a script instead
    show.write_text("#!/bin/sh\nenv\nexec head -c 5\n")
    show.chmod(0o755)
    conf = tmp_path / "xinetd.conf"
    conf.write_text("""defaults
{
}
service pyqmail-test
{
    type = UNLISTED
    socket_type = stream
    protocol = tcp
    wait = no
    user = root
    bind = 127.0.0.1
    port = %d
    server = %s
    server_args = -R %s
    log_type = FILE %s
}
""" % (port, program("tcp-env"), show, tmp_path / "xinetd.log"))
    procs.start(["xinetd", "-dontfork", "-f", str(conf), "-pidfile", str(tmp_path / "pid")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port("127.0.0.1", port)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        c.sendall(b"hello")
        got = b""
        while True:
            data = c.recv(65536)
            if not data:
                break
            got += data
        env = env_of(got)
        assert env["PROTO"] == "TCP" and env["TCPREMOTEIP"] == "127.0.0.1"
        assert env["TCPREMOTEPORT"] == str(c.getsockname()[1]) and env["TCPLOCALPORT"] == str(port)
        assert got.endswith(b"hello")


@given(st.binary(max_size=3000))
def test_parse_reply_is_bounded(data):
    info = parse_reply(data)
    if info is not None:
        assert len(info) <= INFO_MAX and not any(c in info for c in b" \t\r\n")
    if b"\n" not in data and len(data.replace(b" ", b"")) < INFO_MAX:
        assert info is None


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=50))
def test_parse_reply_takes_the_text_after_the_third_colon(user):
    assert parse_reply(b"1 , 2 : USERID : UNIX :" + user.encode() + b"\r\n") == user.encode()
