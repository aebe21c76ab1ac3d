"""qmail-qctl -S on deliberately broken queues (each defect class of -s, combinations of them, a change of
the split and of the owners): afterwards -s finds nothing but the damaged messages set aside, and a real
qmail-send delivers every message that was deliverable (qmail-qctl(8))."""

import itertools
import os

import pytest

from mailsystem import MailSystem, assign_users, make_home, make_system_tree
from test_qctl_live import wait_for
from test_qmail_qctl import BROKEN, q, qctl, qput


def damaged_only(out):
    """True if -s output names nothing but damaged messages set aside."""
    return all(b"damaged message set aside" in line for line in out.splitlines())


def repaired(tree):
    """Run -S; assert it ends clean; return its output."""
    code, out, err = qctl(tree, "-S")
    assert (code, err) == (0, b""), (out, err)
    code, check, _ = qctl(tree, "-s")
    assert damaged_only(check), check
    return out


@pytest.mark.parametrize("breakage", BROKEN, ids=[b.__name__[len("broken_"):] for b in BROKEN])
def test_repair_each_defect(tree, breakage):
    n = qput(tree)
    breakage(tree, n)
    assert qctl(tree, "-s")[0] == 100
    out = repaired(tree)
    assert out  # something was done, and said
    assert repaired(tree) == b""  # a second repair finds nothing to do


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")
def test_a_file_renamed_with_its_message_gets_its_owner_fixed_in_the_same_repair(tree):
    # before: the owner defect was reported at mess/B, the inode rename moved the file to mess/A first, and the
    # pass skipped it as "moved already": one -S left `owned by uid 65534` (seen when two victims' numbers in
    # test_repaired_queue_delivers_everything_deliverable happened to be 23 apart, as broken_inode assumes)
    a, b = qput(tree), qput(tree)
    for top in ("todo", "intd"):
        os.rename(q(tree, top, a), q(tree, top, b))
    os.rename(q(tree, "mess", a % 23, a), q(tree, "mess", b % 23, b))  # A's message under B's number
    os.chown(q(tree, "mess", b % 23, b), 65534, 65534)
    repaired(tree)


PAIRS = list(itertools.combinations(range(len(BROKEN)), 2))[::23][:10]


@pytest.mark.parametrize("pair", PAIRS, ids=["+".join(BROKEN[i].__name__[len("broken_"):] for i in p)
                                             for p in PAIRS])
def test_repair_two_defects_at_once(tree, pair):
    victims = [qput(tree) for _ in pair]
    for i, n in zip(pair, victims):
        BROKEN[i](tree, n)
    repaired(tree)


def test_split_change_and_stray_split_directories(tree):
    n = qput(tree)
    big = q(tree, "mess", 40)
    big.mkdir()
    os.rename(q(tree, "mess", n % 23, n), big / str(n))  # as a queue made with a split of 41 had it
    out = repaired(tree)
    assert b"queue/mess/40: removed" in out
    assert q(tree, "mess", n % 23, n).exists() and q(tree, "todo", n).exists()


def test_repair_refuses_a_live_queue(world_tmp, procs):
    tree = make_system_tree(world_tmp / "qmail")
    system = MailSystem(procs, tree, "./Maildir/")
    assert qctl(tree, "-S") == (111, b"", b"qmail-qctl: fatal: qmail-send is running: stop it before "
                                          b"repairing the queue\n")
    assert system.stop() == 0


def test_repaired_queue_delivers_everything_deliverable(world_tmp, procs):
    tree = make_system_tree(world_tmp / "qmail")
    home = make_home(world_tmp, "joe")
    assign_users(tree, [("=", "joe", home, "", "")])
    good = [qput(tree, b"Subject: good %d\n\nx\n" % i) for i in range(6)]
    victims = [qput(tree, b"Subject: victim %d\n\nx\n" % i) for i in range(len(BROKEN))]
    for breakage, n in zip(BROKEN, victims):
        if breakage.__name__ not in ("broken_owner", "broken_dir_owner") or os.geteuid() == 0:
            breakage(tree, n)
    # fixable damage to good messages: wrong owner and mode, wrong split, changed owners of directories
    os.chmod(q(tree, "todo", good[0]), 0o666)
    os.rename(q(tree, "mess", good[1] % 23, good[1]), q(tree, "mess", (good[1] + 5) % 23, good[1]))
    if os.geteuid() == 0:
        os.chown(q(tree, "todo", good[2]), 65534, 65534)
        os.chown(q(tree, "info"), 65534, 65534)
    repaired(tree)
    # every good message, and every victim whose message survived its breakage, is delivered once (listed before
    # qmail-send starts: it may deliver a message, and qmail-clean remove its todo/N, before a listing after)
    deliverable = [n for n in good + victims if q(tree, "todo", n).exists()]
    assert set(good) <= set(deliverable)
    system = MailSystem(procs, tree, "./Maildir/")
    for n in deliverable:
        system.wait_log(b"end msg %d\n" % n)
    new = home / "Maildir" / "new"
    wait_for(lambda: len(list(new.iterdir())) == len(deliverable), "every deliverable message in joe's Maildir")
    subjects = sorted(p.read_bytes().split(b"Subject: ")[1].split(b"\n")[0] for p in new.iterdir())
    assert [s for s in subjects if s.startswith(b"good")] == [b"good %d" % i for i in range(6)]
    assert len(set(subjects)) == len(subjects)
    assert system.stop() == 0
    assert damaged_only(qctl(tree, "-s")[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files away")
def test_repair_after_a_change_of_uids(world_tmp):
    tree = make_system_tree(world_tmp / "qmail")
    n = qput(tree)
    for root, dirs, files in os.walk(q(tree)):  # qmail's users made again: the queue's uids belong to nobody
        for name in dirs + files:
            os.lchown(os.path.join(root, name), 54321, 54321)
    os.lchown(q(tree), 54321, 54321)
    code, out, _ = qctl(tree, "-s")
    assert code == 100 and out.count(b"owned by") > 20
    repaired(tree)
    import pwd
    assert q(tree).stat().st_uid == pwd.getpwnam("qmailq").pw_uid
    assert q(tree, "info", 3).stat().st_uid == pwd.getpwnam("qmails").pw_uid
    assert q(tree, "todo", n).stat().st_uid == pwd.getpwnam("qmailq").pw_uid


def test_repair_of_a_tree_made_before_hold_and_corrupt(tree):
    n = qput(tree)
    for name in ("hold", "corrupt"):
        q(tree, name).rmdir()
    q(tree, "lock", "qctl").rmdir()
    os.rmdir(q(tree, "pid"))
    q(tree, "pid").write_bytes(b"")  # and a file where a directory belongs
    out = repaired(tree)
    assert b"queue/corrupt: made" in out and b"queue/pid: moved to queue/corrupt/stray." in out
    assert q(tree, "todo", n).exists()
