"""An adversarial audit of local delivery: hostile users, hostile senders and tired administrators against the
installed qmail-lspawn (driven over its pipes as qmail-send drives it, with its reused workers) and qmail-local."""

import os
import signal
import subprocess
import time

import pytest

from conftest import program, qenv
from test_spawners import ROOT, dotqmail, home, ids, lspawn, queue_message, users  # noqa: F401 (fixtures)

# the signals CPython itself sets to SIG_IGN at start-up; an ignored disposition survives execve
PYTHON_IGNORES = (signal.SIGPIPE, signal.SIGXFSZ)


def ask(s, n, messid, recipient):
    """Ask qmail-lspawn (s) for delivery n of messid from s@example.org to recipient; return its report."""
    s.send(n, messid, b"s@example.org", recipient)
    return s.report()


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
    assert ask(s, 0, messid, b"joe-sig@test.example") == (0, b"Kdid 0+0+1\n")
    status = (home / "status-sig").read_text()
    assert not ignored(status) & set(PYTHON_IGNORES), status
    with open("/proc/self/status") as f:
        assert blocked(status) == blocked(f.read())  # nothing blocked that qmail-lspawn was not given blocked


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
    # compiled as qmail's qmail-newu does (pyqmail's refuses such a line: qmail-newu(8)); a users/cdb copied
    # from a qmail host holds the same records
    from pyqmail.lib.config import cdbmake, users as assign
    cdbmake.replace(str(users / "users" / "cdb.tmp"), str(users / "users" / "cdb"),
                    assign.cdb_records(assign.parse_assign((users / "users" / "assign").read_bytes())), "open", "write")
    messid, _ = queue_message(users)
    s = lspawn(procs, users, **({"QMAILLOCAL": program("qmail-local")} if override else {}))
    s.send(0, messid, b"s@example.org", b"big@test.example")
    s.send(1, messid, b"s@example.org", b"bigg@test.example")
    assert sorted([s.report(), s.report()]) == [(0, b"ZInternal qmail-lspawn bug.\n"),
                                                (1, b"ZInternal qmail-lspawn bug.\n")]
    assert list((home / "Maildir" / "new").iterdir()) == []


def root_maildir(path):
    """Make a root-owned 0700 Maildir at path (another user's, or the system's) and return it."""
    for sub in ("", "tmp", "new", "cur"):
        (path / sub).mkdir(mode=0o700)
    return path


def plant(home, victims, how):
    """Plant what a hostile user can (and, for the hard link, what a kernel without protected_hardlinks lets
    them) in their own home; return (.qmail-<ext> extension, expected report)."""
    uid, gid = ids()[1:]
    if how in ("tmp-new", "maildir"):
        root_maildir(victims / "Maildir")
        if how == "maildir":
            os.symlink(victims / "Maildir", home / "planted")
        else:
            md = home / "planted"
            md.mkdir(mode=0o700)
            (md / "cur").mkdir(mode=0o700)
            for sub in ("tmp", "new"):
                os.symlink(victims / "Maildir" / sub, md / sub)
            for p in (md, md / "cur"):
                os.chown(p, uid, gid)
        dotqmail(home, "x", "./planted/\n")
        if how == "maildir":
            return b"ZUnable to chdir to maildir. (#4.2.1)\n"
        return b"ZTemporary error on maildir delivery. (#4.3.0)\n"
    victim = victims / "passwd"
    victim.write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    os.chmod(victim, 0o644)
    if how == "mbox-symlink":
        os.symlink(victim, home / "Mailbox")
    elif how == "mbox-hardlink":
        os.link(victim, home / "Mailbox")
    else:  # .qmail-x: a symlink to a file only root reads
        victim.write_bytes(b"./Mailbox\n")
        os.chmod(victim, 0o600)
        os.symlink(victim, home / ".qmail-x")
        return b"ZUnable to open .qmail-x: access denied. (#4.3.0)\n"
    if not how.startswith("dotqmail"):
        dotqmail(home, "x", "./Mailbox\n")
    return b"ZUnable to open ./Mailbox: access denied. (#4.2.1)\n"


def snapshot(path):
    """Return {relative name: bytes or None for a directory} of everything under path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), path)] = None
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, name), path)] = f.read()
    return out


@pytest.mark.skipif(not ROOT, reason="needs root to switch to the recipient's uid")
@pytest.mark.parametrize("how", ["tmp-new", "maildir", "mbox-symlink", "mbox-hardlink", "dotqmail-symlink"])
def test_a_users_planted_links_never_make_a_delivery_write_where_the_user_cannot(procs, users, home, world_tmp,
                                                                                  how):
    """Maildir tmp/ and new/ (or the whole Maildir) symlinked to a root-owned Maildir, an mbox that is a symlink
    or a hard link to a root-owned file, a .qmail symlinked to a file only root reads: the reused worker
    delivers as the user, so each is a temporary failure and the victim is untouched."""
    victims = world_tmp / "victims"
    victims.mkdir(mode=0o755)
    want = plant(home, victims, how)
    before = snapshot(victims)
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    assert ask(s, 0, messid, b"joe-x@test.example") == (0, want)
    assert snapshot(victims) == before
    assert all(os.stat(os.path.join(victims, p)).st_uid == 0 for p in before)


@pytest.mark.skipif(not ROOT, reason="needs root to switch to the recipient's uid")
def test_a_home_swapped_for_a_symlink_after_the_lookup_is_entered_as_the_user(procs, users, home, world_tmp):
    """users/assign names a home in a directory its user controls; the user swaps it for a symlink to a root-owned
    directory with a Maildir between qmail-lspawn's lookup and the delivery: qmail-local enters and writes as the
    user, so the delivery is deferred and nothing is written there."""
    name, uid, gid = ids()
    parent = world_tmp / "parent"
    parent.mkdir(mode=0o755)
    os.chown(parent, uid, gid)
    victim = world_tmp / "victim"
    victim.mkdir(mode=0o755)
    root_maildir(victim / "Maildir")
    (users / "users" / "assign").write_text("=swap:%s:%d:%d:%s/home:::\n.\n" % (name, uid, gid, parent))
    subprocess.run([program("qmail-newu")], env=qenv(users), check=True)
    os.symlink(victim, parent / "home")  # as swapped: the lookup only names the path
    before = snapshot(victim)
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    assert ask(s, 0, messid, b"swap@test.example") == (0, b"ZUnable to chdir to maildir. (#4.2.1)\n")
    assert snapshot(victim) == before



def worker_state_line(home):
    """A .qmail line recording its parent's (the qmail-local process's) limits, nice value, CPU affinity and
    scheduling policy, and the parent's pid, into home/state-$EXT."""
    return ("|{ echo $PPID; prlimit --pid $PPID --raw --noheadings; ps -o ni=,cls= -p $PPID;"
            " taskset -p $PPID | sed 's/.*: //'; } > %s/state-$EXT\n" % home)


@pytest.mark.parametrize("change", [
    "prlimit --pid $PPID --nofile=50:50 --fsize=1000:1000",  # hard limits: the user cannot raise them again
    "prlimit --pid $PPID --nofile=100:",  # a soft limit only
    "renice -n 5 -p $PPID >/dev/null",
    "taskset -pc \"$(taskset -pc $PPID | sed 's/.*: //; s/[-,].*//')\" $PPID >/dev/null",  # its first CPU only
    "chrt -i -p 0 $PPID",
])
def test_a_program_that_changes_its_workers_limits_or_priority_changes_no_later_delivery(procs, users, home,
                                                                                         change):
    """A |program may change its own qmail-local process (the reused worker, its parent, runs as the same user):
    its resource limits (prlimit), nice value, CPU affinity, scheduling policy. qmail forks a fresh qmail-local
    from root's qmail-lspawn for every delivery, so the next delivery starts as qmail-lspawn's child again:
    the worker that was changed is retired, and the next delivery runs in a fresh one."""
    if change.startswith("taskset") and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: no affinity to narrow")
    dotqmail(home, "a", worker_state_line(home))
    dotqmail(home, "b", worker_state_line(home))
    dotqmail(home, "change", "|%s\n" % change)
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    assert ask(s, 0, messid, b"joe-a@test.example") == (0, b"Kdid 0+0+1\n")
    assert ask(s, 1, messid, b"joe-change@test.example") == (1, b"Kdid 0+0+1\n")
    assert ask(s, 2, messid, b"joe-b@test.example") == (2, b"Kdid 0+0+1\n")
    first, after = ((home / ("state-" + x)).read_text().split("\n", 1) for x in "ab")
    assert after[1] == first[1]  # limits, nice, policy, affinity: as the first delivery had them
    assert after[0] != first[0]  # in another worker


def test_a_workers_own_deliveries_leave_it_reused(procs, users, home):
    """Deliveries that change nothing about their worker (a maildir, an mbox, a program) keep it in use."""
    dotqmail(home, "a", "./Maildir/\n./Mailbox\n" + worker_state_line(home))
    dotqmail(home, "b", worker_state_line(home))
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    for n, ext in enumerate("ab"):
        assert ask(s, n, messid, b"joe-%s@test.example" % ext.encode()) == (n, b"Kdid %d+0+1\n" % (2 if ext == "a" else 0))
    assert (home / "state-a").read_text() == (home / "state-b").read_text()


def nice_of(pid):
    """Return the nice value of pid (/proc/<pid>/stat, field 19)."""
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


def test_a_worker_changed_while_idle_defers_the_request_it_gets_and_the_next_runs_fresh(procs, users, home):
    """A program's background process renices the worker after the delivery was answered: the next request
    that worker receives is deferred (`ZTemporary failure in qmail-lspawn.`, retried by qmail-send) rather
    than delivered with what the user set, and the one after runs in a fresh worker."""
    dotqmail(home, "bg", "|echo $PPID > %s/worker; (sleep 0.2; renice -n 7 -p $PPID) </dev/null >/dev/null 2>&1 &\n"
             % home)
    dotqmail(home, "b", worker_state_line(home))
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    assert ask(s, 0, messid, b"joe-bg@test.example") == (0, b"Kdid 0+0+1\n")
    worker = int((home / "worker").read_text())
    deadline = time.time() + 30
    while nice_of(worker) != 7 and time.time() < deadline:
        time.sleep(0.02)
    assert nice_of(worker) == 7
    assert ask(s, 1, messid, b"joe-b@test.example") == (1, b"ZTemporary failure in qmail-lspawn.\n")
    assert not (home / "state-b").exists()
    assert ask(s, 2, messid, b"joe-b@test.example") == (2, b"Kdid 0+0+1\n")
    state = (home / "state-b").read_text().split("\n")
    assert int(state[0]) != worker and int(state[-3].split()[0]) == nice_of(s.p.pid)  # fresh: qmail-lspawn's


def test_a_worker_that_never_ran_a_process_is_not_watched(procs, users, home):
    """The fingerprint is asked only once a worker's delivery has run a process (qmail-lspawn(8), WHAT A WORKER
    CHECKS): a worker that has made only Maildir deliveries and is reniced from outside (by root here, as the
    user could) keeps serving, the change being the user's own as with a running qmail-local."""
    dotqmail(home, "a", "./Maildir/\n")
    dotqmail(home, "b", worker_state_line(home))
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    assert ask(s, 0, messid, b"joe-a@test.example") == (0, b"Kdid 1+0+0\n")
    from mailsystem import children
    [worker] = children(s.p.pid)
    reniced = nice_of(worker) + 3
    os.setpriority(os.PRIO_PROCESS, worker, reniced)
    assert ask(s, 1, messid, b"joe-b@test.example") == (1, b"Kdid 0+0+1\n")
    # (that delivery ran a program: the worker is watched from then on, and may already be retired)
    state = (home / "state-b").read_text().split("\n")
    assert int(state[0]) == worker and int(state[-3].split()[0]) == reniced


@pytest.mark.parametrize("ext", [
    b"$(touch${IFS}%(p)s/1)`touch %(p)s/2`;touch %(p)s/3|touch %(p)s/4&&x\\'\"*",
    b"-n --help -- -x",
    b"a-" * 120 + b"$(touch %(p)s/5)",  # a file name beyond NAME_MAX: ENAMETOOLONG is "no such file", as qmail
])
def test_hostile_envelope_bytes_reach_programs_only_as_values(procs, users, home, world_tmp, ext):
    """Shell metacharacters, option-like words and a very long extension in the recipient, and the same in the
    sender: no shell ever sees them as code nor a program as options; .qmail-default gets them as EXT, DEFAULT,
    SENDER, and Delivered-To and Return-Path stay one line each."""
    pwned = world_tmp / "pwned"
    pwned.mkdir(mode=0o777)
    os.chmod(pwned, 0o777)
    ext = ext % {b"p": bytes(pwned)}
    sender = b"-f $(touch %s/6)`touch %s/7`@x;touch %s/8" % ((bytes(pwned),) * 3)
    dotqmail(home, "default", "|printf '%%s\\n' \"$EXT\" \"$DEFAULT\" \"$SENDER\" \"$RECIPIENT\" > %s/env\n"
             "|preline -f sh -c 'cat > %s/prelined'\n./Maildir/\n" % (home, home))
    recipient = b"joe-" + ext + b"@test.example"
    messid, n = queue_message(users, sender=sender, rcpt=recipient)
    s = lspawn(procs, users)
    s.send(0, messid, sender, recipient)
    assert s.report() == (0, b"Kdid 1+0+2\n")
    assert list(pwned.iterdir()) == []
    assert (home / "env").read_bytes() == b"\n".join([ext, ext, sender, b"joe-" + ext + b"@test.example", b""])
    from pyqmail.lib.rfc822.quote import quote2
    head = b"Return-Path: <" + quote2(sender) + b">\nDelivered-To: " + recipient + b"\n"
    [delivered] = list((home / "Maildir" / "new").iterdir())
    mess = (users / "queue" / "mess" / str(n % 23) / str(n)).read_bytes()
    assert delivered.read_bytes() == head + mess
    assert (home / "prelined").read_bytes() == head + mess


def odd_dotqmail(home, kind):
    """Make home/.qmail-x something other than a plain readable file; return the report expected."""
    path = home / ".qmail-x"
    uid, gid = ids()[1:]
    if kind == "directory":
        path.mkdir(mode=0o755)
    elif kind == "fifo":
        os.mkfifo(path, 0o644)  # nobody writes it: opening it must not wait
    elif kind == "dangling symlink":
        os.symlink(home / "nowhere", path)
    elif kind == "unreadable":
        path.write_text("./Maildir/\n")
        os.chmod(path, 0)
    elif kind == "too big":  # 1 MiB and a byte: refused, not read without bound
        path.write_bytes(b"#" * (1 << 20) + b"\n")
        os.chmod(path, 0o644)
    if kind != "dangling symlink":
        os.lchown(path, uid, gid)
    return {
        "unreadable": b"ZUnable to open .qmail-x: access denied. (#4.3.0)\n",
        "too big": b"ZUnable to read .qmail-x: file too big. (#4.3.0)\n",
    }.get(kind, b"Kdefault\ndid 0+0+1\n")  # not a regular file: the next name, .qmail-default, as qmail


@pytest.mark.parametrize("kind", ["directory", "fifo", "dangling symlink", "unreadable", "too big"])
def test_a_dot_qmail_that_is_no_plain_readable_file(procs, users, home, kind):
    """A .qmail-x that is a directory, a FIFO nobody writes, a dangling symlink (each: not there, so
    .qmail-default takes the message), unreadable (deferred) or over 1 MiB (deferred, never read whole)."""
    want = odd_dotqmail(home, kind)
    dotqmail(home, "default", "|echo default\n")
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    assert ask(s, 0, messid, b"joe-x@test.example") == (0, want)


def test_a_program_that_reads_a_byte_and_closes_its_stdin_leaves_the_message_whole_for_the_next_line(
        procs, users, home):
    """A |program that reads one byte, closes its stdin and exits 0 succeeds (its stdin is the message file, not a
    pipe: no SIGPIPE anywhere), and the next line is handed the message from its start again. Under preline the
    command's stdin is a pipe: one that leaves before the end of a message larger than the pipe holds defers the
    delivery (`preline: fatal: unable to copy input: broken pipe`, exit 111; qmail's preline dies of the SIGPIPE
    its qmail-local left at the default, which qmail-local also reports as temporary)."""
    from conftest import queue_message as queue_raw, queued
    dotqmail(home, "a", "|head -c 1 > %s/first; exec 0<&-; exit 0\n./Maildir/\n" % home)
    dotqmail(home, "p", "|preline head -c 1 > /dev/null\n")
    big = b"Subject: big\n\n" + b"x" * 99 + b"\n" * 1000 + b"y" * 300000 + b"\n"
    assert queue_raw(users, big, b"Fs@example.org\0Tjoe-a@test.example\0\0") == 0
    n = max(queued(users))
    messid = b"%d/%d" % (n % 23, n)
    s = lspawn(procs, users)
    assert ask(s, 0, messid, b"joe-a@test.example") == (0, b"Kdid 1+0+1\n")
    assert (home / "first").read_bytes() == b"R"  # the Received line qmail-queue wrote first
    [delivered] = list((home / "Maildir" / "new").iterdir())
    assert delivered.read_bytes().endswith(big)
    assert ask(s, 1, messid, b"joe-p@test.example") == (1, b"Zpreline: fatal: unable to copy input: broken pipe\n")


def test_a_worker_that_fails_between_deliveries_defers_with_qmail_lspawns_report(procs, users, home):
    """A program leaves its worker no descriptor to spare (prlimit --nofile=3): the worker cannot reopen
    /dev/null after the delivery and dies of the exception. That is a Python exception in qmail-lspawn's child,
    reported as 118 (`ZTemporary failure in qmail-lspawn.`, qmail-lspawn(8)), not `Z` with whatever output came
    before; and the next delivery runs in a fresh worker."""
    dotqmail(home, "nofd", "|prlimit --pid $PPID --nofile=3:3\n")
    messid, _ = queue_message(users)
    s = lspawn(procs, users)
    assert ask(s, 0, messid, b"joe-nofd@test.example") == (0, b"ZTemporary failure in qmail-lspawn.\n")
    assert ask(s, 1, messid, b"joe@test.example") == (1, b"Kdid 1+0+0\n")


def test_a_whole_system_delivers_to_a_user_whose_program_shrank_its_worker(procs, world_tmp):
    """qmail-start, qmail-send, qmail-lspawn: a |program line sets a hard file size limit of one block on its
    qmail-local process. Under qmail that process ends with the delivery; here it is a reused worker, which
    must be retired, so the user's next message (larger than a block) reaches the Maildir at once instead of
    failing with EFBIG in the same worker until it leaves."""
    from test_e2e_delivery import FAKE_REMOTE, dotqmail as e2e_dotqmail, maildir, send, start, stop, users as e2e_users
    tree = __import__("mailsystem").make_system_tree(world_tmp / "qmail")
    fake = world_tmp / FAKE_REMOTE
    fake.write_text("#!/bin/sh\ncat >/dev/null\nprintf 'Zno remote deliveries.\\n\\0'\n")
    fake.chmod(0o755)
    homes = e2e_users(tree, world_tmp, "joe")
    e2e_dotqmail(homes["joe"], "shrink", "|prlimit --pid $PPID --fsize=1:1\n")
    system = start(procs, tree)
    send(tree, [b"joe-shrink@test.example"])
    system.wait_log(b"delivery 1: success: did_0+0+1/\n")
    big = b"Subject: big\n\n" + b"x" * 5000 + b"\n"
    send(tree, [b"joe@test.example"], message=big)
    system.wait_log(b"delivery 2: success: did_1+0+0/\n")
    [delivered] = maildir(homes["joe"])
    assert delivered.endswith(big)
    assert stop(system) == 0


def state_of(pid):
    """Return the state letter of pid (/proc/<pid>/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_a_worker_that_cannot_become_its_user_reports_why_however_late_the_request_comes():
    """A worker whose switch to the user fails (setuid refused: EAGAIN at the user's process limit, a uid out
    of range) exits with qmail-lspawn's code for it. The spawner sends the first request right after the fork;
    if the worker left before the request arrived, the send failed and the delivery was reported as
    `Zqmail-spawn unable to fork.` instead, depending on who ran first. The worker takes its first request
    before it leaves, so the report is the code's, always."""
    from pyqmail.lib.spawn import localworkers, spawnproto
    from pyqmail.lib.util.exits import QLX_USAGE
    from test_delivery_fastpaths import stop_worker
    workers = localworkers.LocalWorkers(lambda uid, gid: QLX_USAGE, lambda argv, extra: 0, idle_code=118)
    w = workers.fork((os.getuid(), os.getgid()))
    try:
        deadline = time.time() + 30  # the spawner is slow this time: the worker has done all it can first
        while time.time() < deadline and state_of(w.pid) not in ("S", "Z"):  # waiting for it, or gone
            time.sleep(0.02)
        r, wr = os.pipe()
        sent = workers.send(w, [b"--", b"joe"], r, wr)
        os.close(r)
        os.close(wr)
        assert sent
        _, status = os.waitpid(w.pid, 0)
        w.sock.settimeout(10)
        assert workers.answer(w) is None
        assert spawnproto.local_report(status, b"") == b"ZInternal qmail-lspawn bug.\n"
    finally:
        stop_worker(w)


def test_a_fifo_planted_as_the_message_is_refused_not_waited_on(procs, users):  # noqa: F811
    # qmail's spawn.c opens the message with O_NDELAY; a blocking open held qmail-lspawn (root, every local
    # delivery) for ever on a FIFO the queue's owner put in mess/
    messid, _ = queue_message(users)
    mess = users / "queue" / "mess" / os.fsdecode(messid)
    st = mess.stat()
    mess.unlink()
    os.mkfifo(mess)
    os.chown(mess, st.st_uid, st.st_gid)
    s = lspawn(procs, users)
    s.send(0, messid, b"s@example.org", b"joe@test.example")
    assert s.report(timeout=20) == (0, b"ZSorry, message has wrong type. (#4.3.5)\n")
    assert s.finish()[0] == 0


@pytest.mark.skipif(not ROOT, reason="needs root: a mount namespace whose /etc/passwd is a FIFO")
def test_a_passwd_lookup_that_hangs_defers_its_delivery_and_does_not_stop_the_others(procs, users, home, world_tmp):
    # before: with reused workers qmail-lspawn ran the passwd rules in its own loop, so one lookup that did not
    # return (an NSS source or NFS home that hangs; here /etc/passwd is a FIFO without a writer) held up every
    # local delivery for ever; now helper processes ask them while the loop goes on, and after the deadline the
    # delivery is deferred (tests/test_h4_passwd_hang.py: the others are reported before it)
    from conftest import need
    from pyqmail.lib.spawn.passwdlookup import TIMEOUT
    from test_spawners import Spawner
    need("unshare", "nsenter", "mount", "umount")
    messid, _ = queue_message(users)
    s = Spawner(procs, ["unshare", "-m", "--propagation", "private", program("qmail-lspawn"), "./Maildir/"],
                qenv(users))
    fifo = world_tmp / "passwd.fifo"
    os.mkfifo(fifo)
    ns = ["nsenter", "-t", str(s.p.pid), "-m"]
    subprocess.run(ns + ["mount", "--bind", str(fifo), "/etc/passwd"], check=True)
    try:
        start = time.time()
        s.send(1, messid, b"s@example.org", b"nosuchuser@test.example")  # not in users/cdb: the passwd rules
        s.send(2, messid, b"s@example.org", b"joe@test.example")  # users/cdb: no passwd lookup
        reports = dict([s.report(timeout=TIMEOUT + 20), s.report(timeout=TIMEOUT + 20)])
        assert reports == {1: b"ZTemporary failure in qmail-lspawn.\n", 2: b"Kdid 1+0+0\n"}
        assert time.time() - start < TIMEOUT + 15
        assert len(list((home / "Maildir" / "new").iterdir())) == 1
        s.send(3, messid, b"s@example.org", b"nosuchuser@test.example")  # a new helper, stuck again: deferred
        assert s.report(timeout=TIMEOUT + 20) == (3, b"ZTemporary failure in qmail-lspawn.\n")
    finally:
        subprocess.run(ns + ["umount", "-l", "/etc/passwd"], check=True)
    s.send(4, messid, b"s@example.org", b"joe@test.example")
    assert s.report() == (4, b"Kdid 1+0+0\n")
    assert s.finish()[0] == 0
