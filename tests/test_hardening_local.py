"""Issue 17, qmail-local's side: a CR, LF or NUL in an envelope address never starts a header line of its own in
what qmail-local writes (Maildir, mbox, |program, preline); and the interpreter's own LC_CTYPE (PEP 538 locale
coercion) never reaches a delivery, while one the administrator set does."""

import email
import email.policy
import mailbox
import os
import re
import signal
import subprocess
import time

import pytest
from hypothesis import given, settings, strategies as st

from conftest import BIN, program, queue_message, queued
from mailsystem import ROOT, assign_users, delivery_account
from pyqmail.lib.util import envsnapshot
from pyqmail.lib.local.delivery_env import Delivery, dtline, one_line, rpline, ufline
from pyqmail.lib.rfc822.quote import quote2

MSG = b"Subject: hardening\nMessage-ID: <h@x>\n\nbody line\n"
SENDER = b"s\rX-Evil: 1@x.test"
RECIPIENT = b"joe-x\rX-Evil: 2\nX-Evil: 3@test.example"
RP = b'Return-Path: <"s\\_X-Evil: 1"@x.test>\n'
DT = b"Delivered-To: joe-x_X-Evil: 2_X-Evil: 3@test.example\n"
UF = rb"From s_X-Evil:-1@x\.test (Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d \d{4}\n"
LOCAL_VARS = {"USER", "HOME", "LOCAL", "HOST", "RECIPIENT", "SENDER", "NEWSENDER", "DTLINE", "RPLINE", "UFLINE",
              "EXT", "EXT2", "EXT3", "EXT4", "HOST2", "HOST3", "HOST4"}


def own(path):
    """Give path to the delivery account."""
    if ROOT:
        pw = delivery_account()
        os.chown(path, pw.pw_uid, pw.pw_gid)


def make_home(base):
    """A home (0755) with a Maildir, owned by the delivery account."""
    home = base / "home"
    for d in (home, home / "Maildir", home / "Maildir" / "new", home / "Maildir" / "cur", home / "Maildir" / "tmp"):
        d.mkdir()
        os.chmod(d, 0o755 if d == home else 0o700)
        own(d)
    return home


def write_dotqmail(home, name, text):
    """Write home/name (0644), owned by the delivery account."""
    path = home / name
    path.write_bytes(text)
    os.chmod(path, 0o644)
    own(path)


def headers(data):
    """Return the header names Python's email parsers (compat32 and default policy) find in data."""
    old = email.message_from_bytes(data)
    new = email.message_from_bytes(data, policy=email.policy.default)
    assert old.keys() == new.keys()
    return old, old.keys()


def envelope(todo):
    """Return (sender, [recipients]) from a todo file's records (u, p, F, T...)."""
    records = todo.split(b"\0")
    sender = [r[1:] for r in records if r.startswith(b"F")][0]
    return sender, [r[1:] for r in records if r.startswith(b"T")]


# 1. CR / LF in the envelope, queued by qmail-queue, delivered by qmail-local

def test_cr_and_lf_from_the_queue_never_make_a_header(tree, world_tmp):
    """The envelope goes through the real qmail-queue; qmail-local then delivers it as qmail-lspawn would run it
    (user, home, local, dash, ext, domain, sender, default) to a Maildir, an mbox and a |program with preline.
    A NUL cannot get this far: it ends an envelope record and cannot be in an argument (see the property test)."""
    assert queue_message(tree, MSG, b"F" + SENDER + b"\0T" + RECIPIENT + b"\0\0") == 0
    [(mess, todo)] = queued(tree).values()
    sender, [recipient] = envelope(todo)
    assert (sender, recipient) == (SENDER, RECIPIENT)  # the queue holds them raw
    local, domain = recipient.rsplit(b"@", 1)
    home = make_home(world_tmp)
    write_dotqmail(home, ".qmail-default",
                   b'./Maildir/\n./Mailbox\n|printf %s "$UFLINE$RPLINE$DTLINE" > lines; preline cat > preline.out\n')
    kw = {}
    if ROOT:
        pw = delivery_account()
        kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
    message = world_tmp / "message"
    message.write_bytes(mess)
    with open(message, "rb") as stdin:
        r = subprocess.run([program("qmail-local"), "--", b"joe", str(home), local, b"-", local[4:], domain, sender,
                            b"./Mailbox"], stdin=stdin, capture_output=True, timeout=60,
                           env={"PATH": "%s:/usr/bin:/bin" % BIN}, **kw)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"did 2+0+1\n", b"")

    [name] = os.listdir(home / "Maildir" / "new")
    delivered = (home / "Maildir" / "new" / name).read_bytes()
    assert delivered == RP + DT + mess
    mbox = (home / "Mailbox").read_bytes()
    uf = re.match(UF, mbox).group(0)
    assert mbox == uf + RP + DT + mess + b"\n"
    assert (home / "lines").read_bytes() == uf + RP + DT  # $UFLINE, $RPLINE, $DTLINE as given to programs
    assert (home / "preline.out").read_bytes() == uf + RP + DT + mess

    queued_headers = headers(mess)[1]
    for data in (delivered, (home / "preline.out").read_bytes()):
        msg, names = headers(data)
        assert "X-Evil" not in names and names == ["Return-Path", "Delivered-To"] + queued_headers
        assert (msg["Return-Path"], msg["Delivered-To"]) == (RP[13:-1].decode(), DT[14:-1].decode())
    [boxed] = mailbox.mbox(str(home / "Mailbox"), create=False)
    assert boxed.get_from() == uf[5:-1].decode()
    assert "X-Evil" not in boxed.keys() and boxed["Delivered-To"] == DT[14:-1].decode()


def test_preline_keeps_each_line_one_line_whoever_built_it(tree, world_tmp):
    """qmail 1.03's qmail-local leaves a CR of the address in RPLINE and DTLINE: preline's lines stay single."""
    env = {"PATH": "%s:/usr/bin:/bin" % BIN, "UFLINE": "From a\r@x Thu Jan  1 00:00:00 1970\n",
           "RPLINE": 'Return-Path: <"a\\\rX-Evil: 1"@x>\n', "DTLINE": "Delivered-To: j\rX-Evil: 2\nX-Evil: 3@h\n"}
    r = subprocess.run([program("preline"), "cat"], input=b"Subject: s\n\nbody\n", capture_output=True, env=env,
                       timeout=30)
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout == (b"From a_@x Thu Jan  1 00:00:00 1970\n" b'Return-Path: <"a\\_X-Evil: 1"@x>\n'
                        b"Delivered-To: j_X-Evil: 2_X-Evil: 3@h\nSubject: s\n\nbody\n")
    assert "X-Evil" not in headers(r.stdout)[1]


@pytest.mark.parametrize("lc_ctype", [None, "C"])
def test_preline_hands_on_the_locale_it_was_given(lc_ctype):
    env = {"PATH": "/usr/bin:/bin", "UFLINE": "", "RPLINE": "", "DTLINE": ""}
    if lc_ctype is not None:
        env["LC_CTYPE"] = lc_ctype
    r = subprocess.run([program("preline"), "/bin/sh", "-c", 'cat >/dev/null; printf %s "${LC_CTYPE-unset}"'],
                       input=b"", capture_output=True, env=env, timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (0, (lc_ctype or "unset").encode(), b"")


@pytest.mark.parametrize("helper", [["except"], ["bouncesaying", "no"], ["condredirect", "x@example.net"]])
@pytest.mark.parametrize("lc_ctype", [None, "C"])
def test_dot_qmail_helpers_hand_on_the_locale_they_were_given(helper, lc_ctype):
    """except, bouncesaying and condredirect run a program for a .qmail line: it sees the LC_CTYPE they were
    given (none, or the administrator's C), not the C.UTF-8 the interpreter put in its own environment."""
    env = {"PATH": "/usr/bin:/bin"}
    if lc_ctype is not None:
        env["LC_CTYPE"] = lc_ctype
    script = 'cat >/dev/null; printf %s "${LC_CTYPE-unset}" >&2; exit 100'
    r = subprocess.run([program(helper[0]), *helper[1:], "/bin/sh", "-c", script],
                       input=b"", capture_output=True, env=env, timeout=30)
    assert r.stderr.startswith((lc_ctype or "unset").encode()), r.stderr


ADDRESS = st.binary(max_size=40) | st.lists(st.sampled_from([b"a", b"@", b"\r", b"\n", b"\0", b" ", b'"', b"\\",
                                                            b"\t", b".", b":"]), max_size=20).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(ADDRESS, ADDRESS, ADDRESS)
def test_built_lines_are_single_lines_and_otherwise_qmails(sender, local, host):
    lines = (rpline(sender), dtline(local, host), ufline(sender, 0))
    for line in lines:
        assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line and b"\0" not in line
    names = headers(lines[1] + lines[0] + b"\n")[1]
    assert names == ["Delivered-To", "Return-Path"]
    if not any(c in sender for c in b"\r\n\0"):
        assert lines[0] == b"Return-Path: <" + quote2(sender) + b">\n"  # qmail's bytes, unchanged
    if not any(c in local + host for c in b"\r\n\0"):
        assert lines[1] == b"Delivered-To: " + local + b"@" + host + b"\n"
    env = Delivery(b"u", b"/h", local, b"", host, sender, 0).program_env({}, None, sender)
    assert (env[b"RPLINE"], env[b"DTLINE"], env[b"UFLINE"]) == lines  # the lines programs get are the same


@given(st.binary(max_size=60))
def test_one_line_keeps_only_a_final_newline(value):
    out = one_line(value)
    assert len(out) == len(value) and b"\r" not in out and b"\0" not in out
    assert out.count(b"\n") == (1 if value.endswith(b"\n") else 0) and out.endswith(b"\n") == value.endswith(b"\n")
    if not any(c in value[:-1] if value.endswith(b"\n") else value for c in b"\r\n\0"):
        assert out == value


# 6. the interpreter's LC_CTYPE (PEP 538) stays out of deliveries; the administrator's passes

ENV_NAMES = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=10).map(str.encode)
ENV_VALUES = st.binary(max_size=20).map(lambda b: b.replace(b"\0", b""))


@given(st.dictionaries(ENV_NAMES, ENV_VALUES, max_size=8), ENV_NAMES)
def test_block_value_reads_an_environment_block(env, name):
    block = b"".join(k + b"=" + v + b"\0" for k, v in env.items())
    assert envsnapshot.block_value(block, name) == env.get(name)
    assert envsnapshot.block_value(b"x=1\0" + name + b"=first\0" + name + b"=second\0", name) == b"first"


@pytest.fixture
def restore_environment():
    """Put this process's environment back after a test changes it."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("given_block,now,all_,expect", [
    (b"PATH=/bin\0", "C.UTF-8", None, None),  # invented: removed
    (b"PATH=/bin\0LC_CTYPE=C\0", "C.UTF-8", None, "C"),  # the administrator's C, overwritten: put back
    (b"LC_CTYPE=\0", "C.utf8", None, ""),
    (b"LC_CTYPE=C.UTF-8\0", "C.UTF-8", None, "C.UTF-8"),  # the administrator's, the same value: kept
    (b"PATH=/bin\0", "de_DE.UTF-8", None, "de_DE.UTF-8"),  # never a coercion's value: not even looked up
    (b"PATH=/bin\0", "C.UTF-8", "C", "C.UTF-8"),  # LC_ALL set: Python does not coerce
    (None, "C.UTF-8", None, "C.UTF-8"),  # no /proc: left as it is
])
def test_undo_locale_coercion(restore_environment, tmp_path, given_block, now, all_, expect):
    path = tmp_path / "environ"
    if given_block is not None:
        path.write_bytes(given_block)
    os.environ["LC_CTYPE"] = now
    os.environ.pop("LC_ALL", None)
    if all_ is not None:
        os.environ["LC_ALL"] = all_
    envsnapshot.undo_locale_coercion(str(path))
    assert os.environ.get("LC_CTYPE") == expect
    out = subprocess.run(["/bin/sh", "-c", 'echo "${LC_CTYPE-unset}"'], capture_output=True).stdout
    assert out == (b"unset" if expect is None else expect.encode()) + b"\n"  # the C environment too


@pytest.fixture
def system(world_tmp):
    """A tree as an installation has it (qmail's accounts as root); joe's .qmail dumps its program's environment."""
    from conftest import make_tree
    tree = make_tree(world_tmp / "qmail", *([] if ROOT else ["--single-user"]), "--me", "test.example")
    home = make_home(world_tmp)
    assign_users(tree, [("=", "joe", home, "", "")])
    write_dotqmail(home, ".qmail", b"|cat /proc/$$/environ > environ\n")
    return tree, home


def delivered_environment(procs, tree, home, argv, env):
    """Start the delivery side with exactly env, queue one message to joe, return its |program's environment."""
    log = tree / "send.log"
    with open(log, "wb") as f:
        p = procs.start(argv, env=env, stdout=f, stderr=subprocess.DEVNULL)
    assert queue_message(tree, MSG, b"Fs@x.test\0Tjoe@test.example\0\0") == 0
    deadline = time.time() + 30
    while b"\ndelivery 1: " not in log.read_bytes() and time.time() < deadline:  # not "starting delivery 1: "
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(30) == 0
    assert b"delivery 1: success: did_0+0+1/" in log.read_bytes(), log.read_bytes()
    return dict(entry.split("=", 1) for entry in (home / "environ").read_text().split("\0") if entry)


def test_rc_without_locale_gives_deliveries_no_lc_ctype(procs, system):
    """rc (env - PATH QMAILHOME) → qmail-start → qmail-send → qmail-lspawn → qmail-local: each is a Python
    that coerces the C locale, none hands its LC_CTYPE on: the delivery gets qmail-command(8)'s environment."""
    tree, home = system
    env = delivered_environment(procs, tree, home, [str(tree / "rc"), "cat"], {"PATH": "/usr/bin:/bin"})
    assert "LC_CTYPE" not in env
    assert set(env) == {"PATH", "QMAILHOME"} | LOCAL_VARS
    assert env["PATH"] == "%s/bin:/usr/bin:/bin" % tree


@pytest.mark.parametrize("lc_ctype", [None, "C", "C.UTF-8"])
@pytest.mark.parametrize("exec_local", [False, True], ids=["preloaded", "QMAILLOCAL"])
def test_the_administrators_lc_ctype_and_only_it_reaches_deliveries(procs, system, lc_ctype, exec_local):
    """qmail-start run with a bare environment: LC_CTYPE=C (which Python overwrites with C.UTF-8) and C.UTF-8
    pass unchanged, none stays none, with qmail-local pre-loaded in qmail-lspawn or exec'd ($QMAILLOCAL)."""
    tree, home = system
    given = {"PATH": "%s/bin:/usr/bin:/bin" % tree, "QMAILHOME": str(tree)}
    if lc_ctype is not None:
        given["LC_CTYPE"] = lc_ctype
    if exec_local:
        given["QMAILLOCAL"] = str(tree / "bin" / "qmail-local")
    env = delivered_environment(procs, tree, home, [str(tree / "bin" / "qmail-start"), "./Maildir/"], given)
    assert env.get("LC_CTYPE") == lc_ctype
    assert set(env) == set(given) | LOCAL_VARS
    assert {k: env[k] for k in given} == given


@pytest.mark.parametrize("lc_ctype", [None, "C"])
def test_qmail_tcpserver_hands_programs_the_locale_it_was_given(procs, tree, lc_ctype):
    """A program qmail-tcpserver execs sees the LC_CTYPE the listener was given, not the interpreter's."""
    import socket
    from conftest import tcpserver
    env = {"PATH": os.environ["PATH"], "QMAILHOME": str(tree)}
    if lc_ctype is not None:
        env["LC_CTYPE"] = lc_ctype
    port = tcpserver(procs, tree, ["/bin/sh", "-c", 'printf %s "${LC_CTYPE-unset}"'], env=env,
                     server=program("qmail-tcpserver"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        got = b""
        while True:
            data = s.recv(100)
            if not data:
                break
            got += data
    assert got == (lc_ctype or "unset").encode()
