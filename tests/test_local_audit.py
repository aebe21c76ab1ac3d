"""An adversarial audit of local delivery: hostile users, hostile senders and tired administrators against the
installed qmail-lspawn (driven over its pipes as qmail-send drives it, with its reused workers) and qmail-local."""

import os
import signal
import subprocess

import pytest

from conftest import program, qenv
from test_spawners import ROOT, dotqmail, home, ids, lspawn, queue_message, users  # noqa: F401 (fixtures)

# the signals CPython itself sets to SIG_IGN at start-up; an ignored disposition survives execve
PYTHON_IGNORES = (signal.SIGPIPE, signal.SIGXFSZ)


def ignored(status):
    """Return the set of signal numbers /proc/<pid>/status text says are ignored (SigIgn)."""
    mask = int(status.split("SigIgn:")[1].split()[0], 16)
    return {n for n in range(1, 65) if mask & (1 << (n - 1))}


def blocked(status):
    """Return the SigBlk mask of /proc/<pid>/status text."""
    return int(status.split("SigBlk:")[1].split()[0], 16)


SIGNALS_LINE = "|cat /proc/self/status > %s/status-$EXT\n"  # cat: run by sh, as the program line's own process


@pytest.mark.parametrize("override", [False, True], ids=["worker", "QMAILLOCAL"])
def test_program_lines_get_default_signal_dispositions(procs, users, home, override):
    """A |program runs with SIGPIPE and SIGXFSZ at their defaults and nothing blocked, as under qmail's C
    qmail-local: Python's start-up ignores both, and an ignored signal stays ignored through exec (a program
    over its file size limit must be killed by SIGXFSZ, not get EFBIG it may not check)."""
    dotqmail(home, "sig", SIGNALS_LINE % home)
    messid, _ = queue_message(users)
    extra = {"QMAILLOCAL": program("qmail-local")} if override else {}
    s = lspawn(procs, users, **extra)
    s.send(0, messid, b"s@example.org", b"joe-sig@test.example")
    assert s.report() == (0, b"Kdid 0+0+1\n")
    status = (home / "status-sig").read_text()
    assert not ignored(status) & set(PYTHON_IGNORES), status
    assert blocked(status) == 0


def test_preline_hands_its_command_default_signal_dispositions(world_tmp):
    """preline's command (and the other dot-qmail helpers' programs) start with SIGPIPE and SIGXFSZ at their
    defaults too: preline itself is a Python process that ignores both."""
    out = world_tmp / "status"
    env = dict(os.environ, UFLINE="From s x\n", RPLINE="Return-Path: <s>\n", DTLINE="Delivered-To: d\n")
    r = subprocess.run([program("preline"), "sh", "-c", "cat > /dev/null; cat /proc/self/status > %s" % out],
                       input=b"x\n", env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not ignored(out.read_text()) & set(PYTHON_IGNORES)


@pytest.mark.parametrize("helper", ["condredirect", "bouncesaying"])
def test_dot_qmail_helpers_run_programs_with_default_signal_dispositions(world_tmp, helper):
    """condredirect and bouncesaying run their program (runchild.run_and_wait) with SIGPIPE and SIGXFSZ at
    their defaults; the program exits 1, so neither forwards nor bounces."""
    out = world_tmp / "status"
    r = subprocess.run([program(helper), "x@example.org" if helper == "condredirect" else "no",
                        "sh", "-c", "cat /proc/self/status > %s; exit 1" % out],
                       input=b"x\n", capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not ignored(out.read_text()) & set(PYTHON_IGNORES)



@pytest.mark.skipif(not ROOT, reason="needs root to switch to the recipient's uid")
@pytest.mark.parametrize("override", [False, True], ids=["worker", "QMAILLOCAL"])
def test_a_uid_or_gid_beyond_32_bits_in_users_assign_is_deferred_with_a_report(procs, users, home, override):
    """A tired administrator's typo: uid or gid 4294967296 in users/assign (C would cut it to 0, root) is a
    failing setuid, `ZInternal qmail-lspawn bug.` as qmail-lspawn reports one, not an empty `Z` from a worker
    that died on an exception."""
    name, uid, gid = ids()
    (users / "users" / "assign").write_text("=big:%s:4294967296:%d:%s:::\n=bigg:%s:%d:4294967296:%s:::\n.\n"
                                            % (name, gid, home, name, uid, home))
    subprocess.run([program("qmail-newu")], env=qenv(users), check=True)
    messid, _ = queue_message(users)
    s = lspawn(procs, users, **({"QMAILLOCAL": program("qmail-local")} if override else {}))
    s.send(0, messid, b"s@example.org", b"big@test.example")
    s.send(1, messid, b"s@example.org", b"bigg@test.example")
    assert sorted([s.report(), s.report()]) == [(0, b"ZInternal qmail-lspawn bug.\n"),
                                                (1, b"ZInternal qmail-lspawn bug.\n")]
    assert list((home / "Maildir" / "new").iterdir()) == []
