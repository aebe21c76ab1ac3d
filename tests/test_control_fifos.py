"""A FIFO where a control file or table belongs (an administrator's mistake: `mkfifo` for `touch`, a pipe left by a
tool) never holds a program waiting for a writer: qmail-lspawn's users/cdb, qmail-qmqpc's qmqpservers and
qmail-remote's remoteauth are opened without blocking and only as regular files (lib/util/regularfile), and the
program fails as for a control it cannot read. Before, each of these waited for ever: every local delivery, every
QMQP injection, every delivery through a relay with AUTH."""

import os
import subprocess

import pytest

from test_qmail_remote import remote, route
from test_qmqpc import home as qmqpc_home, qmqpc  # noqa: F401 (a fixture)
from test_spawners import home, lspawn, queue_message, users  # noqa: F401 (fixtures)
from conftest import free_port, program, qenv


def test_users_cdb_a_fifo_defers_the_delivery(procs, users, home):  # noqa: F811
    messid, _ = queue_message(users)
    os.unlink(users / "users" / "cdb")
    os.mkfifo(users / "users" / "cdb")
    s = lspawn(procs, users)
    s.send(0, messid, b"s@example.org", b"joe@test.example")
    assert s.report(timeout=20) == (0, b"ZTrouble reading users/cdb in qmail-lspawn.\n")
    assert os.listdir(home / "Maildir" / "new") == []
    assert s.finish()[0] == 0


def test_qmqpservers_a_fifo_is_an_unreadable_control(qmqpc_home):  # noqa: F811
    os.mkfifo(qmqpc_home / "control" / "qmqpservers")
    assert qmqpc(qmqpc_home, timeout=20) == 55


def test_remoteauth_a_fifo_defers_without_connecting(tree, world_tmp):
    route(tree, b"example.com:[127.0.0.6]:%d" % free_port("127.0.0.6"))
    os.mkfifo(tree / "control" / "remoteauth", 0o600)
    code, out = remote(tree, world_tmp, ["example.com", "a@b", "c@example.com"])
    assert code == 0 and out.startswith(b"Z"), out


@pytest.mark.parametrize("prog,source,table", [
    ("qmail-newmrh", "control/morercpthosts", "control/morercpthosts.cdb"),
    ("qmail-newu", "users/assign", "users/cdb"),
    ("qmail-pw2u", "users/include", None),
])
def test_a_cdb_builders_fifo_input_is_an_unreadable_file_not_a_wait(tree, prog, source, table):
    # before: open() of a FIFO nobody writes waited for ever (the run never ended, the old table stayed)
    if table:
        (tree / table).write_bytes(b"")
        before = (tree / table).read_bytes()
    os.mkfifo(tree / source)
    p = subprocess.run([program(prog)], input=b"", env=qenv(tree), capture_output=True, timeout=20)
    assert p.returncode == 111 and b"fatal: unable to" in p.stderr, p
    if table:
        assert (tree / table).read_bytes() == before
