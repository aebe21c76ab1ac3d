"""daemontools' svscan supervising a tree's services made by `qmail-setup --services=daemontools`
(qmail-setup(8)): mail through qmail-smtpd delivered, `svc -t` restarts it, `svc -dx` stops everything."""

import os
import re
import signal
import subprocess
import time

import pytest

from conftest import free_port, need, wait_port
from servicetree import (SERVERS, delivered, listen_on, need_root, root_tree, send_qmqp, send_smtp,
                         session_pids, setup_services, wait_gone)

pytestmark = [pytest.mark.root, pytest.mark.interop]


def up_pid(service, old=None, timeout=60):
    """Wait until svstat shows service up with a pid (other than old); return it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["svstat", str(service)], capture_output=True, text=True).stdout
        m = re.search(r": up \(pid (\d+)\)", out)
        if m and int(m.group(1)) != old:
            return int(m.group(1))
        time.sleep(0.1)
    raise AssertionError("%s: not up with a new pid within %d s" % (service, timeout))


def test_svscan_runs_the_tree_restarts_and_stops(world_tmp, procs):
    need_root()
    need("svscan", "supervise", "svc", "svstat", "setuidgid", "multilog")
    tree = root_tree(world_tmp)
    prefix = world_tmp / "root"
    r = setup_services(tree, "daemontools", prefix)
    assert r.returncode == 0, r.stderr
    base = prefix / str(tree).lstrip("/") / "supervise"
    ports = {name: free_port() for name in SERVERS}
    for name, port in ports.items():
        listen_on(base / name / "run", port)
    svscan = procs.start(["svscan", str(base)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port in ports.values():
        wait_port("127.0.0.1", port, timeout=90)

    send_smtp(ports["qmail-smtpd"], "through smtpd under supervise")
    assert send_qmqp(world_tmp, ports["qmail-qmqpd"], "through qmqpd under supervise")[0] == 0
    delivered(tree, "through smtpd under supervise")
    delivered(tree, "through qmqpd under supervise")
    assert b"tcpserver: ok " in (tree / "log" / "qmail-smtpd" / "current").read_bytes()

    smtpd = up_pid(base / "qmail-smtpd")
    subprocess.run(["svc", "-t", str(base / "qmail-smtpd")], check=True)
    up_pid(base / "qmail-smtpd", old=smtpd)
    wait_port("127.0.0.1", ports["qmail-smtpd"], timeout=60)
    send_smtp(ports["qmail-smtpd"], "after svc -t")
    delivered(tree, "after svc -t")

    # svscan first (it would start supervise again), then each service and its logger: down and exit
    everything = session_pids(svscan.pid)
    os.kill(svscan.pid, signal.SIGTERM)
    svscan.wait(timeout=30)
    services = [str(base / name) for name in ("qmail-send",) + SERVERS]
    subprocess.run(["svc", "-dx", *services], check=True)
    # the loggers only once qmail-send's last line reached its log (multilog exits on TERM at once)
    send_log = tree / "log" / "qmail-send" / "current"
    deadline = time.time() + 60
    while b"status: exiting" not in send_log.read_bytes() and time.time() < deadline:
        time.sleep(0.05)
    subprocess.run(["svc", "-dx", *[s + "/log" for s in services]], check=True)
    assert wait_gone(everything, timeout=120) == []
    assert b"status: exiting" in send_log.read_bytes()
