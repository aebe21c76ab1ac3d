"""The privilege boundary (docs/qmail-queue.8.md, README.md): run as root, with qmail's users and a plain user."""

import os
import pwd
import stat
import subprocess

import pytest

from conftest import make_tree, program, qenv, queued

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create users and switch uids")


def account(name):
    """Return the pwd entry of a plain test account outside the qmail group, creating it."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True)
        return pwd.getpwnam(name)


def as_user(pw, argv, **kw):
    """Run argv as the account pw (real and effective uid), the way a login shell would."""
    def drop():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(argv, preexec_fn=drop, **kw)


def queue_as(pw, tree, message, envelope):
    """Run the installed qmail-queue as pw with the envelope on fd 1; return the CompletedProcess."""
    r, w = os.pipe()
    os.write(w, envelope)
    os.close(w)
    try:
        return as_user(pw, [program("qmail-queue")], input=message, stdout=r, env=qenv(tree))
    finally:
        os.close(r)


@pytest.fixture
def system_tree(world_tmp):
    """A tree set up as root: qmail's users, owners and modes."""
    return make_tree(world_tmp / "qmail", "--me", "test.example")


def test_root_tree_has_qmails_owners_and_modes(system_tree):
    q = system_tree / "queue"
    expect = {"": ("qmailq", 0o750), "pid": ("qmailq", 0o700), "mess": ("qmailq", 0o750),
              "mess/22": ("qmailq", 0o750), "intd": ("qmailq", 0o700), "todo": ("qmailq", 0o750),
              "info/0": ("qmails", 0o700), "local/5": ("qmails", 0o700), "remote/22": ("qmails", 0o700),
              "bounce": ("qmails", 0o700), "lock": ("qmailq", 0o750), "lock/sendmutex": ("qmails", 0o600),
              "lock/tcpto": ("qmailr", 0o644), "lock/trigger": ("qmails", 0o622)}
    for name, (owner, mode) in expect.items():
        st = os.lstat(q / name)
        assert (pwd.getpwuid(st.st_uid).pw_name, stat.S_IMODE(st.st_mode)) == (owner, mode), name
        assert st.st_gid == os.stat(q).st_gid  # group qmail throughout
    assert stat.S_ISFIFO(os.lstat(q / "lock" / "trigger").st_mode)
    assert os.path.getsize(q / "lock" / "tcpto") == 1024


def test_root_injection_runs_as_qmailq_and_records_uid_0(system_tree):
    r, w = os.pipe()
    os.write(w, b"Froot@x\0Tu@y\0\0")
    os.close(w)
    done = subprocess.run([program("qmail-queue")], input=b"hi\n", stdout=r, env=qenv(system_tree))
    os.close(r)
    assert done.returncode == 0
    [(n, (mess, todo))] = queued(system_tree).items()
    assert todo.startswith(b"u0\0")
    messfile = system_tree / "queue" / "mess" / str(n % 23) / str(n)
    assert pwd.getpwuid(messfile.stat().st_uid).pw_name == "qmailq"


def test_plain_user_queues_through_maildrop_and_pickup(system_tree):
    alice = account("pqalice")
    done = queue_as(alice, system_tree, b"Subject: from alice\n\nhi\n", b"Falice@x\0Tbob@y\0\0")
    assert done.returncode == 0, done.stderr
    assert queued(system_tree) == {}  # not in the queue yet: in the maildrop, fsynced
    drops = list((system_tree / "maildrop").iterdir())
    assert len(drops) == 1 and drops[0].stat().st_uid == alice.pw_uid
    assert stat.S_IMODE(drops[0].stat().st_mode) == 0o640
    subprocess.run([program("qmail-pickup"), "-1"], env=qenv(system_tree), check=True, capture_output=True)
    [(mess, todo)] = queued(system_tree).values()
    assert todo.startswith(b"u%d\0p" % alice.pw_uid) and todo.endswith(b"\0Falice@x\0Tbob@y\0")
    assert b"invoked by uid %d)" % alice.pw_uid in mess.split(b"\n", 1)[0]
    assert mess.endswith(b"Subject: from alice\n\nhi\n")
    assert list((system_tree / "maildrop").iterdir()) == []


def test_plain_user_cannot_read_or_alter_queued_or_dropped_mail(system_tree):
    alice, mallory = account("pqalice"), account("pqmallory")
    assert queue_as(alice, system_tree, b"secret\n", b"Fa\0Tb\0\0").returncode == 0
    [drop] = (system_tree / "maildrop").iterdir()
    assert as_user(mallory, ["cat", str(drop)]).returncode != 0
    assert as_user(mallory, ["rm", "-f", str(drop)]).returncode != 0 and drop.exists()  # sticky
    assert as_user(mallory, ["mv", str(drop), str(drop) + "x"]).returncode != 0
    subprocess.run([program("qmail-pickup"), "-1"], env=qenv(system_tree), check=True, capture_output=True)
    [n] = queued(system_tree)
    q = system_tree / "queue"
    for path in (q / "mess" / str(n % 23) / str(n), q / "todo" / str(n), q / "todo", q / "mess"):
        assert as_user(mallory, ["cat", str(path)]).returncode != 0
        assert as_user(mallory, ["ls", str(path)]).returncode != 0
    assert as_user(mallory, ["touch", str(q / "todo" / "1")]).returncode != 0


def test_pickup_refuses_a_hard_link_to_another_users_file(system_tree):
    alice = account("pqalice")
    assert queue_as(alice, system_tree, b"mine\n", b"Fa\0Tb\0\0").returncode == 0
    [drop] = (system_tree / "maildrop").iterdir()
    os.link(drop, system_tree / "maildrop" / ("0" * 32))  # what protected_hardlinks stops users doing
    out = subprocess.run([program("qmail-pickup"), "-1"], env=qenv(system_tree), capture_output=True)
    assert b"not a plain file with one link" in out.stderr
    assert queued(system_tree) == {}


def test_malformed_drop_is_set_aside_not_queued(system_tree):
    mallory = account("pqmallory")
    junk = system_tree / "maildrop" / ("f" * 32)
    as_user(mallory, ["sh", "-c", "printf 'no trailer here' > %s" % junk], check=True)
    out = subprocess.run([program("qmail-pickup"), "-1"], env=qenv(system_tree), capture_output=True)
    assert b"malformed" in out.stderr
    assert queued(system_tree) == {}
    assert (system_tree / "maildrop" / ("bad." + "f" * 32)).exists()


def test_pickup_daemon_wakes_on_a_drop(system_tree, procs):
    alice = account("pqalice")
    daemon = procs.start([program("qmail-pickup")], env=qenv(system_tree), stderr=subprocess.PIPE)
    import time
    time.sleep(0.5)  # (most likely waiting by then; if not, its first sweep takes the drop: no false failure)
    assert queue_as(alice, system_tree, b"wake\n", b"Fa\0Tb\0\0").returncode == 0
    deadline = time.time() + 30
    while not queued(system_tree) and time.time() < deadline:
        time.sleep(0.05)
    assert len(queued(system_tree)) == 1
    procs.stop(daemon, timeout=30)  # (SIGKILL after the timeout: no 0)
    assert daemon.returncode == 0
