"""qmail-qctl on real queues: messages queued by the real qmail-queue, some delivered or deferred by a real
qmail-send run, some left in todo/; -s on deliberately broken queues, one per defect class (qmail-qctl(8))."""

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from conftest import program, qenv, queue_message, queued
from mailsystem import MailSystem, assign_users, make_home, make_system_tree
from pyqmail.lib.queue import qcheck, qlist, qshape

OLD = 40 * 3600  # older than qmail's 36 hours


def qctl(tree, *args):
    """Run the installed qmail-qctl on tree; return (exit code, stdout, stderr)."""
    p = subprocess.run([program("qmail-qctl"), *args], env=qenv(tree), capture_output=True)
    return p.returncode, p.stdout, p.stderr


def q(tree, *parts):
    """A path under tree's queue/."""
    return Path(tree) / "queue" / Path(*[str(p) for p in parts])


def qput(tree, message=b"Subject: t\n\nbody\n", sender=b"me@test.example", rcpts=(b"joe@test.example",)):
    """Queue one message with the real qmail-queue; return its number."""
    before = set(queued(tree))
    env = b"F" + sender + b"\0" + b"".join(b"T" + r + b"\0" for r in rcpts) + b"\0"
    assert queue_message(tree, message, env) == 0
    [n] = set(queued(tree)) - before
    return n


def qput_running(system, tree, message, sender=b"me@test.example", rcpts=(b"joe@test.example",)):
    """Queue one message while qmail-send runs; return its number from qmail-send's `new msg N` line (todo/N
    may be gone before a listing sees it)."""
    seen = system.log().count(b"new msg ")
    env = b"F" + sender + b"\0" + b"".join(b"T" + r + b"\0" for r in rcpts) + b"\0"
    assert queue_message(tree, message, env) == 0
    log = system.wait_log(b"new msg ", count=seen + 1)
    return int(re.findall(rb"new msg (\d+)", log)[seen])


def age(path, seconds):
    """Make a file look seconds old (mtime and atime)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


# --- a real queue: delivered by qmail-send, deferred, and still in todo/ ----------------------------------------

@pytest.fixture
def live(world_tmp, procs):
    """A tree as installed (qmail's accounts as root): one message delivered locally and one deferred remotely
    by a real qmail-send run (a qmail-remote stand-in accepts bob's, defers the rest), then two left in todo/."""
    tree = make_system_tree(world_tmp / "qmail")
    fake = world_tmp / "fake-remote"
    fake.write_text("#!/bin/sh\ncat >/dev/null\ncase $3 in bob@*) printf 'rok\\n\\0Kaccepted.\\n\\0';;\n"
                    "*) printf 'Zno remote deliveries here.\\n\\0';; esac\n")
    fake.chmod(0o755)
    assign_users(tree, [("=", "joe", make_home(world_tmp, "joe"), "", "")])
    system = MailSystem(procs, tree, "./Maildir/", env={"QMAILREMOTE": fake})
    delivered = qput_running(system, tree, b"Subject: one\n\nlocal\n", rcpts=(b"joe@test.example",))
    system.wait_log(b"end msg %d\n" % delivered)
    deferred = qput_running(system, tree, b"Subject: two\n\nremote\n", sender=b"a@b.example",
                            rcpts=(b"joe@test.example", b"bob@far.example", b"eve@far.example"))
    system.wait_log(b": deferral:", count=1)
    system.wait_log(b": success:", count=3)
    assert system.stop() == 0
    new1 = qput(tree, b"Subject: three\n\nnew\n", sender=b"c@d.example", rcpts=(b"x@near.example",))
    new2 = qput(tree, b"Subject: four\n\nnew\n", sender=b"", rcpts=(b"y@near.example", b"z@far.example"))
    return tree, delivered, deferred, new1, new2


def test_listing_of_a_real_queue(live):
    tree, delivered, deferred, new1, new2 = live
    code, out, err = qctl(tree, "-p")
    assert (code, err) == (0, b"")
    # the delivered message is gone (its number may be the deferred one's: qmail-clean's pool reuses inodes)
    head = rb"#%d  \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT  \d+  \d+s  <%s>  %s\n"
    # joe was delivered: local/n, all D, was removed; bob was delivered, eve deferred
    assert re.search(head % (deferred, b"a@b.example", b"queued") +
                     b"\tdone\tremote\tbob@far.example\n\ttodo\tremote\teve@far.example\n", out)
    assert re.search(head % (new1, b"c@d.example", b"new") + b"\ttodo\tnew\tx@near.example\n", out)
    assert re.search(head % (new2, b"", b"new") + b"\ttodo\tnew\ty@near.example\n\ttodo\tnew\tz@far.example\n",
                     out)
    assert out.endswith(b"3 messages, 5 recipients, 4 to do\n")


def test_listing_filters(live):
    tree, delivered, deferred, new1, new2 = live
    assert qctl(tree, "-p", "-F", "A@B.example")[1].startswith(b"#%d " % deferred)
    assert qctl(tree, "-p", "-F", "<>")[1].startswith(b"#%d " % new2)
    assert qctl(tree, "-p", "-T", "x@near.example")[1].startswith(b"#%d " % new1)
    code, out, _ = qctl(tree, "-p", "-o", "far.example")
    assert re.findall(rb"^#(\d+)", out, re.M) == [str(n).encode() for n in sorted((deferred, new2))]
    assert qctl(tree, "-p", "-o", "far.example", "-F", "c@d.example")[1] == b"0 messages, 0 recipients, 0 to do\n"


def test_show_one_message(live):
    tree, delivered, deferred, new1, new2 = live
    code, out, err = qctl(tree, "-m", str(deferred))
    assert (code, err) == (0, b"")
    envelope, message = out.split(b"\n\n", 1)
    assert envelope.startswith(b"#%d " % deferred) and b"\ttodo\tremote\teve@far.example" in envelope
    assert message == q(tree, "mess", deferred % 23, deferred).read_bytes()
    assert message.startswith(b"Received: (qmail ") and message.endswith(b"Subject: two\n\nremote\n")
    absent = max(deferred, new1, new2) + 1
    assert qctl(tree, "-m", str(absent)) == (100, b"", b"qmail-qctl: fatal: no message %d in the queue\n" % absent)
    assert qctl(tree, "-m", "x1")[0] == 100


def test_shape_of_a_real_queue(live):
    tree, *_ = live
    code, out, err = qctl(tree, "-q")
    assert (code, err) == (0, b"")
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == [b"T"] + [label.encode() for label in qshape.LABELS]
    assert lines[1] == [b"TOTAL", b"4", b"4"] + [b"0"] * 9
    assert lines[2] == [b"far.example", b"2", b"2"] + [b"0"] * 9
    assert lines[3] == [b"near.example", b"2", b"2"] + [b"0"] * 9
    assert qctl(tree, "-q", "deferred") == qctl(tree, "-q", "active")  # qmail has no deferred directory
    assert [line.split()[:2] for line in qctl(tree, "-q", "active")[1].splitlines()[1:]] == [
        [b"TOTAL", b"1"], [b"far.example", b"1"]]
    assert [line.split()[:2] for line in qctl(tree, "-q", "new")[1].splitlines()[1:]] == [
        [b"TOTAL", b"3"], [b"near.example", b"2"], [b"far.example", b"1"]]
    assert qctl(tree, "-q", "hold")[1].splitlines()[1].split()[:2] == [b"TOTAL", b"0"]
    assert qctl(tree, "-q", "incoming")[0] == 100


def test_check_of_a_real_queue_is_clean(live):
    tree, *_ = live
    assert qctl(tree, "-s") == (0, b"", b"")


def test_usage_and_unimplemented(tree):
    assert qctl(tree)[0] == 100
    assert qctl(tree, "-p", "-s")[0] == 100
    assert qctl(tree, "-x")[0] == 100
    for args in (["-h"], ["-h", "5", "-H", "6"], ["-r", "5", "-b"], ["-h", "5", "-p"], ["-h", "ALL", "-h", "5"]):
        assert qctl(tree, *args)[0] == 100, args
    assert qctl(tree, "-h", "x5")[0] == 100


def test_missing_queue_is_trouble(world_tmp):
    for args in (("-s",), ("-p",), ("-q",)):
        code, out, err = qctl(world_tmp / "absent", *args)
        assert code == 111 and err.startswith(b"qmail-qctl: fatal: unable to chdir")


def test_unreadable_file_is_trouble(tree):
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    n = qput(tree)
    os.chmod(q(tree, "todo", n), 0)
    assert qctl(tree, "-p")[0] == 111


# --- broken queues: one per defect class, each reported with its file named -------------------------------------

def broken_split(tree, n):
    p = q(tree, "mess", n % 23, n)
    wrong = q(tree, "mess", (n + 1) % 23, n)
    os.rename(p, wrong)
    q(tree, "todo", n).unlink()
    q(tree, "intd", n).unlink()
    return "mess/%d/%d" % ((n + 1) % 23, n), "wrong split directory"


def broken_inode(tree, n):
    m = n + 23  # same split directory, another number
    os.rename(q(tree, "mess", n % 23, n), q(tree, "mess", m % 23, m))
    os.rename(q(tree, "todo", n), q(tree, "todo", m))
    os.rename(q(tree, "intd", n), q(tree, "intd", m))
    return "mess/%d/%d" % (m % 23, m), "but its inode is %d" % n


def broken_info_without_mess(tree, n):
    q(tree, "info", n % 23, n).write_bytes(b"Fa@b\0")
    q(tree, "mess", n % 23, n).unlink()
    q(tree, "todo", n).unlink()
    q(tree, "intd", n).unlink()
    return "info/%d/%d" % (n % 23, n), "info without mess"


def broken_local_without_info(tree, n):
    q(tree, "local", n % 23, n).write_bytes(b"Ta@test.example\0")
    q(tree, "todo", n).unlink()
    q(tree, "intd", n).unlink()
    return "local/%d/%d" % (n % 23, n), "local without info"


def broken_remote_without_info(tree, n):
    q(tree, "remote", n % 23, n).write_bytes(b"Ta@far.example\0")
    q(tree, "todo", n).unlink()
    q(tree, "intd", n).unlink()
    return "remote/%d/%d" % (n % 23, n), "remote without info"


def broken_todo_without_mess(tree, n):
    q(tree, "mess", n % 23, n).unlink()
    q(tree, "intd", n).unlink()
    return "todo/%d" % n, "todo without mess"


def broken_old_intd(tree, n):
    q(tree, "todo", n).unlink()
    age(q(tree, "intd", n), OLD)
    age(q(tree, "mess", n % 23, n), 60)
    return "intd/%d" % n, "intd without todo, older than 36 hours"


def broken_orphan_mess(tree, n):
    q(tree, "todo", n).unlink()
    q(tree, "intd", n).unlink()
    age(q(tree, "mess", n % 23, n), OLD)
    return "mess/%d/%d" % (n % 23, n), "mess without todo or info, older than 36 hours"


def broken_bounce_without_info(tree, n):
    q(tree, "bounce", n).write_bytes(b"a@b:\nno.\n\n")
    return "bounce/%d" % n, "bounce without info"


def broken_stray_name(tree, n):
    q(tree, "todo", "junk").write_bytes(b"")
    return "todo/junk", "stray name"


def broken_stray_split(tree, n):
    q(tree, "info", "23").mkdir()
    return "info/23", "only split directories"


def broken_trigger(tree, n):
    q(tree, "lock", "trigger").unlink()
    q(tree, "lock", "trigger").write_bytes(b"")
    return "lock/trigger", "is a file, not a FIFO"


def broken_dir_mode(tree, n):
    os.chmod(q(tree, "mess", 7), 0o777)
    return "mess/7", "mode 0777, not 0750"


def broken_missing_dir(tree, n):
    used = {int(m.name) % 23 for d in q(tree, "mess").iterdir() for m in d.iterdir()}  # later breakages plant there
    i = next(i for i in range(23) if i not in used and not any(q(tree, "remote", i).iterdir()))
    q(tree, "remote", i).rmdir()
    return "remote/%d" % i, "missing"


def broken_owner(tree, n):
    if os.geteuid() != 0:
        pytest.skip("only root can give a file away")
    os.chown(q(tree, "mess", n % 23, n), 65534, 65534)
    return "mess/%d/%d" % (n % 23, n), "owned by uid 65534"


def broken_dir_owner(tree, n):
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory away")
    os.chown(q(tree, "todo"), 65534, 65534)
    return "todo", "owned by 65534:65534"


def broken_todo_records(tree, n):
    q(tree, "todo", n).write_bytes(b"u0\0p1\0Fa@b\0Xodd\0Ta@b\0")
    return "todo/%d" % n, "not u, p, F or T"


def broken_channel_records(tree, n):
    q(tree, "info", n % 23, n).write_bytes(b"Fa@b\0")
    q(tree, "local", n % 23, n).write_bytes(b"Ta@test.example\0Qb@test.example\0")
    q(tree, "todo", n).unlink()
    q(tree, "intd", n).unlink()
    return "local/%d/%d" % (n % 23, n), "not T (to do) or D (done)"


def broken_unfinished_record(tree, n):
    q(tree, "info", n % 23, n).write_bytes(b"Fa@b\0")
    q(tree, "remote", n % 23, n).write_bytes(b"Ta@far.example\0Tb@far")
    q(tree, "todo", n).unlink()
    q(tree, "intd", n).unlink()
    return "remote/%d/%d" % (n % 23, n), "unfinished"


def broken_not_a_file(tree, n):
    q(tree, "todo", n).unlink()
    q(tree, "todo", n).mkdir()
    return "todo/%d" % n, "not a regular file"


def broken_writable_file(tree, n):
    os.chmod(q(tree, "todo", n), 0o666)
    return "todo/%d" % n, "writable by group or others"


def broken_old_pid(tree, n):
    p = q(tree, "pid", "123.456.1")
    p.write_bytes(b"")
    age(p, OLD)
    return "pid/123.456.1", "older than 36 hours"


def broken_stray_top(tree, n):
    q(tree, "junk").write_bytes(b"")
    return "junk", "stray name in queue/"


BROKEN = [broken_split, broken_inode, broken_info_without_mess, broken_local_without_info,
          broken_remote_without_info, broken_todo_without_mess, broken_old_intd, broken_orphan_mess,
          broken_bounce_without_info, broken_stray_name, broken_stray_split, broken_trigger, broken_dir_mode,
          broken_missing_dir, broken_owner, broken_dir_owner, broken_todo_records, broken_channel_records,
          broken_unfinished_record, broken_not_a_file, broken_writable_file, broken_old_pid, broken_stray_top]


@pytest.mark.parametrize("breakage", BROKEN, ids=[b.__name__[len("broken_"):] for b in BROKEN])
def test_check_reports_each_defect(tree, breakage):
    n = qput(tree)
    assert qctl(tree, "-s") == (0, b"", b"")
    path, what = breakage(tree, n)
    code, out, err = qctl(tree, "-s")
    assert (code, err) == (100, b"")
    lines = out.decode().splitlines()
    assert any(line.startswith("queue/%s: " % path) and what in line for line in lines), out


def test_check_young_intd_and_mess_are_injections_in_progress(tree):
    n = qput(tree)
    q(tree, "todo", n).unlink()  # S3: qmail-queue has not committed yet
    assert qctl(tree, "-s") == (0, b"", b"")
    q(tree, "intd", n).unlink()  # S2
    assert qctl(tree, "-s") == (0, b"", b"")


# --- property tests of the pure parts ---------------------------------------------------------------------------

@given(st.floats(min_value=-1e6, max_value=1e7, allow_nan=False))
def test_bucket_is_the_first_limit_above_the_age(seconds):
    i = qshape.bucket(seconds)
    minutes = seconds / 60
    limits = [0] + list(qshape.BUCKETS) + [float("inf")]
    assert 0 <= i < len(qshape.LABELS)
    assert (i == 0 or minutes >= limits[i]) and minutes < limits[i + 1]


entry = st.tuples(st.sampled_from([b"a.example", b"b.example", b"(none)"]), st.floats(0, 2e5))


@given(st.lists(entry, max_size=30))
def test_shape_counts_every_entry_once(entries):
    rows = qshape.shape(entries)
    table = qshape.table_rows(rows)
    assert table[0][0] == b"TOTAL" and table[0][1] == len(entries)
    assert sum(table[0][2]) == len(entries)
    for name, total, columns in table[1:]:
        assert total == sum(columns) == sum(1 for d, _ in entries if d == name)
    assert [t for _, t, _ in table[1:]] == sorted((t for _, t, _ in table[1:]), reverse=True)
    text = qshape.format_table(rows).splitlines()
    assert len(text) == len(table) + 1
    assert all(len(line.split()) == len(qshape.LABELS) + 2 for line in text[1:])


address = st.sampled_from([b"a@x.example", b"B@X.example", b"c@y.example", b"d", b""])
rcpt = st.builds(qlist.Recipient, st.sampled_from(["local", "remote", "new"]), address, st.booleans())
message = st.builds(qlist.Message, st.integers(1, 10 ** 6), st.sampled_from([qlist.NEW, qlist.QUEUED]),
                    st.integers(0, 10 ** 6), st.floats(0, 2e9), address, st.lists(rcpt, max_size=4), st.booleans())


@given(message, st.none() | address, st.none() | address, st.none() | st.sampled_from([b"x.example", b"Y.EXAMPLE"]))
def test_filters_are_a_conjunction_of_their_rules(m, sender, recipient, domain):
    got = qlist.matches(m, sender, recipient, domain)
    want = ((sender is None or m.sender.lower() == sender.lower())
            and (recipient is None or any(r.address.lower() == recipient.lower() for r in m.recipients))
            and (domain is None or any(qshape.domain_of(r.address) == domain.lower() for r in m.recipients)))
    assert got == want
    assert qlist.matches(m)


@given(message, st.floats(0, 4e9))
def test_message_lines_one_per_recipient(m, now):
    lines = qlist.message_lines(m, now).split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == 1 + len(m.recipients)
    assert lines[0].startswith(b"#%d  " % m.n)
    for line, r in zip(lines[1:], m.recipients):
        assert line.split(b"\t")[1:3] == [b"done" if r.done else b"todo", r.channel.encode()]


@given(st.binary(max_size=40))
def test_records_checks_never_crash(data):
    for path in ("todo/1", "info/1/1", "local/1/1"):
        why = qcheck.check_records(path, data)
        assert why is None or isinstance(why, str)
    assert qcheck.check_records("local/1/1", b"Ta\0Db\0") is None


def test_unreadable_directory_is_trouble_for_listing_a_defect_for_checking(tree):
    qput(tree)
    q(tree, "info", 5).rmdir()
    q(tree, "info", 5).write_bytes(b"")
    code, out, err = qctl(tree, "-p")
    assert (code, out) == (111, b"") and err.startswith(b"qmail-qctl: fatal: unable to read the queue directories")
    code, out, err = qctl(tree, "-s")
    assert code == 100 and b"queue/info/5: is a file, not a dir\n" in out
