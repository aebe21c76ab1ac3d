"""The programs our network and injection programs exec start with SIGXFSZ at its default (Python's start-up
ignores it, and an ignored signal stays ignored through exec): tcp-env's command (and SIGPIPE too, as under
qmail's C tcp-env), qmail-tcpserver's command, and $QMAILQUEUE as qmail-inject runs it."""

import os
import signal
import socket
import subprocess

from conftest import free_port, program, wait_port

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
