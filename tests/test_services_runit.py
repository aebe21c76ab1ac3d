"""runit's runsvdir supervising a tree's services made by `qmail-setup --services=runit` (qmail-setup(8)):
mail in through qmail-smtpd and qmail-qmqpd, delivered; `sv term` and kill -9 restart a server; a hang-up
stops runsvdir and every process it started."""

import os
import pwd
import signal
import subprocess
import time

import pytest

from conftest import free_port, need, wait_port
from servicetree import (SERVERS, alive_pid, delivered, greeting, listen_on, need_root, root_tree, send_qmqp,
                         send_smtp, session_pids, setup_services, uid_of, wait_gone)

pytestmark = [pytest.mark.root, pytest.mark.interop]


def service_pid(service, old=None, timeout=60):
    """Wait until runsv has a running pid for service (other than old); return it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            pid = int((service / "supervise" / "pid").read_text() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and pid != old and alive_pid(pid):
            return pid
        time.sleep(0.05)
    raise AssertionError("%s: no new pid within %d s" % (service, timeout))


def becomes(pid, account, timeout=60):
    """Wait until process pid runs as account (it may still be starting as root); True if it does."""
    deadline = time.time() + timeout
    while uid_of(pid) != pwd.getpwnam(account).pw_uid and time.time() < deadline:
        time.sleep(0.05)
    return uid_of(pid) == pwd.getpwnam(account).pw_uid


def test_runsvdir_runs_the_tree_restarts_and_stops_cleanly(world_tmp, procs):
    need_root()
    need("runsvdir", "sv", "multilog", "chpst")
    tree = root_tree(world_tmp)
    prefix = world_tmp / "root"
    r = setup_services(tree, "runit", prefix)
    assert r.returncode == 0, r.stderr
    svdir = prefix / "etc" / "sv"
    assert sorted(p.name for p in svdir.iterdir()) == sorted(("qmail-send",) + SERVERS)
    ports = {name: free_port() for name in SERVERS}
    for name, port in ports.items():
        listen_on(svdir / name / "run", port)
    runsvdir = procs.start(["runsvdir", str(svdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port in ports.values():
        wait_port("127.0.0.1", port, timeout=90)

    # each server runs as qmail's account for its role, its log as qmaill
    smtpd = service_pid(svdir / "qmail-smtpd")
    assert becomes(smtpd, "qmaild")
    send = service_pid(svdir / "qmail-send")
    assert becomes(send, "qmails")  # run → qmail-start (root) → exec qmail-send, same pid
    assert becomes(service_pid(svdir / "qmail-smtpd" / "log"), "qmaill")
    assert greeting(ports["qmail-pop3d"]).startswith(b"+OK <")
    assert greeting(ports["qmail-smtpd"]).startswith(b"220 test.example ESMTP")

    send_smtp(ports["qmail-smtpd"], "through smtpd under runsv")
    assert send_qmqp(world_tmp, ports["qmail-qmqpd"], "through qmqpd under runsv")[0] == 0
    delivered(tree, "through smtpd under runsv")
    delivered(tree, "through qmqpd under runsv")
    smtpd_log = tree / "log" / "qmail-smtpd" / "current"
    assert b"tcpserver: ok " in smtpd_log.read_bytes()  # multilog, through log/run
    assert b"status: local 0/10 remote 0/20" in (tree / "log" / "qmail-send" / "current").read_bytes()

    # sv term: the server exits and runsv starts it again
    subprocess.run(["sv", "term", str(svdir / "qmail-smtpd")], check=True, capture_output=True)
    assert wait_gone([smtpd]) == []
    smtpd2 = service_pid(svdir / "qmail-smtpd", old=smtpd)
    wait_port("127.0.0.1", ports["qmail-smtpd"], timeout=60)
    send_smtp(ports["qmail-smtpd"], "after sv term")
    delivered(tree, "after sv term")

    # kill -9 of the QMQP listener: its workers go with it, runsv starts a new one that can bind the port
    qmqpd = service_pid(svdir / "qmail-qmqpd")
    os.kill(qmqpd, signal.SIGKILL)
    service_pid(svdir / "qmail-qmqpd", old=qmqpd)
    deadline = time.time() + 60
    while send_qmqp(world_tmp, ports["qmail-qmqpd"], "after kill -9")[0] != 0 and time.time() < deadline:
        time.sleep(0.2)  # until the new listener has bound the port
    delivered(tree, "after kill -9")

    # a hang-up: runsvdir stops every runsv, each stops its service (qmail-send finishes), then its logger
    everything = session_pids(runsvdir.pid)
    assert smtpd2 in everything and send in everything and len(everything) > 10
    os.kill(runsvdir.pid, signal.SIGHUP)
    runsvdir.wait(timeout=60)
    assert wait_gone(everything, timeout=120) == []
    assert session_pids(runsvdir.pid) == []
    assert b"status: exiting" in (tree / "log" / "qmail-send" / "current").read_bytes()
