"""Queueing inside the caller (lib/queue/queuehere): the same queue files and replies as running qmail-queue."""

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import make_tree, program, qenv, queued

ROOT = os.geteuid() == 0


def owner():
    """The account that owns the tree and runs the programs: nobody when the tests run as root."""
    return pwd.getpwnam("nobody") if ROOT else pwd.getpwuid(os.getuid())


@pytest.fixture(scope="module")
def own_tree():
    """A single-user tree owned by the account that will run qmail-qmqpd (in a directory all can enter)."""
    base = Path(tempfile.mkdtemp(prefix="pyqmail-"))
    os.chmod(base, 0o755)
    yield make_tree(base / "qmail", "--user", owner().pw_name, "--me", "test.example")
    shutil.rmtree(base, ignore_errors=True)


def qmqp_request(message, sender, recipients):
    """Return a QMQP request."""
    fields = [message, sender, *recipients]
    body = b"".join(b"%d:%s," % (len(f), f) for f in fields)
    return b"%d:%s," % (len(body), body)


def run_qmqpd(tree, request, **env):
    """Run qmail-qmqpd as the tree's owner on one request; return (its pid, its reply)."""
    pw = owner()
    preexec = (lambda: (os.setgroups([]), os.setgid(pw.pw_gid), os.setuid(pw.pw_uid))) if ROOT else None
    proc = subprocess.Popen([program("qmail-qmqpd")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, preexec_fn=preexec,
                            env=qenv(tree, TCPREMOTEIP="127.0.0.1", TCPLOCALIP="127.0.0.1", **env))
    reply = proc.communicate(request, timeout=30)[0]
    return proc.pid, reply


def clear(tree):
    """Empty the queue (nothing runs qmail-send here)."""
    for d in ("todo", "intd"):
        for f in (tree / "queue" / d).iterdir():
            f.unlink()
    for f in (tree / "queue" / "mess").rglob("*"):
        if f.is_file():
            f.unlink()


def normalise(mess):
    """Replace pids and dates in Received lines, which differ from run to run."""
    mess = re.sub(rb"\(qmail \d+ invoked", b"(qmail P invoked", mess)
    return re.sub(rb"; \d+ \w+ \d+ \d\d:\d\d:\d\d -0000", b"; DATE", mess)


def both_ways(tree, request):
    """Run the request in-process and through bin/qmail-queue; return [(pid, reply, queued)] for each."""
    out = []
    for env in ({}, {"QMAILQUEUE": str(tree / "bin" / "qmail-queue")}):
        clear(tree)
        pid, reply = run_qmqpd(tree, request, **env)
        out.append((pid, reply, [(normalise(m), re.sub(rb"^u\d+\0p\d+\0", b"", t)) for m, t in queued(tree).values()]))
    return out


def test_qmail_qmqpd_queues_in_its_own_process(own_tree):
    (here_pid, here_reply, here_q), (_, exec_reply, exec_q) = both_ways(
        own_tree, qmqp_request(b"Subject: x\n\nbody\n", b"a@b.example", [b"c@test.example", b"d@test.example"]))
    assert re.fullmatch(rb"\d+:Kok \d+ qp %d," % here_pid, here_reply)
    assert re.fullmatch(rb"\d+:Kok \d+ qp \d+,", exec_reply)
    assert here_q == exec_q and len(here_q) == 1
    assert here_q[0][1] == b"Fa@b.example\0Tc@test.example\0Td@test.example\0"


def test_qmail_queue_named_in_qmailqueue_is_still_run(own_tree):
    clear(own_tree)
    pid, reply = run_qmqpd(own_tree, qmqp_request(b"\n", b"a@b", [b"c@d"]),
                           QMAILQUEUE=str(own_tree / "bin" / "qmail-queue"))
    assert b"Kok" in reply and b"qp %d," % pid not in reply


@pytest.mark.parametrize("sender,recipients", [
    (b"a" * 1003, [b"c@d"]),                 # longer than qmail-queue's ADDR
    (b"a@b", [b"c@d", b"x" * 2000]),
    (b"a\0b@c", [b"c@d"]),                   # a NUL inside an address splits the record for qmail-queue
    (b"a@b", [b"c\0@d"]),
])
def test_envelopes_qmail_queue_refuses_get_the_same_reply_and_leave_nothing(own_tree, sender, recipients):
    (_, here_reply, here_q), (_, exec_reply, exec_q) = both_ways(
        own_tree, qmqp_request(b"Subject: x\n\n", sender, recipients))
    assert here_reply == exec_reply
    assert here_q == exec_q
    assert not [f for f in (own_tree / "queue" / "mess").rglob("*") if f.is_file()] or here_q


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=40), st.lists(st.binary(min_size=1, max_size=30), min_size=1, max_size=3),
       st.binary(max_size=200))
def test_in_process_and_qmail_queue_agree_on_any_envelope(own_tree, sender, recipients, message):
    (_, here_reply, here_q), (_, exec_reply, exec_q) = both_ways(own_tree, qmqp_request(message, sender, recipients))
    def plain(reply):
        """The reply's netstring, its length checked, then its text without the time and pid (whose
        digit counts differ between the two processes when a pid crosses a power of ten)."""
        length, _, rest = reply.partition(b":")
        assert rest.endswith(b",") and int(length) == len(rest) - 1, reply
        return re.sub(rb"Kok \d+ qp \d+", b"Kok T qp N", rest[:-1])
    assert plain(here_reply) == plain(exec_reply)
    assert here_q == exec_q
