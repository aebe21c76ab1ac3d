"""The dot-qmail helpers run as real processes: argv, environment, exit codes, what they queue."""

import os
import pty
import re
import subprocess
import tempfile

import pytest

from conftest import program, qenv, queued
from pyqmail.lib.local import biff

MSG = b"Subject: hello\nMessage-ID: <m1@example.org>\n\nbody\n"
DT = b"Delivered-To: joe@test.example\n"


def helper(name, *args, tree=None, msg=MSG, **env):
    """Run a helper with the message on a seekable fd 0; return the CompletedProcess."""
    base = qenv(tree) if tree else dict(os.environ)
    for k in ("SENDER", "NEWSENDER", "DTLINE", "RPLINE", "UFLINE"):
        base.pop(k, None)
    base.update(env)
    with tempfile.TemporaryFile() as f:
        f.write(msg)
        f.seek(0)
        return subprocess.run([program(name), *args], stdin=f, capture_output=True, env=base, timeout=60)


@pytest.mark.parametrize("args,code,err", [
    ((), 100, b"bouncesaying: usage: bouncesaying error [ program [ arg ... ] ]\n"),
    (("go away",), 100, b"go away\n"),
    (("go away", "true"), 100, b"go away\n"),
    (("go away", "false"), 0, b""),
    (("go away", "sh", "-c", "exit 111"), 111, b"bouncesaying: fatal: temporary child error\n"),
    (("go away", "/nonexistent/prog"), 0, b""),  # exec failure (permanent: 100) counts as "other"
])
def test_bouncesaying(args, code, err):
    r = helper("bouncesaying", *args)
    assert (r.returncode, r.stderr) == (code, err)


@pytest.mark.parametrize("args,code", [(("true",), 100), (("false",), 0), (("sh", "-c", "exit 111"), 111),
                                       (("sh", "-c", "exit 100"), 0), ((), 100)])
def test_except(args, code):
    assert helper("except", *args).returncode == code


def test_except_child_crash():
    r = helper("except", "sh", "-c", "kill -9 $$")
    assert (r.returncode, r.stderr) == (111, b"except: fatal: child crashed\n")


def test_condredirect_forwards_and_stops(tree):
    env = dict(SENDER="s@example.org", DTLINE=DT.decode())
    r = helper("condredirect", "new@example.net", "sh", "-c", "cat >/dev/null; exit 0", tree=tree, **env)
    m = re.fullmatch(rb"condredirect: qp (\d+)\n", r.stderr)
    assert r.returncode == 99 and m, r.stderr
    [(mess, todo)] = queued(tree).values()
    assert mess.endswith(b"\n" + DT + MSG)  # rewound after the program read the message
    assert todo.endswith(b"\0Fs@example.org\0Tnew@example.net\0") and b"\0p" + m.group(1) + b"\0" in todo


@pytest.mark.parametrize("code,expect", [(1, 0), (100, 0), (111, 111)])
def test_condredirect_keeps_message(tree, code, expect):
    env = dict(SENDER="s@example.org", DTLINE=DT.decode())
    r = helper("condredirect", "new@example.net", "sh", "-c", "exit %d" % code, tree=tree, **env)
    assert r.returncode == expect and queued(tree) == {}


def test_condredirect_needs_env_and_args(tree):
    assert helper("condredirect", "a@b").returncode == 100
    r = helper("condredirect", "a@b", "true", tree=tree, DTLINE="x\n")
    assert (r.returncode, r.stderr) == (100, b"condredirect: fatal: SENDER not set\n")


def test_forward_queues_to_all(tree):
    env = dict(NEWSENDER="owner@test.example", DTLINE=DT.decode(), SENDER="ignored@x")
    r = helper("forward", "a@example.net", "b@example.com", tree=tree, **env)
    m = re.fullmatch(rb"forward: qp (\d+)\n", r.stderr)
    assert r.returncode == 0 and m, r.stderr
    [(mess, todo)] = queued(tree).values()
    assert re.fullmatch(rb"Received: [^\n]*\n" + re.escape(DT + MSG), mess)
    assert todo.endswith(b"\0Fowner@test.example\0Ta@example.net\0Tb@example.com\0")


def test_forward_reports_queue_failure(tree):
    env = dict(NEWSENDER="o@x", DTLINE=DT.decode(), QMAILQUEUE="/bin/false")
    r = helper("forward", "a@b", tree=tree, **env)
    assert (r.returncode, r.stderr) == (111, b"forward: fatal: qq temporary problem (#4.3.0)\n")
    env["QMAILQUEUE"] = "/nonexistent"
    assert helper("forward", "a@b", tree=tree, **env).returncode == 111
    r = helper("forward", "a@b", tree=tree, DTLINE="x\n")
    assert (r.returncode, r.stderr) == (100, b"forward: fatal: NEWSENDER not set\n")


LINES = dict(UFLINE="From s@x Thu Jan 01 00:00:00 1970\n", RPLINE="Return-Path: <s@x>\n", DTLINE=DT.decode())


@pytest.mark.parametrize("flags,lines", [((), "UFLINE RPLINE DTLINE"), (("-f",), "RPLINE DTLINE"),
                                         (("-frd",), ""), (("-d", "-D"), "UFLINE RPLINE DTLINE"),
                                         (("-r",), "UFLINE DTLINE")])
def test_preline(flags, lines):
    r = helper("preline", *flags, "cat", **LINES)
    expect = b"".join(LINES[k].encode() for k in lines.split()) + MSG
    assert (r.returncode, r.stdout) == (0, expect)


def test_preline_exit_code_and_usage():
    assert helper("preline", "sh", "-c", "cat >/dev/null; exit 42", **LINES).returncode == 42
    assert helper("preline", "cat").returncode == 100  # no UFLINE etc.
    assert helper("preline", "-f", **LINES).returncode == 100
    r = helper("preline", "/nonexistent/x", **LINES)
    assert (r.returncode, r.stderr) == (100, b"preline: fatal: unable to run /nonexistent/x: file does not exist\n")


NOTICE_MSG = (b"Subject: hi\nMessage-ID: <m1@example.org>\n"
              b"Notice-Requested-Upon-Delivery-To: Joe <joe@test.example>, other@x\n\nbody\n")


def test_qreceipt_sends_notice(tree):
    r = helper("qreceipt", "joe@test.example", tree=tree, msg=NOTICE_MSG, SENDER="a b@example.org")
    assert (r.returncode, r.stderr) == (0, b"")
    [(mess, todo)] = queued(tree).values()
    body = mess.split(b"\n", 1)[1]
    assert body == (b'From: DELIVERY NOTICE SYSTEM <"a b"@example.org>\nTo: <"a b"@example.org>\n'
                    b"Subject: success notice\n\nHi! This is the qreceipt program. Your message was delivered to"
                    b" the\nfollowing address: joe@test.example. Thanks for asking.\n"
                    b"Your Message-ID: <m1@example.org>\n")
    assert todo.endswith(b"\0F\0Ta b@example.org\0")


@pytest.mark.parametrize("target,sender", [("nobody@test.example", "s@x"), ("joe@test.example", ""),
                                           ("joe@test.example", "#@[]")])
def test_qreceipt_no_notice(tree, target, sender):
    r = helper("qreceipt", target, tree=tree, msg=NOTICE_MSG, SENDER=sender)
    assert r.returncode == 0 and queued(tree) == {}


def test_qreceipt_usage():
    assert helper("qreceipt", SENDER="s@x").returncode == 100
    assert helper("qreceipt", "a@b").returncode == 100


def test_qbiff_exits_0():
    assert helper("qbiff", USER="joe", SENDER="s@x", LOCAL="joe").returncode == 0
    assert helper("qbiff").returncode == 0


def test_qbiff_writes_to_own_tty_with_biff_y():
    master, slave = pty.openpty()
    name = os.ttyname(slave)
    try:
        os.chmod(name, 0o620)
        assert not biff.write_tty(name[5:].encode(), b"x", os.getuid())  # biff n: no x bit
        os.chmod(name, 0o720)
        assert not biff.write_tty(name[5:].encode(), b"x", os.getuid() + 1)  # not the user's tty
        assert biff.write_tty(name[5:].encode(), b"\r\n\a*** TO <joe>", os.getuid())
        assert b"*** TO <joe>" in os.read(master, 100)
    finally:
        os.close(slave)
        os.close(master)
