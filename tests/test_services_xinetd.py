"""xinetd (a private configuration on free loopback ports) running a tree's entries made by
`qmail-setup --services=xinetd` (qmail-setup(8)): qmail-smtpd and qmail-qmqpd deliver, qmail-popup greets."""

import os
import re
import signal
import subprocess

import pytest

from conftest import free_port, need, wait_port
from servicetree import (SERVERS, delivered, greeting, need_root, root_tree, send_qmqp, send_smtp,
                         session_pids, setup_services, wait_gone)

pytestmark = [pytest.mark.root, pytest.mark.interop]


def listen_on(entry, port):
    """Put an entry on 127.0.0.1:port."""
    text = entry.read_text()
    assert re.search(r"\n\tport\t\t= \d+\n", text)
    entry.write_text(re.sub(r"\n\tport\t\t= \d+\n", "\n\tport\t\t= %d\n\tbind\t\t= 127.0.0.1\n" % port, text))


def test_xinetd_starts_the_servers(world_tmp, procs):
    need_root()
    need("xinetd")
    tree = root_tree(world_tmp)
    prefix = world_tmp / "root"
    r = setup_services(tree, "xinetd", prefix)
    assert r.returncode == 0, r.stderr
    entries = prefix / "etc" / "xinetd.d"
    assert sorted(p.name for p in entries.iterdir()) == sorted(SERVERS)
    ports = {name: free_port() for name in SERVERS}
    for name, port in ports.items():
        listen_on(entries / name, port)
    conf = world_tmp / "xinetd.conf"
    conf.write_text("defaults\n{\n\tlog_type = FILE %s\n}\nincludedir %s\n" % (world_tmp / "xinetd.log", entries))
    pidfile = world_tmp / "xinetd.pid"
    xinetd = procs.start(["xinetd", "-f", str(conf), "-dontfork", "-pidfile", str(pidfile)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    send = procs.start([str(tree / "rc")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # qmail-send
    for port in ports.values():
        wait_port("127.0.0.1", port, timeout=60)
    assert int(pidfile.read_text()) == xinetd.pid

    assert greeting(ports["qmail-smtpd"]).startswith(b"220 test.example ESMTP")
    assert greeting(ports["qmail-pop3d"]).startswith(b"+OK <")
    send_smtp(ports["qmail-smtpd"], "through smtpd under xinetd")
    assert send_qmqp(world_tmp, ports["qmail-qmqpd"], "through qmqpd under xinetd")[0] == 0
    smtp = delivered(tree, "through smtpd under xinetd").read_bytes()
    assert b"Received: from localhost (HELO " in smtp and b"(127.0.0.1)\n  by " in smtp  # tcp-env's variables
    delivered(tree, "through qmqpd under xinetd")

    # stopped by pid: xinetd and its children; qmail-send finishes and its helpers follow
    servers = session_pids(xinetd.pid)
    os.kill(xinetd.pid, signal.SIGTERM)
    xinetd.wait(timeout=30)
    delivery = session_pids(send.pid)
    os.kill(send.pid, signal.SIGTERM)
    send.wait(timeout=120)
    assert wait_gone(servers + delivery) == []
