"""qmail-rspawn running the pre-loaded qmail-remote in forked children, and qmail-send → smtp-sink end to end."""

import os
import time

from conftest import program, qenv, queue_message as conftest_queue_message
from mailsystem import MailSystem, children, make_system_tree
from test_qmail_remote import OK, dumped, route, start_sink
from test_spawners import MSG, Spawner, queue_message

from pyqmail.commands import qmail_rspawn


def cmdline(pid):
    """Return a process's argv as bytes."""
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().split(b"\0")


def test_rspawn_forks_the_preloaded_qmail_remote(procs, tree, world_tmp):
    """While smtp-sink holds DATA, the delivering child is a fork of qmail-rspawn (same argv), not an exec."""
    port, dump = start_sink(procs, world_tmp, ["-w", "1"])
    route(tree, b":[127.0.0.2]:%d" % port)
    messid, n = queue_message(tree, rcpt=b"c@remote.example")
    s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))
    s.send(5, messid, b"s@example.org", b"c@remote.example")
    deadline = time.time() + 10
    while not children(s.p.pid) and time.time() < deadline:
        time.sleep(0.02)
    kids = children(s.p.pid)
    assert len(kids) == 1 and cmdline(kids[0]) == cmdline(s.p.pid)
    assert s.report() == (5, OK[:-1])
    [(head, body)] = dumped(dump)
    assert body == (tree / "queue" / "mess" / str(n % 23) / str(n)).read_bytes()
    assert b"X-Mail-Args: <s@example.org>" in head and b"X-Rcpt-Args: <c@remote.example>" in head
    assert s.finish()[0] == 0


def open_fds(pid):
    """Return the descriptors a process has open, by number."""
    return sorted(int(fd) for fd in os.listdir("/proc/%d/fd" % pid))


def test_rspawn_delivers_in_turn_in_one_reused_worker(procs, tree, world_tmp):
    """A second delivery runs in the worker the first one used: no fork per delivery, and nothing of the first
    (its message, its connection, its sender) is left in the worker."""
    port, dump = start_sink(procs, world_tmp)
    route(tree, b":[127.0.0.2]:%d" % port)
    s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))
    workers, fds = [], []
    for delnum, sender in ((3, b"first@example.org"), (4, b"second@example.org")):
        messid, n = queue_message(tree, rcpt=b"c@remote.example")
        s.send(delnum, messid, sender, b"c@remote.example")
        assert s.report() == (delnum, OK[:-1])
        [worker] = children(s.p.pid)  # the worker waits, idle, for the next delivery
        assert cmdline(worker) == cmdline(s.p.pid)
        workers.append(worker)
        fds.append(open_fds(worker))
    assert workers[0] == workers[1]
    # 0-2 on /dev/null, its socket to qmail-rspawn and the connection cache's sending end (qmail-rspawn(8))
    assert fds[0] == fds[1] and len(fds[1]) == 5
    heads = [head for head, _ in dumped(dump, count=2)]
    assert sorted(h.split(b"X-Mail-Args: ")[1].split(b"\n")[0] for h in heads) == [
        b"<first@example.org>", b"<second@example.org>"]
    assert s.finish()[0] == 0


def test_rspawn_maps_preloaded_reports(procs, tree, world_tmp):
    port, dump = start_sink(procs, world_tmp, ["-f", "RCPT"])
    route(tree, b":[127.0.0.2]:%d" % port)
    messid, n = queue_message(tree, rcpt=b"c@remote.example")
    s = Spawner(procs, [program("qmail-rspawn")], qenv(tree))
    s.send(0, messid, b"", b"c@remote.example")
    assert s.report() == (0, b"D127.0.0.2 does not like recipient.\nRemote host said: 500 5.3.0 Error: command "
                             b"failed\nGiving up on 127.0.0.2.\n")
    assert s.finish()[0] == 0


def test_is_ours_follows_path_and_symlinks(tree, world_tmp):
    bindir = os.path.dirname(program("qmail-remote"))
    assert qmail_rspawn.is_ours(b"qmail-remote", path=bindir)
    assert qmail_rspawn.is_ours(str(tree / "bin" / "qmail-remote").encode())  # qmail-setup's link
    other = world_tmp / "qmail-remote"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    assert not qmail_rspawn.is_ours(b"qmail-remote", path=str(world_tmp))
    assert not qmail_rspawn.is_ours(b"qmail-remote", path="/nonexistent")


def test_qmail_send_to_smtp_sink_end_to_end(procs, world_tmp):
    qtree = make_system_tree(world_tmp / "sys")
    port, dump = start_sink(procs, world_tmp)
    route(qtree, b":[127.0.0.2]:%d" % port)
    envelope = b"Fs@test.example\0Ta@remote.example\0Tb@remote.example\0\0"
    assert conftest_queue_message(qtree, MSG, envelope) == 0
    system = MailSystem(procs, qtree)
    log = system.wait_log(b"delivery 2: success: ", count=1)
    log = system.wait_log(b": success: 127.0.0.2_accepted_message./Remote_host_said:_250_2.0.0_Ok/\n", count=2)
    assert b"end msg " in system.wait_log(b"end msg ")
    stored = dumped(dump, count=2)
    assert len(stored) == 2
    for head, body in stored:
        assert body.endswith(MSG) and body.startswith(b"Received: (qmail ")
    assert sorted(h.split(b"X-Rcpt-Args: ")[1].split(b"\n")[0] for h, _ in stored) == [
        b"<a@remote.example>", b"<b@remote.example>"]
    assert system.stop() == 0
    assert log.count(b"starting delivery") == 2
