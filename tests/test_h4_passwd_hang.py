"""qmail-lspawn's passwd lookups do not hold up its loop: while one hangs (here /etc/passwd is a FIFO without a
writer, in a mount namespace of qmail-lspawn's own), deliveries users/cdb resolves start and are reported, and so
are deliveries already running; the hung one is deferred at its deadline (qmail-lspawn(8))."""

import errno
import os
import subprocess
import time

import pytest

from conftest import need, program, qenv, wait_until
from test_spawners import ROOT, Spawner, dotqmail, home, queue_message, users  # noqa: F401 (fixtures)
from pyqmail.lib.spawn.passwdlookup import TIMEOUT

DEFERRED = b"ZTemporary failure in qmail-lspawn.\n"


@pytest.fixture
def hung_lspawn(procs, users, world_tmp):
    """qmail-lspawn in its own mount namespace whose /etc/passwd is a FIFO nobody writes: every passwd lookup
    hangs (as on an NSS source that stopped answering); yields the Spawner."""
    need("unshare", "nsenter", "mount", "umount")
    s = Spawner(procs, ["unshare", "-m", "--propagation", "private", program("qmail-lspawn"), "./Maildir/"],
                qenv(users))
    fifo = world_tmp / "passwd.fifo"
    os.mkfifo(fifo)
    subprocess.run(["nsenter", "-t", str(s.p.pid), "-m", "mount", "--bind", str(fifo), "/etc/passwd"], check=True)
    try:
        yield s
    finally:
        wait_until(lambda: not_waited_on(fifo), timeout=10, what="helper let go of the FIFO")


def not_waited_on(fifo):
    """Open fifo for writing and close it, so that a helper still waiting to read it (if the test failed before
    its deadline) reads an empty /etc/passwd and goes on; True once nobody waits on it."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError as e:
        return e.errno == errno.ENXIO  # no reader
    return False


@pytest.mark.skipif(not ROOT, reason="needs root: a mount namespace whose /etc/passwd is a FIFO")
def test_users_cdb_deliveries_and_running_ones_are_reported_while_a_passwd_lookup_hangs(hung_lspawn, users, home):
    # before: qmail-lspawn waited for the lookup in its own loop, so for TIMEOUT seconds per lookup tried no
    # delivery started and no report of a running one was read or written: every report came after the deferral
    s = hung_lspawn
    messid, _ = queue_message(users)
    gate = home / "gate"
    dotqmail(home, "gate", "|while [ ! -e %s ]; do sleep 0.02; done\n" % gate)  # runs until the test opens it
    s.send(0, messid, b"s@example.org", b"joe-gate@test.example")  # running while the lookups hang
    start = time.monotonic()
    s.send(1, messid, b"s@example.org", b"nosuchuser@test.example")  # not in users/cdb: the passwd rules hang
    s.send(2, messid, b"s@example.org", b"joe@test.example")  # users/cdb: no passwd lookup
    s.send(3, messid, b"s@example.org", b"otheruser@test.example")  # a second lookup pending at once
    s.send(4, messid, b"s@example.org", b"joe@test.example")
    gate.touch()
    early = dict(s.report(timeout=TIMEOUT - 1) for _ in range(3))  # each well before the hung ones' deadline
    assert early == {0: b"Kdid 0+0+1\n", 2: b"Kdid 1+0+0\n", 4: b"Kdid 1+0+0\n"}
    assert time.monotonic() - start < TIMEOUT - 1
    assert len(list((home / "Maildir" / "new").iterdir())) == 2
    late = dict(s.report(timeout=TIMEOUT + 20) for _ in range(2))
    assert late == {1: DEFERRED, 3: DEFERRED}
    assert time.monotonic() - start >= TIMEOUT  # deferred at the deadline, not refused at once
    s.send(5, messid, b"s@example.org", b"nosuchuser@test.example")  # a new helper, stuck again: deferred again
    s.send(6, messid, b"s@example.org", b"joe@test.example")
    assert s.report(timeout=TIMEOUT - 1) == (6, b"Kdid 1+0+0\n")
    assert s.report(timeout=TIMEOUT + 20) == (5, DEFERRED)


@pytest.mark.skipif(not ROOT, reason="needs root: a mount namespace whose /etc/passwd is a FIFO")
def test_qmail_lspawn_ends_after_a_hung_lookup_is_deferred_when_qmail_send_closes_its_pipe(hung_lspawn, users):
    # a delivery waiting for its lookup is still a delivery qmail-lspawn must report before it exits
    s = hung_lspawn
    messid, _ = queue_message(users)
    s.send(1, messid, b"s@example.org", b"nosuchuser@test.example")
    code, rest, err = s.finish()
    assert (code, rest, err) == (0, b"\x01" + DEFERRED + b"\0", b"")
