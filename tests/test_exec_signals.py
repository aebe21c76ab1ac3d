"""The programs our network, injection, spawn and POP3 programs exec start with SIGXFSZ at its default (Python's
start-up ignores it, and an ignored signal stays ignored through exec): tcp-env's, qmail-tcpserver's,
qmail-popup's and qmail-checkpassword's programs (SIGPIPE too, as under qmail's C programs), $QMAILQUEUE as
qmail-inject runs it and $QMAILREMOTE as qmail-rspawn runs it."""

import os
import signal
import socket
import subprocess

from conftest import free_port, program, qenv, wait_port
from test_pop3 import pop  # noqa: F401  (a fixture)

STATUS = ["cat", "/proc/self/status"]  # cat does not change what it inherited


def ignored(status):
    """Return the set of signal numbers /proc/<pid>/status text says are ignored (SigIgn)."""
    mask = int(status.split("SigIgn:")[1].split()[0], 16)
    return {n for n in range(1, 65) if mask & (1 << (n - 1))}


def test_tcp_env_command_gets_default_sigpipe_and_sigxfsz():
    """tcp-env execs its command with neither SIGPIPE nor SIGXFSZ ignored."""
    env = {"PATH": os.environ["PATH"], "PROTO": "TCP"}  # already set: tcp-env asks nothing of fd 0
    p = subprocess.run([program("tcp-env"), *STATUS], stdin=subprocess.DEVNULL, env=env, capture_output=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    assert not ignored(p.stdout.decode()) & {signal.SIGPIPE, signal.SIGXFSZ}


def test_qmail_tcpserver_command_gets_default_sigpipe_and_sigxfsz(procs):
    """qmail-tcpserver execs a program it does not pre-load with neither ignored."""
    port = free_port()
    server = procs.start([program("qmail-tcpserver"), "-H", "-R", "-l", "0", "127.0.0.1", str(port), *STATUS],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port("127.0.0.1", port)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert server.poll() is None
    assert not ignored(got.decode()) & {signal.SIGPIPE, signal.SIGXFSZ}


def test_qmailqueue_run_by_qmail_inject_gets_default_sigxfsz(tree, world_tmp):
    """qmail-inject execs $QMAILQUEUE with SIGXFSZ at its default (SIGPIPE stays as qmail-smtpd leaves it)."""
    out = world_tmp / "status"
    qq = world_tmp / "qq"
    qq.write_text("#!/bin/sh\ncat /proc/self/status > %s\ncat >/dev/null\ncat <&1 >/dev/null\n" % out)
    qq.chmod(0o755)
    from test_qmail_inject import inject
    p = inject(tree, b"To: t@x.example\n\nb\n", QMAILQUEUE=str(qq))
    assert p.returncode == 0, p.stderr
    assert signal.SIGXFSZ not in ignored(out.read_text())


def test_qmail_remote_run_by_qmail_rspawn_gets_default_sigxfsz(procs, tree, world_tmp):
    """qmail-rspawn execs $QMAILREMOTE with SIGXFSZ at its default, as qmail's C qmail-rspawn leaves it."""
    from pyqmail.lib.spawn.spawnproto import encode_request
    from test_batch_reports import queue
    from test_spawners import Spawner
    remote = world_tmp / "remote"
    remote.write_text("#!/bin/sh\ncat /proc/self/status > %s/status\nprintf 'r\\0K1.2.3.4 accepted.\\n\\0'\n"
                      % world_tmp)
    remote.chmod(0o755)
    messid, _ = queue(tree)
    s = Spawner(procs, [program("qmail-rspawn")], qenv(tree, QMAILREMOTE=str(remote)))
    s.p.stdin.write(encode_request(3, messid, b"s@example.org", b"a@remote.example"))
    s.p.stdin.flush()
    assert s.report() == (3, b"K1.2.3.4 accepted.\n")
    assert signal.SIGXFSZ not in ignored((world_tmp / "status").read_text())
    assert s.finish()[0] == 0


def test_qmail_checkpassword_runs_its_program_with_default_sigpipe_and_sigxfsz(pop):  # noqa: F811
    """qmail-checkpassword execs the program after it with neither ignored, as checkpassword's C does."""
    from test_pop3 import PASSWORD, checkpassword
    res = checkpassword(pop.tree, b"alice\0" + PASSWORD + b"\0<1.2@h>\0", STATUS)
    assert res.returncode == 0, res.stderr
    assert not ignored(res.stdout.decode()) & {signal.SIGPIPE, signal.SIGXFSZ}


def test_qmail_popup_runs_the_checkpassword_program_with_default_sigpipe_and_sigxfsz(procs, pop):  # noqa: F811
    """qmail-popup execs its checkpassword program with neither ignored, as qmail's C qmail-popup does."""
    from test_pop3 import serve
    port = serve(procs, pop, checker=STATUS)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK")
        s.sendall(b"USER alice\r\n")
        assert f.readline().startswith(b"+OK")
        s.sendall(b"PASS whatever\r\n")
        got = f.read()
    assert not ignored(got.decode()) & {signal.SIGPIPE, signal.SIGXFSZ}
