"""qmail-start: the whole delivery side started on a real tree, its users, descriptors, logger, pickup and exit 111."""

import grp
import os
import pwd
import signal
import subprocess
import time

import pytest

from conftest import make_tree, program, qenv, queue_message
from mailsystem import ROOT, MailSystem, alive, assign_users, children, make_home

root_only = pytest.mark.skipif(not ROOT, reason="needs root to start qmail's accounts")
MSG = b"Subject: qmail-start test\n\nhello\n"
ENVELOPE = b"Fsender@example.org\0Tjoe@test.example\0\0"


def proc_status(pid):
    """Return /proc/pid/status as {field: value}."""
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def who(pid):
    """Return (user, group, supplementary group names, command name) of a running process."""
    s = proc_status(pid)
    return (pwd.getpwuid(int(s["Uid"].split()[0])).pw_name, grp.getgrgid(int(s["Gid"].split()[0])).gr_name,
            sorted(grp.getgrgid(int(g)).gr_name for g in s["Groups"].split()), s["Name"])


def pipe_inode(pid, fd):
    """Return what /proc says descriptor fd of pid is (e.g. `pipe:[123]`)."""
    return os.readlink("/proc/%d/fd/%d" % (pid, fd))


def tree_processes(tree):
    """Return the pids of live processes running a program of tree/bin (whoever their parent is now)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and alive(int(name)):
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    if (str(tree) + "/bin/").encode() in f.read():
                        found.append(int(name))
            except OSError:
                continue
    return found


def wait_gone(pids, timeout=30):
    """Wait until none of pids is alive; return those still alive."""
    deadline = time.time() + timeout
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def by_name(pids):
    """Map each pid to its command name; qmail-pickup, a grandchild, is found under the guard."""
    names = {}
    for pid in pids:
        s = who(pid)[3]
        names.setdefault(s, []).append(pid)
        for grandchild in children(pid):
            names.setdefault(who(grandchild)[3], []).append(grandchild)
    return names


@pytest.fixture
def system(procs, world_tmp):
    """A tree as an installation has it (qmail's accounts as root) with joe@test.example → a Maildir."""
    tree = make_tree(world_tmp / "qmail", *([] if ROOT else ["--single-user"]), "--me", "test.example")
    home = make_home(world_tmp)
    assign_users(tree, [("=", "joe", home, "", "")])
    return tree, home


def test_delivers_logs_and_stops_everything_on_term(procs, system):
    tree, home = system
    mail = MailSystem(procs, tree)
    names = by_name(mail.helpers)
    assert sorted(names) == ["qmail-clean", "qmail-lspawn", "qmail-pickup", "qmail-rspawn", "qmail-start"]
    assert queue_message(tree, MSG, ENVELOPE) == 0
    log = mail.wait_log(b"end msg ")
    [delivered] = (home / "Maildir" / "new").iterdir()
    data = delivered.read_bytes()
    assert data.startswith(b"Return-Path: <sender@example.org>\nDelivered-To: joe@test.example\n")
    assert data.endswith(MSG)
    lines = log.decode().splitlines()
    n = lines[1].split()[2]
    assert lines[0] == "status: local 0/10 remote 0/20"
    assert lines[1] == "new msg " + n
    assert lines[2].startswith("info msg %s: bytes " % n) and "from <sender@example.org> qp " in lines[2]
    assert lines[3] == "starting delivery 1: msg %s to local joe@test.example" % n
    assert "delivery 1: success: did_1+0+0/" in lines and "end msg " + n in lines
    pickup = names["qmail-pickup"][0]
    assert mail.stop() == 0
    assert mail.log().endswith(b"status: exiting\n")
    assert wait_gone([pickup]) == []  # stopped by its guard once qmail-send is gone


def test_qmail_send_gets_qmails_descriptors(procs, system):
    tree, _ = system
    mail = MailSystem(procs, tree)
    names = by_name(mail.helpers)
    send = mail.pid
    assert os.readlink("/proc/%d/fd/0" % send) == str(mail.log_path)
    for helper, (to_fd, from_fd) in (("qmail-lspawn", (1, 2)), ("qmail-rspawn", (3, 4)), ("qmail-clean", (5, 6))):
        [pid] = names[helper]
        assert pipe_inode(send, to_fd) == pipe_inode(pid, 0), helper
        assert pipe_inode(send, from_fd) == pipe_inode(pid, 1), helper
        assert os.readlink("/proc/%d/fd/2" % pid) == str(mail.log_path)  # diagnostics go to the log
    assert not os.path.exists("/proc/%d/fd/7" % send) or not pipe_inode(send, 7).startswith("pipe:")
    assert os.readlink("/proc/%d/cwd" % send) == str(tree / "queue")
    env = open("/proc/%d/environ" % send, "rb").read().split(b"\0")
    assert b"QMAILHOME=" + bytes(tree) in env
    assert [e for e in env if e.startswith(b"PATH=")][0].startswith(b"PATH=" + bytes(tree / "bin") + b":")
    assert mail.stop() == 0


@root_only
def test_each_process_runs_as_qmails_account_for_it(procs, system):
    tree, _ = system
    mail = MailSystem(procs, tree)
    names = by_name(mail.helpers)
    expect = {"qmail-lspawn": ("root", "qmail", ["qmail"]), "qmail-rspawn": ("qmailr", "qmail", ["qmail"]),
              "qmail-clean": ("qmailq", "qmail", ["qmail"]), "qmail-start": ("qmailq", "qmail", []),
              "qmail-pickup": ("qmailq", "qmail", [])}
    for name, ids in expect.items():
        assert who(names[name][0])[:3] == ids, name
    assert who(mail.pid)[:3] == ("qmails", "qmail", ["qmail"])
    assert mail.stop() == 0


@root_only
def test_pickup_queues_a_plain_users_mail_for_delivery(procs, system):
    from test_privilege import account, queue_as
    tree, home = system
    mail = MailSystem(procs, tree)
    alice = account("pqalice")
    assert queue_as(alice, tree, MSG, ENVELOPE).returncode == 0
    mail.wait_log(b"end msg ")
    # qmail-pickup writes its line after its commit (and the drop's removal): qmail-send may deliver first
    log = mail.wait_log(b"qmail-pickup: queued maildrop/")
    assert b"uid %d\n" % alice.pw_uid in log
    [delivered] = (home / "Maildir" / "new").iterdir()
    assert delivered.read_bytes().endswith(MSG)
    assert mail.stop() == 0


def single_user(world_tmp):
    """A single-user tree of the account that runs it: a created one as root (started as root), else ours."""
    if ROOT:
        from test_privilege import account
        pw = account("pqstart")
        tree = make_tree(world_tmp / "qmail", "--user", pw.pw_name, "--me", "test.example")
    else:
        pw = pwd.getpwuid(os.getuid())
        tree = make_tree(world_tmp / "qmail", "--single-user", "--me", "test.example")
    (tree / "users" / "assign").write_text("+:%s:%d:%d:%s:-::\n.\n" % (pw.pw_name, pw.pw_uid, pw.pw_gid,
                                                                        tree / "alias"))
    subprocess.run([str(tree / "bin" / "qmail-newu")], env=qenv(tree), check=True)
    return tree, pw


def test_single_user_tree_runs_as_its_owner_and_postmaster_reaches_the_alias_maildir(procs, world_tmp):
    tree, pw = single_user(world_tmp)
    mail = MailSystem(procs, tree)
    for pid in [mail.pid] + mail.helpers:
        assert who(pid)[0] == pw.pw_name
    assert queue_message(tree, MSG, b"Fsender@example.org\0Tpostmaster@test.example\0\0") == 0
    assert b"delivery 1: success: did_1+0+0/" in mail.wait_log(b"end msg ")
    [delivered] = (tree / "alias" / "Maildir" / "new").iterdir()
    assert b"\nDelivered-To: postmaster@test.example\n" in delivered.read_bytes()  # .qmail-postmaster, empty
    assert mail.stop() == 0


def test_the_log_goes_through_the_logger(procs, system):
    tree, home = system
    out = tree / "logger.out"
    with open(out, "wb") as f:
        p = procs.start([program("qmail-start"), "./Maildir/", "sh", "-c", "id -un; exec cat"],
                        env=qenv(tree), stdout=f, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while b"status: local" not in out.read_bytes() and time.time() < deadline:
        time.sleep(0.05)
    logger = [pid for pid in children(p.pid) if who(pid)[3] == "cat"]
    assert len(logger) == 1
    if ROOT:
        assert who(logger[0])[:3] == ("qmaill", "nofiles", ["nofiles"])
    assert out.read_bytes().startswith(who(logger[0])[0].encode() + b"\nstatus: local 0/10 remote 0/20\n")
    assert queue_message(tree, MSG, ENVELOPE) == 0
    while b"end msg" not in out.read_bytes() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(30) == 0
    assert wait_gone(logger) == []  # the logger ends with its input
    assert out.read_bytes().endswith(b"status: exiting\n")


def test_rc_starts_with_defaultdelivery_and_a_given_logger(procs, system):
    tree, home = system
    assert (tree / "control" / "defaultdelivery").read_text() == "./Maildir/\n"
    out = tree / "rc.out"
    with open(out, "wb") as f:
        p = procs.start([str(tree / "rc"), "cat"], stdout=f, stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    assert queue_message(tree, MSG, ENVELOPE) == 0
    deadline = time.time() + 30
    while b"end msg" not in out.read_bytes() and time.time() < deadline:
        time.sleep(0.05)
    assert b"delivery 1: success: did_1+0+0/" in out.read_bytes()
    lspawn = [pid for pid in children(p.pid) if who(pid)[3] == "qmail-lspawn"][0]
    assert open("/proc/%d/cmdline" % lspawn, "rb").read().endswith(b"qmail-lspawn\0./Maildir/\0")
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(30) == 0


@pytest.mark.parametrize("missing", ["qmail-send", "qmail-clean", "qmail-pickup"])
def test_exit_111_and_nothing_left_when_a_program_is_missing(procs, system, missing):
    tree, _ = system
    (tree / "bin" / missing).unlink()
    p = procs.start([program("qmail-start"), "./Maildir/"], env=qenv(tree, PATH="/usr/bin:/bin"),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=30)
    # qmail's qmail-start says nothing; ours says what it could not do (qmail-send's exec: in the log, here fd 1)
    line = b"qmail-start: fatal: unable to run %s" % missing.encode()
    if missing == "qmail-send":
        assert (p.returncode, err) == (111, b"") and out.startswith(line + b": ") and out.endswith(b"\n"), out
    else:
        assert (p.returncode, out) == (111, b"") and err.startswith(line) and err.endswith(b"\n"), err
    assert wait_gone(tree_processes(tree)) == []


def test_exit_111_and_nothing_left_when_the_logger_is_missing(procs, system):
    tree, _ = system
    p = procs.start([program("qmail-start"), "./Maildir/", "no-such-logger-here"], env=qenv(tree),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=30)
    assert (out, p.returncode) == (b"", 111)
    assert err.startswith(b"qmail-start: fatal: unable to run no-such-logger-here: ") and err.endswith(b"\n"), err
    assert wait_gone(tree_processes(tree)) == []


def test_exit_111_without_a_queue(procs, world_tmp):
    p = procs.start([program("qmail-start")], env=qenv(world_tmp / "nothing"),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=30)
    assert (out, p.returncode) == (b"", 111)
    assert err == b"qmail-start: fatal: unable to find the queue or qmail's accounts: No such file or directory\n"
