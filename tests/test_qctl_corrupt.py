"""Damaged messages while qmail-send runs (qmail-send(8), damaged messages; qmail-qctl(8)): random corruptions
of todo/, info/ and remote/ files; qmail-send never crashes, never delivers to an address at or beyond a damaged
record, and each damaged message ends in corrupt/ with one log line. QCTL_CORRUPTIONS sets how many todo/
corruptions one run plants (1000 by default: a few seconds)."""

import os
import random
import re
import subprocess
import time

import pytest

from conftest import program, qenv
from mailsystem import MailSystem, make_system_tree
from test_qctl_live import wait_for
from test_qmail_qctl import q, qctl

TODO_CORRUPTIONS = int(os.environ.get("QCTL_CORRUPTIONS", "1000"))
VALID = 40


class Planter:
    """Writes messages into a queue by hand, as qmail-queue or qmail-send would have left them."""

    def __init__(self, tree):
        self.tree = tree
        self.k = 0

    def mess(self, text):
        """Write a mess/N named after its inode; return N."""
        self.k += 1
        tmp = q(self.tree, "pid", "plant.%d" % self.k)
        tmp.write_bytes(text)
        os.chmod(tmp, 0o644)
        st = q(self.tree, "mess").stat()
        os.chown(tmp, st.st_uid, st.st_gid)  # qmail-rspawn refuses a message qmailq does not own
        n = tmp.stat().st_ino
        os.rename(tmp, q(self.tree, "mess", n % 23, n))
        return n

    def put(self, directory, data, mode=0o644):
        """Write a queue file through pid/ and rename it into place, owned as its directory."""
        self.k += 1
        tmp = q(self.tree, "pid", "plant.%d" % self.k)
        tmp.write_bytes(data)
        st = q(self.tree, *directory.split("/")[:-1]).stat()
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, mode)
        os.rename(tmp, q(self.tree, *directory.split("/")))

    def pull(self):
        """Wake qmail-send through lock/trigger."""
        try:
            fd = os.open(q(self.tree, "lock", "trigger"), os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            os.write(fd, b"\0")
        except OSError:
            pass
        os.close(fd)


def records(kinds_and_values):
    """Return NUL-ended records."""
    return b"".join(k + v + b"\0" for k, v in kinds_and_values)


def corrupt_todo(rng, data):
    """Return a damaged copy of a todo file's bytes: one that qmail-send must refuse as a whole."""
    recs = data.split(b"\0")[:-1]
    how = rng.choice(["cut", "kind", "nosender", "tail"])
    if how == "cut":
        cuts = [i for i in range(1, len(data)) if data[i - 1] != 0]
        return data[:rng.choice(cuts)]
    if how == "kind":
        i = rng.randrange(len(recs))
        recs[i] = bytes([rng.choice([b for b in range(1, 256) if b not in b"upFT"])]) + recs[i][1:]
        return b"".join(r + b"\0" for r in recs)
    if how == "nosender":
        return b"".join(r + b"\0" for r in recs if r[:1] != b"F")
    return data + bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 20)))


@pytest.fixture
def remote(world_tmp):
    """A qmail-remote stand-in that accepts everything and records each recipient it was given."""
    record = world_tmp / "attempts"
    record.write_text("")
    record.chmod(0o666)
    fake = world_tmp / "fake-remote"
    fake.write_text("#!/bin/sh\ncat >/dev/null\necho \"$3\" >>%s\nprintf 'rok\\n\\0Kaccepted.\\n\\0'\n" % record)
    fake.chmod(0o755)
    return fake, record


def attempted(record):
    """Return the recipients the stand-in was given, with their counts."""
    out = {}
    for line in record.read_text().split():
        out[line] = out.get(line, 0) + 1
    return out


def damaged_lines(system, count):
    """Return the log once it has count `damaged message` lines: a damaged info/N or channel file is renamed into
    corrupt/ before its line is written (qmail-send writes a turn's log lines as the turn ends), so an empty info/
    does not mean the last line is in the log yet."""
    wait_for(lambda: system.log().count(b"warning: damaged message ") >= count, "%d damaged-message lines" % count)
    return system.log()


def queue_empty(tree):
    """True when todo/ and info/ hold nothing (every message done or set aside)."""
    return not any(q(tree, "todo").iterdir()) and not any(
        p for d in q(tree, "info").iterdir() for p in d.iterdir())


def test_random_todo_corruptions_while_qmail_send_runs(world_tmp, procs, remote):
    fake, record = remote
    tree = make_system_tree(world_tmp / "qmail")
    system = MailSystem(procs, tree, "./Maildir/", env={"QMAILREMOTE": fake})
    plant = Planter(tree)
    rng = random.Random(20)
    good, bad = [], []
    started = time.time()
    for i in range(TODO_CORRUPTIONS + VALID):
        valid = i % ((TODO_CORRUPTIONS + VALID) // VALID) == 0
        tag = "v%d" % i if valid else "c%d" % i
        rcpts = ["%s.%d@far.example" % (tag, k) for k in range(rng.randrange(1, 4))]
        data = records([(b"u", b"0"), (b"p", b"1"), (b"F", b"me@test.example")] +
                       [(b"T", r.encode()) for r in rcpts])
        n = plant.mess(b"Subject: %s\n\nx\n" % tag.encode())
        plant.put("todo/%d" % n, data if valid else corrupt_todo(rng, data))
        (good if valid else bad).append(rcpts)
        if i % 20 == 0:
            plant.pull()
    plant.pull()
    wait_for(lambda: queue_empty(tree), "every todo entry handled", timeout=300)
    wanted = {r for rcpts in good for r in rcpts}
    wait_for(lambda: set(attempted(record)) >= wanted, "every valid recipient delivered", timeout=120)
    log = damaged_lines(system, len(bad))
    assert b"alert:" not in log
    seen = attempted(record)
    assert {r for r, c in seen.items() if c != 1} == set()  # none twice
    assert set(seen) == wanted  # nothing of a damaged message delivered
    assert log.count(b"warning: damaged message ") == len(bad)
    assert len(re.findall(rb"moved to queue/corrupt/\d+\.\d+(?:\.\d+)?: ", log)) == len(bad)
    assert len(list(q(tree, "corrupt").iterdir())) == len(bad)
    for d in q(tree, "corrupt").iterdir():
        assert (d / "todo").exists() and (d / "mess").exists() and (d / "why").read_text()
    wait_for(lambda: sum(1 for d in q(tree, "mess").iterdir() for _ in d.iterdir()) == 0, "mess/ emptied")
    code, out, _ = qctl(tree, "-s")
    assert code == 100 and out.count(b"damaged message set aside") == len(bad)
    stat = subprocess.run([program("qmail-qstat")], env=qenv(tree), capture_output=True).stdout
    assert stat.endswith(b"\ndamaged messages set aside in corrupt/: %d\n" % len(bad))
    qread = subprocess.run([program("qmail-qread")], env=qenv(tree), capture_output=True).stdout
    assert qread == b"warning: %d damaged messages set aside in corrupt/ (qmail-qctl -s lists them)\n" % len(bad)
    assert out.count(b"\n") == len(bad), out
    assert system.stop() == 0
    print("%d todo corruptions and %d valid messages in %.1f s" % (len(bad), len(good), time.time() - started))


def corrupt_channel(rng, rcpts):
    """Return (remote/N bytes, the recipients that may be delivered: those before the damage)."""
    how = rng.choice(["cut", "kind"])
    recs = [b"T" + r.encode() for r in rcpts]
    i = rng.randrange(len(recs))
    if how == "cut":
        data = b"".join(r + b"\0" for r in recs[:i]) + recs[i][:rng.randrange(1, len(recs[i]) + 1)]
    else:
        recs[i] = b"X" + recs[i][1:]
        data = b"".join(r + b"\0" for r in recs)
    return data, set(rcpts[:i])


def test_damaged_info_and_channel_files_at_start(world_tmp, procs, remote):
    fake, record = remote
    tree = make_system_tree(world_tmp / "qmail")
    plant = Planter(tree)
    rng = random.Random(21)
    allowed, damaged, good = set(), 0, set()
    for i in range(60):
        rcpts = ["m%d.%d@far.example" % (i, k) for k in range(rng.randrange(1, 5))]
        n = plant.mess(b"Subject: m%d\n\nx\n" % i)
        info = b"Fme@test.example\0"
        remote_data = b"".join(b"T" + r.encode() + b"\0" for r in rcpts)
        kind = i % 3
        if kind == 0:  # info damaged: nothing delivered
            info = rng.choice([b"Xme@test.example\0", b"Fme@test.example", b""])
            damaged += 1
        elif kind == 1:  # remote/N damaged: only the records before the damage
            remote_data, ok = corrupt_channel(rng, rcpts)
            allowed |= ok
            damaged += 1
        else:
            allowed |= set(rcpts)
            good |= set(rcpts)
        plant.put("info/%d/%d" % (n % 23, n), info, 0o600)
        plant.put("remote/%d/%d" % (n % 23, n), remote_data, 0o600)
    system = MailSystem(procs, tree, "./Maildir/", env={"QMAILREMOTE": fake})
    wait_for(lambda: queue_empty(tree), "every message done or set aside", timeout=120)
    wait_for(lambda: set(attempted(record)) >= good, "every good recipient delivered")
    log = damaged_lines(system, damaged)
    seen = attempted(record)
    assert set(seen) <= allowed, set(seen) - allowed
    assert all(c == 1 for c in seen.values())
    assert b"alert:" not in log
    assert log.count(b"warning: damaged message ") == damaged
    assert len(list(q(tree, "corrupt").iterdir())) == damaged
    assert system.stop() == 0


def test_files_damaged_under_a_running_qmail_send(world_tmp, procs):
    from test_qctl_live import Live, qput
    live = Live(world_tmp, procs)
    tree = live.tree
    rng = random.Random(22)
    msgs = {}
    for i in range(24):
        rcpts = ["w%d.%d@far.example" % (i, k) for k in range(rng.randrange(1, 4))]
        msgs[qput(tree, b"Subject: w%d\n\nx\n" % i, rcpts=tuple(r.encode() for r in rcpts))] = rcpts
    live.system.wait_log(b": deferral:", count=sum(len(r) for r in msgs.values()))
    allowed, damaged = set(), 0
    for k, (n, rcpts) in enumerate(sorted(msgs.items())):
        how = k % 3
        if how == 0:
            name, data = q(tree, "info", n % 23, n), rng.choice([b"", b"Fme@test.exa", b"Tx@y\0"])
            damaged += 1
        elif how == 1:
            data, ok = corrupt_channel(rng, rcpts)
            name = q(tree, "remote", n % 23, n)
            allowed |= ok
            damaged += 1
        else:
            allowed |= set(rcpts)
            continue
        with open(name, "r+b") as f:  # in place: owner and mode stay qmail-send's
            f.truncate(0)
            f.write(data)
    before = attempted(live.record)
    live.accept.write_text("")
    assert qctl(tree, "-f") == (0, b"flushed\n", b"")
    wait_for(lambda: queue_empty(tree), "every message delivered or set aside", timeout=120)
    after = attempted(live.record)
    tried = {r for r in after if after[r] > before.get(r, 0)}
    assert tried <= allowed, tried - allowed
    assert all(after[r] - before.get(r, 0) == 1 for r in tried)
    log = damaged_lines(live.system, damaged)
    assert b"alert:" not in log
    assert log.count(b"warning: damaged message ") == damaged
    assert len(list(q(tree, "corrupt").iterdir())) == damaged
    assert live.system.stop() == 0


def test_damaged_local_files_at_start(world_tmp, procs):
    # local/N damaged as remote/N is above: qmail-lspawn is given only the recipients before the damage
    from mailsystem import assign_users, make_home
    record = world_tmp / "local-attempts"
    record.write_text("")
    record.chmod(0o666)
    fake = world_tmp / "fake-local"  # qmail-local's arguments: -- user home local dash ext domain sender ...
    fake.write_text("#!/bin/sh\ncat >/dev/null\necho \"$4@$7\" >>%s\nexit 0\n" % record)
    fake.chmod(0o755)
    tree = make_system_tree(world_tmp / "qmail")
    assign_users(tree, [("+", "", make_home(world_tmp, "anyone"), "", "")])  # every local part: one account
    plant = Planter(tree)
    rng = random.Random(23)
    allowed, damaged, good = set(), 0, set()
    for i in range(60):
        rcpts = ["l%d.%d@test.example" % (i, k) for k in range(rng.randrange(1, 5))]
        n = plant.mess(b"Subject: l%d\n\nx\n" % i)
        if i % 2:
            local_data, ok = corrupt_channel(rng, rcpts)
            allowed |= ok
            damaged += 1
        else:
            local_data = b"".join(b"T" + r.encode() + b"\0" for r in rcpts)
            allowed |= set(rcpts)
            good |= set(rcpts)
        plant.put("info/%d/%d" % (n % 23, n), b"Fme@test.example\0", 0o600)
        plant.put("local/%d/%d" % (n % 23, n), local_data, 0o600)
    system = MailSystem(procs, tree, "./Maildir/", env={"QMAILLOCAL": fake})
    wait_for(lambda: queue_empty(tree), "every message done or set aside", timeout=120)
    wait_for(lambda: set(attempted(record)) >= good, "every good recipient delivered")
    seen = attempted(record)
    assert set(seen) <= allowed, set(seen) - allowed
    assert all(c == 1 for c in seen.values())
    log = damaged_lines(system, damaged)
    assert b"alert:" not in log
    assert log.count(b"warning: damaged message ") == damaged
    assert len(list(q(tree, "corrupt").iterdir())) == damaged
    assert system.stop() == 0
