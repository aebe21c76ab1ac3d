"""An adversarial audit of the small programs used from .qmail files and scripts (forward, condredirect,
bouncesaying, except, preline, qreceipt, qbiff, maildirmake, splogger): each test reproduces a defect found by
running the installed program against hostile input, or pins a protection no other test covers."""

import os
import pty
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tty

import pytest
from hypothesis import given, strategies as st

from conftest import need, program, qenv, queued, read_screen
from pyqmail.lib.local import biff
from pyqmail.lib.rfc822 import headerbody
from test_dotqmail_helpers import LINES, MSG, helper
from test_inject import fake_queue
from test_maildirtools import OLD, maildir, maildirwatch_on_pty, put
from test_qmail_local import dotqmail, dtree, home, local  # noqa: F401 (home and dtree are fixtures)
from test_splogger import NAMESPACE_SCRIPT, logger_dev, splogger

ROOT = os.geteuid() == 0


# ---------------------------------------------------------------- an empty program name

@pytest.mark.parametrize("name,args,code", [
    ("bouncesaying", ("go away", ""), 0),  # exec fails permanently (100): "any other exit", so 0
    ("except", ("",), 0),
    ("condredirect", ("new@example.net", ""), 0),
])
def test_an_empty_program_name_fails_to_run_as_execvp_fails_it(tree, name, args, code):
    """execvp("") fails with ENOENT (qmail: exit 100 from the child); Python's os.execvp raised ValueError
    instead, and the child exited 111, so the helper deferred the message for ever."""
    r = helper(name, *args, tree=tree, SENDER="s@example.org", DTLINE="Delivered-To: joe@test.example\n")
    assert (r.returncode, r.stderr) == (code, b"")
    assert queued(tree) == {}


def test_preline_with_an_empty_program_name_says_it_cannot_run_it():
    r = helper("preline", "", **LINES)
    assert (r.returncode, r.stderr) == (100, b"preline: fatal: unable to run : file does not exist\n")


def test_an_empty_program_name_through_qmail_local_lets_the_dot_qmail_go_on(home, tmp_path, tree):  # noqa: F811
    dotqmail(home, ".qmail", '|bouncesaying "go away" ""\n|echo second\n')
    r = local(home, tmp_path, tree=tree)
    assert (r.returncode, r.stdout) == (0, b"second\ndid 0+0+2\n"), r.stderr


def test_condredirect_through_qmail_local_forwards_and_stops_the_dot_qmail(home, tmp_path, dtree):  # noqa: F811
    dotqmail(home, ".qmail", "|condredirect new@example.net grep -q secret\n./Mailbox\n")
    msg = b"Subject: s\n\nthe secret\n"
    r = local(home, tmp_path, tree=dtree, msg=msg)
    assert r.returncode == 0 and r.stdout.endswith(b"did 0+0+1\n"), (r.stdout, r.stderr)
    assert not (home / "Mailbox").exists()  # exit 99: the mbox line never ran
    [(mess, todo)] = queued(dtree).values()
    assert mess.endswith(b"\nDelivered-To: joe@test.example\n" + msg)
    assert todo.endswith(b"\0Fs@example.org\0Tnew@example.net\0")
    r = local(home, tmp_path, tree=dtree, msg=b"Subject: s\n\nnothing to see\n")
    assert r.returncode == 0 and (home / "Mailbox").exists()  # exit 0 without forwarding: the next line runs
    assert len(queued(dtree)) == 1


# ---------------------------------------------------------------- header scanning stays linear

def folded_header(lines):
    """A message whose first header field goes on for `lines` continuation lines of 3 bytes."""
    return (b"Notice-Requested-Upon-Delivery-To: joe@test.example\n" + b" x\n" * lines
            + b"Subject: hi\n\nbody\n")


FOLDED = 400000  # 1.2 MB of header: 80 s of CPU each for qbiff and qreceipt before the fix, about 1 s after


def timed(name, *args, msg, tree=None, **env):
    """Run a helper on msg (a seekable fd 0); fail when it takes more than 30 s."""
    base = qenv(tree) if tree else dict(os.environ)
    base.update(env)
    with tempfile.TemporaryFile() as f:
        f.write(msg)
        f.seek(0)
        try:
            return subprocess.run([program(name), *args], stdin=f, capture_output=True, env=base, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("%s took more than 30 s on a %d-byte header" % (name, len(msg)))


def test_qbiff_reads_a_long_folded_header_in_linear_time():
    """A header field folded over many short lines was joined by repeated bytes concatenation (quadratic up to
    the 1 MiB field bound): a hostile sender made every qbiff delivery burn a minute and a half of CPU."""
    r = timed("qbiff", msg=folded_header(FOLDED), USER="nobody-here", SENDER="s@x", LOCAL="joe")
    assert r.returncode == 0


def test_qreceipt_reads_a_long_folded_header_in_linear_time(tree):
    r = timed("qreceipt", "joe@test.example", tree=tree, msg=folded_header(FOLDED), SENDER="s@example.org")
    assert (r.returncode, r.stderr) == (0, b"")
    [(_, todo)] = queued(tree).values()  # the long field still names the address: the notice goes
    assert todo.endswith(b"\0F\0Ts@example.org\0")


def model_fields(data, limit):
    """The reference: (kind, bytes) of headerbody.split(headerbody.lines(...)) for data, computed naively."""
    lines = []
    for piece in data.split(b"\n"):
        lines.append(piece + b"\n")
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    cut = [ln[:limit] for ln in lines]  # a line longer than limit keeps its first limit bytes
    out = []
    field = None
    in_header = True
    for ln in cut:
        if in_header:
            if field is not None and ln[:1] in (b" ", b"\t"):
                if len(field) < headerbody.FIELD_MAX:
                    field += ln
                continue
            if field is not None:
                out.append(("field", field))
                field = None
            if headerbody.is_field_start(ln):
                field = ln
                continue
            in_header = False
            if ln in (b"\n", b"\r\n"):
                continue
        out.append(("body", ln))
    if field is not None:
        out.append(("field", field))
    return out


@given(st.lists(st.sampled_from([b"A: 1\n", b" 2\n", b"\t3\n", b"\n", b"\r\n", b"x\n", b"B:", b"C", b" ",
                                 b"long: " + b"y" * 90 + b"\n", b"y" * 70]), max_size=30),
       st.sampled_from([8, 64, 65536]))
def test_header_reader_matches_the_naive_model(pieces, limit):
    """lines() and split() give what the naive model gives, however the input arrives (a read per piece)."""
    data = b"".join(pieces)
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        for piece in pieces:
            writer.send(piece)
        writer.close()
        got = list(headerbody.split(headerbody.lines(reader.fileno(), limit)))
    finally:
        reader.close()
    assert got == model_fields(data, limit)


# ---------------------------------------------------------------- qreceipt's notice header

def test_qreceipt_notice_header_keeps_a_hostile_sender_on_one_line(tree):
    """A CR or LF in SENDER (possible through QMQP) was written into the notice's From and To fields (quote2
    puts a backslash before it, the line still breaks): the sender could add header fields of its choice."""
    sender = "a\nBcc: evil@example.net\nSubject: pwned\r\n\r\nfake body@example.org"
    msg = b"Notice-Requested-Upon-Delivery-To: joe@test.example\n\nbody\n"
    r = helper("qreceipt", "joe@test.example", tree=tree, msg=msg, SENDER=sender)
    assert (r.returncode, r.stderr) == (0, b"")
    [(mess, todo)] = queued(tree).values()
    header = mess.split(b"\n\n", 1)[0].split(b"\n")[1:]  # after qmail-queue's Received line
    assert [h.split(b":", 1)[0] for h in header] == [b"From", b"To", b"Subject"]
    assert b"\r" not in mess.split(b"\n\n", 1)[0]
    assert todo.endswith(b"\0F\0T" + sender.encode() + b"\0")  # the envelope keeps the address as it is


def test_qreceipt_run_by_qmail_local_for_a_hostile_sender(home, tmp_path, dtree):  # noqa: F811
    """Through a real delivery: qmail-local hands qreceipt the sender's LF in $SENDER; the notice it queues has
    its three header fields and no more."""
    dotqmail(home, ".qmail", "|qreceipt joe@test.example\n")
    msg = b"Notice-Requested-Upon-Delivery-To: joe@test.example\nSubject: s\n\nbody\n"
    sender = "x\nBcc: evil@example.net\nX: y@example.org"
    r = local(home, tmp_path, tree=dtree, sender=sender, msg=msg)
    assert (r.returncode, r.stdout) == (0, b"did 0+0+1\n"), r.stderr
    [(mess, todo)] = queued(dtree).values()
    header = mess.split(b"\n\n", 1)[0].split(b"\n")[1:]
    assert [h.split(b":", 1)[0] for h in header] == [b"From", b"To", b"Subject"]
    assert todo.endswith(b"\0F\0T" + sender.encode() + b"\0")


# ---------------------------------------------------------------- maildirmake and a swapped directory

def test_maildirmake_makes_the_subdirectories_in_the_directory_it_made(tmp_path):
    """maildirmake made dir/tmp, dir/new, dir/cur by path: whoever can write dir's parent could replace dir by
    a symlink between the first mkdir and the others, and the subdirectories were made wherever it pointed
    (qmail chdirs into dir). strace holds maildirmake after each mkdir so that the swap happens in between."""
    need("strace")
    victim = tmp_path / "victim"
    victim.mkdir()
    target = tmp_path / "Maildir"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.Popen(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=mkdir,mkdirat",
                          "-e", "inject=mkdir,mkdirat:delay_exit=1500000", program("maildirmake"), str(target)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not target.exists():
            if p.poll() is not None:
                err = p.stderr.read()
                if err.startswith(b"strace:"):  # an strace without system call delays (before 4.22)
                    pytest.skip(err.decode(errors="replace"))
                pytest.fail("maildirmake made nothing: %r" % err)
            assert time.monotonic() < deadline, "maildirmake made nothing in 30 s"
            time.sleep(0.01)
        target.rename(tmp_path / "moved")
        target.symlink_to(victim)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert sorted(os.listdir(victim)) == []
    assert p.returncode == 111 and err.startswith(b"maildirmake: fatal: unable to chdir to " + bytes(target)), err


def test_maildirmake_still_makes_a_maildir_under_a_relative_or_slashed_name(tmp_path):
    for name in ("rel", "slashed/", "deep/er"):
        if name == "deep/er":
            (tmp_path / "deep").mkdir()
        r = subprocess.run([program("maildirmake"), name], cwd=tmp_path, capture_output=True, timeout=30)
        assert (r.returncode, r.stderr) == (0, b""), name
        made = tmp_path / name.rstrip("/")
        assert sorted(os.listdir(made)) == ["cur", "new", "tmp"]
        assert all(stat.S_IMODE(os.stat(made / d).st_mode) == 0o700 for d in ("", "cur", "new", "tmp"))


# ---------------------------------------------------------------- splogger's facility argument

def test_splogger_takes_an_overlong_facility_number_as_qmail_does(tmp_path):
    """qmail's scan_ulong wraps a facility number too long for an unsigned long; ours raised OverflowError,
    so splogger exited 111 and logged nothing (qmail-send's log pipe then broken)."""
    code, err, recs = splogger(tmp_path, b"still logged\n", "qmail", "99999999999999999999999")
    assert (code, err) == (0, b"")
    assert [(f, t.split(b" ", 1)[1]) for f, _, _, t in recs] == [(1, b"still logged")]  # glibc's default: user


def test_splogger_with_nobody_listening_reads_all_its_input_and_exits_0(tmp_path):
    """syslogd gone (its socket left behind, nobody reading): each line is dropped, as syslog(3) drops it, and
    splogger goes on reading, so the daemon that writes to it never meets a broken pipe."""
    need("unshare", "mount")
    if not ROOT:
        pytest.skip("a private mount namespace needs root")
    d, s = logger_dev(tmp_path)
    s.close()
    data = b"".join(b"line %d %s\n" % (i, b"x" * (i % 2000)) for i in range(5000)) + b"\0\xff no newline"
    p = subprocess.run(["unshare", "-m", "sh", "-c", NAMESPACE_SCRIPT, "sh", str(d), program("splogger"), "t"],
                       input=data, capture_output=True, timeout=120)
    if p.returncode != 0 and b"unshare" in p.stderr:
        pytest.skip("no mount namespace here: " + p.stderr.decode(errors="replace"))
    assert (p.returncode, p.stderr) == (0, b"")


# ---------------------------------------------------------------- qbiff and a hostile utmp

UTMP_SCRIPT = 'set -e; mount -t tmpfs tmpfs /run; cp "$1" /run/utmp; shift; exec "$@"'


def utmp_record(user, line):
    """One Linux glibc utmp record: USER_PROCESS, the tty line and the user name."""
    rec = bytearray(biff.RECORD)
    rec[0:2] = biff.USER_PROCESS.to_bytes(2, "little")
    rec[biff.LINE_AT:biff.LINE_AT + len(line)] = line
    rec[biff.USER_AT:biff.USER_AT + len(user)] = user
    return bytes(rec)


def test_qbiff_writes_only_to_terminals(tmp_path):
    """qbiff accepts tty names with an inner `/` (pts/N), so a utmp entry can name any file below /dev: `fd/1`
    is qbiff's own stdout, `shm/x` a user's file. Only a character device is a terminal."""
    need("unshare", "mount")
    if not ROOT:
        pytest.skip("a private mount namespace needs root")
    master, slave = pty.openpty()
    tty.setraw(slave)  # the bytes as qbiff writes them, no CR added before LF
    terminal = os.ttyname(slave)
    os.chmod(terminal, 0o720)  # biff y
    out = tmp_path / "stdout"
    out.write_bytes(b"")
    os.chmod(out, 0o700)  # owned by us, owner-executable: what qbiff takes for "biff y"
    utmp = tmp_path / "utmp"
    utmp.write_bytes(utmp_record(b"root", b"fd/1") + utmp_record(b"root", terminal[5:].encode()))
    subject = b"s" * 100  # longer than the preview: it fills it, and no body text follows
    try:
        with open(out, "wb") as stdout:
            r = subprocess.run(["unshare", "-m", "sh", "-c", UTMP_SCRIPT, "sh", str(utmp), program("qbiff")],
                               input=b"Subject: " + subject + b"\n\nbody\n", stdout=stdout, stderr=subprocess.PIPE,
                               env=dict(os.environ, USER="root", SENDER="s@example.org", LOCAL="joe"), timeout=60)
        if r.returncode != 0 and b"unshare" in r.stderr:
            pytest.skip("no mount namespace here: " + r.stderr.decode(errors="replace"))
        assert (r.returncode, r.stderr) == (0, b"")
        said = read_screen(master, b"s" * 74 + b"\r\n", timeout=10)  # the terminal got it: the fake utmp was read
        assert said == b"\r\n\a*** TO <joe> FROM <s@example.org>\r\n    " + subject[:74] + b"\r\n"
        assert out.read_bytes() == b""
    finally:
        os.close(slave)
        os.close(master)


# ---------------------------------------------------------------- exit codes no other test pins

DT = "Delivered-To: joe@test.example\n"


@pytest.mark.parametrize("code", [99, 100, 64, 2])
def test_condredirect_forwards_only_on_0_and_passes_on_no_other_code(tree, code):
    r = helper("condredirect", "new@example.net", "sh", "-c", "exit %d" % code, tree=tree, SENDER="s@x",
               DTLINE=DT)
    assert (r.returncode, r.stderr) == (0, b"") and queued(tree) == {}


def test_condredirect_program_that_crashes_defers_and_forwards_nothing(tree):
    r = helper("condredirect", "new@example.net", "sh", "-c", "kill -9 $$", tree=tree, SENDER="s@x", DTLINE=DT)
    assert (r.returncode, r.stderr) == (111, b"condredirect: fatal: child crashed\n") and queued(tree) == {}


@pytest.mark.parametrize("qq_exit,code,text", [
    (31, 100, b"mail server permanently rejected message (#5.3.0)"),
    (53, 111, b"qq write error or disk full (#4.3.0)"),
])
def test_condredirect_reports_qmail_queues_verdict(tree, tmp_path, qq_exit, code, text):
    qq = fake_queue(tmp_path, "cat >/dev/null; exit %d\n" % qq_exit)
    r = helper("condredirect", "new@example.net", "true", tree=tree, SENDER="s@x", DTLINE=DT, QMAILQUEUE=qq)
    assert (r.returncode, r.stderr) == (code, b"condredirect: fatal: " + text + b"\n")


def test_condredirect_program_output_of_a_megabyte_passes_through(tree):
    """The program's stdout and stderr are its own (inherited): condredirect holds none of it."""
    r = helper("condredirect", "new@example.net", "sh", "-c",
               "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2; exit 0", tree=tree, SENDER="s@x",
               DTLINE=DT)
    assert r.returncode == 99 and r.stdout == b"\0" * 1000000
    assert r.stderr.startswith(b"\0" * 1000000) and r.stderr[1000000:].startswith(b"condredirect: qp ")
    [(mess, todo)] = queued(tree).values()
    assert mess.endswith(DT.encode() + MSG)


def test_forward_with_no_address_bounces_instead_of_dropping_the_message(tree):
    """`|forward $ADDR` with ADDR unset: qmail's forward queues the message to no recipient and exits 0, so the
    delivery succeeds and the message is gone. Ours says so and exits 100: the sender gets the message back."""
    r = helper("forward", tree=tree, NEWSENDER="s@x", DTLINE=DT)
    assert (r.returncode, r.stderr) == (100, b"forward: usage: forward address [ address ... ]\n")
    assert queued(tree) == {}


def test_forward_and_condredirect_never_take_an_address_as_an_option(tree):
    """A recipient or sender beginning with `-` is an envelope address, never an argument of qmail-queue."""
    r = helper("forward", "-f", "--help", tree=tree, NEWSENDER="-oi", DTLINE=DT)
    assert r.returncode == 0, r.stderr
    r = helper("condredirect", "-t", "true", tree=tree, SENDER="-bs", DTLINE=DT)
    assert r.returncode == 99, r.stderr
    todos = sorted(todo.split(b"\0F", 1)[1] for _, todo in queued(tree).values())
    assert todos == [b"-bs\0T-t\0", b"-oi\0T-f\0T--help\0"]


@pytest.mark.parametrize("who", ["recipient", "sender"])
def test_forward_of_an_overlong_address_bounces_and_queues_nothing(tree, who):
    """qmail-queue refuses an address of 1003 bytes or more (exit 11): forward bounces (100), nothing queued."""
    long = "a" * 100000 + "@example.net"
    env = dict(NEWSENDER=long if who == "sender" else "s@x", DTLINE=DT)
    r = helper("forward", long if who == "recipient" else "a@example.net", tree=tree, **env)
    assert (r.returncode, r.stderr) == (100, b"forward: fatal: envelope address too long for qq (#5.1.3)\n")
    assert queued(tree) == {}


# ---------------------------------------------------------------- preline and big input

def test_preline_streams_a_100_mb_message_with_a_20_mb_line_in_bounded_memory(tmp_path):
    """preline copies fd 0 without reading it as lines: 100 MB through a pipe, one line of 20 MB, and its own
    memory stays small (measured by a fresh parent, so that only preline and its command count)."""
    script = tmp_path / "run.py"
    script.write_text(
        "import os, resource, subprocess, sys\n"
        "p = subprocess.Popen([sys.argv[1], 'wc', '-c'], stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
        "chunk = b'x' * (1 << 20)\n"
        "p.stdin.write(b'Subject: big\\n\\n')\n"
        "for i in range(100):\n"
        "    p.stdin.write(chunk if i % 20 else chunk[:-1] + b'\\n')\n"
        "p.stdin.close()\n"
        "out = p.stdout.read()\n"
        "print(p.wait(), int(out), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    env = dict(os.environ, **LINES)
    r = subprocess.run([sys.executable, str(script), program("preline")], capture_output=True, env=env,
                       timeout=300)
    code, count, maxrss_kb = map(int, r.stdout.split())
    head = sum(len(v) for v in LINES.values()) + len(b"Subject: big\n\n")
    assert (code, count) == (0, head + 100 * (1 << 20))
    assert maxrss_kb < 64 * 1024, maxrss_kb


def test_preline_command_that_does_not_read_its_input_defers_with_a_reason():
    """The command exits without reading a big message: preline says so and exits 111 (qmail's preline dies of
    SIGPIPE, which qmail-local also turns into 111); never a traceback, never killed by the signal."""
    r = helper("preline", "true", msg=b"Subject: x\n\n" + b"y" * (4 << 20), **LINES)
    assert (r.returncode, r.stderr) == (111, b"preline: fatal: unable to copy input: broken pipe\n")


@pytest.mark.parametrize("argv,lines", [
    (("-d", "-f", "-r", "--", "cat"), ""),
    (("-r", "sh", "-c", "cat", "-f"), "UFLINE DTLINE"),  # options end at the command: its own -f is its own
    (("-dD", "-fF", "cat"), "UFLINE RPLINE DTLINE"),
])
def test_preline_takes_options_as_qmails_getopt_does(argv, lines):
    r = helper("preline", *argv, **LINES)
    expect = b"".join(LINES[k].encode() for k in lines.split()) + MSG
    assert (r.returncode, r.stdout, r.stderr) == (0, expect, b"")


# ---------------------------------------------------------------- qreceipt reads header fields as qmail does

@pytest.mark.parametrize("field", [
    b"Notice-Requested-Upon-Delivery-To: other@x,\r\n joe@test.example\r\n",
    b"notice-requested-upon-delivery-to:\n\tJoe (the user) <joe@test.example>\n",
])
def test_qreceipt_finds_the_address_in_a_folded_or_crlf_field(tree, field):
    msg = b"Subject: s\n" + field + b"\nbody\n"
    r = helper("qreceipt", "joe@test.example", tree=tree, msg=msg, SENDER="s@example.org")
    assert (r.returncode, r.stderr) == (0, b"")
    [(_, todo)] = queued(tree).values()
    assert todo.endswith(b"\0F\0Ts@example.org\0")  # one notice, to the envelope sender only


def test_qreceipt_sends_no_notice_to_the_null_sender_written_with_brackets(tree):
    """`<>` is no address: a notice to it would come back as a double bounce to the postmaster."""
    msg = b"Notice-Requested-Upon-Delivery-To: joe@test.example\n\nbody\n"
    r = helper("qreceipt", "joe@test.example", tree=tree, msg=msg, SENDER="<>")
    assert (r.returncode, r.stderr) == (0, b"") and queued(tree) == {}


def test_qreceipt_ignores_a_field_in_the_body(tree):
    msg = b"Subject: s\n\nNotice-Requested-Upon-Delivery-To: joe@test.example\n"
    r = helper("qreceipt", "joe@test.example", tree=tree, msg=msg, SENDER="s@example.org")
    assert r.returncode == 0 and queued(tree) == {}


# ---------------------------------------------------------------- maildirwatch's output going away

def test_maildirwatch_says_why_when_its_output_goes_away(tmp_path):
    """The terminal or pipe it writes to is gone: a fatal message, 111, not `internal error: BrokenPipeError`."""
    md = tmp_path / "Maildir"
    subprocess.run([program("maildirmake"), str(md)], check=True, timeout=30)
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([program("maildirwatch")], stdout=w, stderr=subprocess.PIPE, timeout=60,
                           env=dict(os.environ, MAILDIR=str(md)))
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (111, b"maildirwatch: fatal: unable to write output: broken pipe\n")


def test_maildirwatch_skips_what_is_no_message_in_new(tmp_path, procs):
    """A directory, a FIFO and a symlink to /dev/zero in new/ (the Maildir's owner can put anything there): each
    is skipped, the message is shown, and maildirwatch keeps running (read, the directory would end it with
    111 and /dev/zero would never end)."""
    md = maildir(tmp_path / "M")
    (md / "new" / "0dir").mkdir()
    os.mkfifo(md / "new" / "0fifo")
    (md / "new" / "0zero").symlink_to("/dev/zero")
    for name in ("0dir", "0fifo"):
        os.utime(md / "new" / name, (OLD - 10, OLD - 10))
    put(md, "new", "1", b"Subject: real\n\nmessage\n", OLD)
    p, master = maildirwatch_on_pty(procs, md)
    try:
        screen = read_screen(master, b"real/message/\r\n\r\n")
        assert screen == b"\033[;H\033[;JFROM ? TO <?>\r\nreal/message/\r\n\r\n"
        assert p.poll() is None
    finally:
        procs.stop(p)
        os.close(master)
