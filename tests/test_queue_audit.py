"""An adversarial audit of queue administration and the queue's own programs, against the installed programs on
a real system: a hostile local user's drops (names that forge log lines, are too long to set aside, or whose
set-aside name is taken; sparse files; envelopes qmail-pickup would refuse), qmail-qctl requests qmail-send
cannot take, and queue entries that are not files (a FIFO or a symbolic link planted by the queue's own users, e.g. a
compromised network server running as qmailq) in front of root's qmail-qctl and qmail-qread (qmail-qctl(8),
qmail-pickup(8), qmail-qread(8))."""

import os
import re
import subprocess

import pytest
from hypothesis import given, strategies as st

from conftest import program, qenv
from pyqmail.lib.queue import maildrop
from test_privilege import account, as_user
from test_qctl_live import Live, qput
from test_qmail_qctl import q, qctl

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: a plain user dropping into a tree with qmail's users")
HANG = 30  # seconds after which a program that should have answered at once is taken as hung (and killed)


@pytest.fixture
def live(world_tmp, procs):
    """A running system whose remote deliveries are deferred."""
    return Live(world_tmp, procs)


def deferred(live, rcpt=b"r@far.example"):
    """Queue one message to a remote recipient and wait for its deferral; return its number."""
    n = qput(live.tree, b"Subject: audit\n\nx\n", rcpts=(rcpt,))
    live.system.wait_log(b"msg %d to remote %s" % (n, rcpt))
    live.system.wait_log(b": deferral:")
    return n


@needs_root
def test_a_drop_name_cannot_forge_qmail_pickups_log_lines(world_tmp):
    from conftest import make_tree
    tree = make_tree(world_tmp / "qmail", "--me", "test.example")
    forged = b"qmail-pickup: ignoring root: not a plain file with one link"  # (no slash: it is a name)
    name = b"evil\n" + forged + b"\r\xff"
    mallory = account("pqmallory")
    as_user(mallory, ["sh", "-c", 'printf junk > "$1"', "sh", os.fsdecode(bytes(tree / "maildrop") + b"/" + name)],
            check=True)
    log = subprocess.run([program("qmail-pickup"), "-1"], env=qenv(tree), capture_output=True, check=True,
                         timeout=HANG).stderr
    # one event, one line: the name's control bytes are shown escaped, never as line breaks
    assert log.count(b"\n") == 1 and forged not in log.split(b"\n")
    assert log == (b"qmail-pickup: malformed maildrop/evil\\x0a%s\\x0d\\xff from uid %d, set aside\n"
                   % (forged.replace(b" ", b"\\x20"), mallory.pw_uid))
    assert os.path.lexists(bytes(tree / "maildrop") + b"/bad." + name)  # set aside, not lost


def test_requests_qmail_send_cannot_take_are_refused_with_one_clear_line(live):
    tree = live.tree
    n = deferred(live)
    # a request beyond qmail-send's 64 KB: was `control socket failed ... connection reset by peer`, exit 111
    many = [a for k in range(1, 15001) for a in ("-h", str(k))]
    for args in (["-d", str(n), "-R", "a" * 70000], many):
        code, out, err = qctl(tree, *args)
        assert (code, out) == (100, b"") and err.count(b"\n") == 1, err
        assert err.startswith(b"qmail-qctl: fatal: request too long: "), err
    # an empty -R was answered `bad request: recipients only for delete` (running) or `no such recipient` (not)
    assert qctl(tree, "-d", str(n), "-R", "") == (100, b"", b"qmail-qctl: fatal: -R needs an address\n")
    assert qctl(tree, "-h", str(n)) == (0, b"#%d: held\n" % n, b"")  # qmail-send still serves; nothing lost
    assert qctl(tree, "-H", str(n)) == (0, b"#%d: released\n" % n, b"")
    assert live.system.stop() == 0
    # the same answers while qmail-send is stopped
    code, out, err = qctl(tree, *many)
    assert (code, out) == (100, b"") and err.startswith(b"qmail-qctl: fatal: request too long: "), err
    assert qctl(tree, "-d", str(n), "-R", "") == (100, b"", b"qmail-qctl: fatal: -R needs an address\n")
    assert q(tree, "remote", n % 23, n).read_bytes() == b"Tr@far.example\0"


def test_entries_that_are_not_files_are_never_followed_nor_waited_on(live, world_tmp):
    tree = live.tree
    n = deferred(live)
    assert live.system.stop() == 0
    channel = q(tree, "local", n % 23, n)  # the message has no local recipient: its local/N is free
    victim = world_tmp / "victim"
    victim.write_bytes(b"Tsecret@elsewhere\0")
    os.utime(victim, (1e9, 1e9))
    channel.symlink_to(victim)
    # root's qmail-qctl with qmail-send stopped set the times of the link's target (-f, -r), and listed it
    assert qctl(tree, "-f")[0] == 0
    assert qctl(tree, "-r", str(n)) == (0, b"#%d: requeued\n" % n, b"")
    assert os.stat(victim).st_mtime == 1e9
    assert q(tree, "remote", n % 23, n).stat().st_mtime > 1e9  # the message's own file was made due
    code, out, err = qctl(tree, "-p")
    assert code == 111 and b"secret" not in out
    assert err == b"qmail-qctl: fatal: unable to read message %d: local/%d/%d is a symbolic link\n" % (
        n, n % 23, n)
    # a FIFO instead: qmail-qctl -p and -m and qmail-qread waited for a writer forever
    channel.unlink()
    os.mkfifo(channel)
    for args in (["-p"], ["-m", str(n)]):
        p = subprocess.run([program("qmail-qctl"), *args], env=qenv(tree), capture_output=True, timeout=HANG)
        assert p.returncode == 111 and p.stderr.endswith(b"local/%d/%d is not a regular file\n" % (n % 23, n))
    p = subprocess.run([program("qmail-qread")], env=qenv(tree), capture_output=True, timeout=HANG)
    assert p.returncode == 0
    assert p.stdout.endswith(b"warning: trouble with #%d: local/%d/%d is not a regular file\n\tremote\t"
                             b"r@far.example\n" % (n, n % 23, n)), p.stdout
    channel.unlink()
    os.mkfifo(q(tree, "mess", n % 23, "x"))  # -m's own read of mess/N: a FIFO renamed into its place
    os.rename(q(tree, "mess", n % 23, "x"), q(tree, "mess", n % 23, n))
    p = subprocess.run([program("qmail-qctl"), "-m", str(n)], env=qenv(tree), capture_output=True, timeout=HANG)
    assert p.returncode == 111 and p.stderr.endswith(b"mess/%d/%d is not a regular file\n" % (n % 23, n))


SPARSE = r'''
import os, sys
head, tail = b"Subject: sparse\n\n", b"end\n"
hole = 32 << 20
envelope = b"Fm@test.example\0Tvictim@test.example\0\0"
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
os.write(fd, head)
os.lseek(fd, hole, os.SEEK_CUR)  # a hole: no blocks, none of the user's quota
size = len(head) + hole + len(tail)
os.write(fd, tail + envelope + b"pqmaildrop1 1 %d\n" % size)
os.close(fd)
'''


@needs_root
def test_pickup_refuses_a_sparse_drop_and_still_queues_good_mail(world_tmp):
    from conftest import make_tree, queued
    from test_privilege import queue_as
    tree = make_tree(world_tmp / "qmail", "--me", "test.example")
    script = world_tmp / "sparse.py"
    script.write_text(SPARSE)
    sparse = tree / "maildrop" / ("5" * 32)
    mallory, alice = account("pqmallory"), account("pqalice")
    as_user(mallory, [os.sys.executable, str(script), str(sparse)], check=True)
    assert os.stat(sparse).st_blocks * 512 < 1 << 20  # 32 MB that cost the user some kilobytes
    assert queue_as(alice, tree, b"Subject: good\n\nhi\n", b"Falice@x\0Tbob@y\0\0").returncode == 0
    log = subprocess.run([program("qmail-pickup"), "-1"], env=qenv(tree), capture_output=True, check=True,
                         timeout=HANG).stderr
    # was queued: 32 MB of the queue's disk written for a file that took the user none
    [(mess, todo)] = queued(tree).values()
    assert mess.endswith(b"Subject: good\n\nhi\n")
    assert b"qmail-pickup: sparse maildrop/%s from uid %d (a file with holes), set aside\n" % (
        b"5" * 32, mallory.pw_uid) in log
    assert (tree / "maildrop" / ("bad." + "5" * 32)).exists()


@needs_root
def test_pickup_sets_aside_long_names_once_instead_of_retrying_them_every_pass(world_tmp):
    from conftest import make_tree, queued
    tree = make_tree(world_tmp / "qmail", "--me", "test.example")
    mallory = account("pqmallory")
    for name in ("a" * 254, "b" * 255):  # bad.<name> (and p<name>) do not fit in a name: ENAMETOOLONG
        as_user(mallory, ["sh", "-c", 'printf junk > "$1"', "sh", str(tree / "maildrop" / name)], check=True)
    first = subprocess.run([program("qmail-pickup"), "-1"], env=qenv(tree), capture_output=True, check=True,
                           timeout=HANG).stderr
    # was: `deferring maildrop/...: File name too long` for each, on every pass, forever
    assert sorted(first.splitlines()) == [b"qmail-pickup: ignoring maildrop/%s: not a drop's name (too long)" % c
                                          for c in (b"a" * 254, b"b" * 255)]
    again = subprocess.run([program("qmail-pickup"), "-1"], env=qenv(tree), capture_output=True, check=True,
                           timeout=HANG).stderr
    assert again == b""
    left = sorted(os.listdir(tree / "maildrop"))
    assert len(left) == 2 and all(n.startswith("bad.") for n in left)  # kept, for the administrator
    assert queued(tree) == {}


@needs_root
def test_pickup_sets_aside_a_drop_whose_bad_name_is_taken_by_a_directory(world_tmp):
    from conftest import make_tree
    tree = make_tree(world_tmp / "qmail", "--me", "test.example")
    mallory = account("pqmallory")
    as_user(mallory, ["sh", "-c", 'mkdir "$1/bad.x" && touch "$1/bad.x/y" && printf junk > "$1/x"', "sh",
                      str(tree / "maildrop")], check=True)
    first = subprocess.run([program("qmail-pickup"), "-1"], env=qenv(tree), capture_output=True, check=True,
                           timeout=HANG).stderr
    # was: the rename onto the directory failed, and the file was read and logged again on every pass
    assert first == b"qmail-pickup: malformed maildrop/x from uid %d, set aside\n" % mallory.pw_uid
    again = subprocess.run([program("qmail-pickup"), "-1"], env=qenv(tree), capture_output=True, check=True,
                           timeout=HANG).stderr
    assert again == b""
    left = sorted(os.listdir(tree / "maildrop"))
    assert left[0] == "bad.x" and len(left) == 2 and left[1].startswith("bad.x.")


@needs_root
def test_an_envelope_pickup_would_refuse_is_never_accepted_into_the_maildrop(world_tmp):
    from conftest import make_tree, queued
    from pyqmail.lib.queue.maildrop import ENVELOPE_MAX
    tree = make_tree(world_tmp / "qmail", "--me", "test.example")
    count = ENVELOPE_MAX // 1000 + 1
    envelope = b"Fa@b\0" + b"".join(b"T%07d%s@y\0" % (k, b"x" * 990) for k in range(count)) + b"\0"
    (world_tmp / "envelope").write_bytes(envelope)  # a file: a pipe holds only 64 KB before the reader runs
    with open(world_tmp / "envelope", "rb") as f:
        done = as_user(account("pqalice"), [program("qmail-queue")], input=b"Subject: many\n\nx\n", stdout=f,
                       env=qenv(tree), timeout=HANG)
    # was 0 (queued), then qmail-pickup set the drop aside as malformed: accepted, never delivered
    assert done.returncode == 31
    assert os.listdir(tree / "maildrop") == []
    log = subprocess.run([program("qmail-pickup"), "-1"], env=qenv(tree), capture_output=True, check=True,
                         timeout=HANG).stderr
    assert log == b"" and queued(tree) == {}


names = st.binary(min_size=1, max_size=255).filter(lambda b: b"\0" not in b and b"/" not in b)


@given(names)
def test_a_shown_name_is_one_unambiguous_word(raw):
    text = maildrop.shown(os.fsdecode(raw))
    assert all(33 <= ord(c) <= 126 for c in text)
    # the escapes can be undone: nothing a user names two files can show alike
    assert re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), text.encode()) == raw


@given(names)
def test_a_bad_name_always_fits_a_directory_entry_with_room_for_a_tail(raw):
    bad = os.fsencode(maildrop.bad_name(os.fsdecode(raw)))
    assert len(bad) + 17 <= 255 and bad.startswith(b"bad.")
    assert bad == b"bad." + raw or len(raw) > maildrop.NAME_MAX


@needs_root
def test_a_bounce_file_planted_as_a_hard_link_is_never_appended_to_nor_given_away(live, world_tmp):
    # before: root's qmail-qctl -d -b opened bounce/N with O_NOFOLLOW only: a hard link planted there by the
    # queue's users (qmail-send's, who may write bounce/) made root append to the target and chown it to them
    tree = live.tree
    n = deferred(live)
    assert live.system.stop() == 0
    victim = world_tmp / "victim"
    victim.write_bytes(b"root:secret\n")
    os.chmod(victim, 0o600)
    os.link(victim, q(tree, "bounce", n))
    code, out, err = qctl(tree, "-d", str(n), "-b")
    assert code != 0 and b"bounce/%d has more than one link" % n in out + err, (code, out, err)
    st = victim.stat()
    assert victim.read_bytes() == b"root:secret\n" and (st.st_uid, st.st_gid) == (0, 0)
    assert q(tree, "remote", n % 23, n).read_bytes() == b"Tr@far.example\0"  # still to do: nothing lost
    os.unlink(q(tree, "bounce", n))  # the administrator removes the planted link: then it works
    assert qctl(tree, "-d", str(n), "-b") == (0, b"#%d: 1 recipient deleted\n" % n, b"")
    assert b"r@far.example" in q(tree, "bounce", n).read_bytes()
