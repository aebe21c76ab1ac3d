"""qmail-qread and qmail-qstat on queues built by hand and by the real qmail-queue (qmail-qread(8), qmail-qstat(8))."""

import os
import subprocess
from pathlib import Path

from hypothesis import given, strategies as st

from conftest import program, qenv, queue_message, queued
from test_envelope import parse_todo
from pyqmail.lib.queue import qreport

BIRTH = 812090814  # 26 Sep 1995 04:46:54 GMT


def run(name, tree):
    """Run an installed program on tree; return (exit code, stdout, stderr)."""
    p = subprocess.run([program(name)], env=qenv(tree), capture_output=True)
    return p.returncode, p.stdout, p.stderr


def put(tree, directory, n, data, split=True, mtime=None):
    """Write a queue file (split or not) and optionally set its mtime."""
    path = Path(tree) / "queue" / directory / (("%d/%d" % (n % 23, n)) if split else str(n))
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def preprocessed(tree, n, size, sender, local=b"", remote=b"", bounce=False, birth=BIRTH):
    """Put message n in state S5 (mess, info, local/remote, maybe bounce), as qmail-send leaves it."""
    put(tree, "mess", n, b"x" * size)
    put(tree, "info", n, b"F" + sender + b"\0", mtime=birth)
    if local:
        put(tree, "local", n, local)
    if remote:
        put(tree, "remote", n, remote)
    if bounce:
        put(tree, "bounce", n, b"a@b:\nno.\n\n", split=False)


def test_qread_one_message_byte_exact(tree):
    preprocessed(tree, 1234, 27, b"sender@x.example",
                 local=b"Tjoe@test.example\0Djane@test.example\0",
                 remote=b"Dx@remote.example\0Ty@remote.example\0Tunfinished", bounce=True)
    assert run("qmail-qread", tree) == (0, (
        b"26 Sep 1995 04:46:54 GMT  #1234  27  <sender@x.example>  bouncing\n"
        b"\tlocal\tjoe@test.example\n"
        b"  done\tlocal\tjane@test.example\n"
        b"  done\tremote\tx@remote.example\n"
        b"\tremote\ty@remote.example\n"), b"")


def test_qread_order_states_and_unprintables(tree):
    preprocessed(tree, 1, 5, b"", remote=b"Ta\x01b@c\xe9\0", birth=BIRTH + 86400 * 3 + 3600)
    preprocessed(tree, 23, 0, b"bad\nsender", local=b"Xignored\0Tq@r\0")
    put(tree, "mess", 46, b"queued, not yet preprocessed")
    put(tree, "todo", 46, b"u0\0p1\0Fa@b\0Tc@d\0", split=False)
    put(tree, "info", 69, b"Fno@mess\0")  # info without mess: a warning, and the walk goes on
    (Path(tree) / "queue" / "info" / "5" / "junk").write_bytes(b"")  # non-numeric names are skipped
    code, out, err = run("qmail-qread", tree)
    assert (code, err) == (0, b"")
    assert out == (b"26 Sep 1995 04:46:54 GMT  #23  0  <bad_sender> \n"      # info/0 before info/1
                   b"\tlocal\tq@r\n"
                   b"warning: trouble with #69: file does not exist\n"
                   b"29 Sep 1995 05:46:54 GMT  #1  5  <> \n"
                   b"\tremote\ta_b@c_\n")


def test_qread_without_queue_is_fatal(world_tmp):
    code, out, err = run("qmail-qread", world_tmp / "absent")
    assert (code, out) == (111, b"fatal: unable to chdir: file does not exist\n")


def test_qstat_counts(tree):
    assert run("qmail-qstat", tree) == (0, b"messages in queue: 0\n"
                                           b"messages in queue but not yet preprocessed: 0\n", b"")
    preprocessed(tree, 1, 5, b"a@b", local=b"Tc@d\0")
    preprocessed(tree, 24, 5, b"a@b", local=b"Tc@d\0")
    put(tree, "mess", 46, b"m")
    put(tree, "todo", 46, b"u0\0p1\0Fa@b\0", split=False)
    assert run("qmail-qstat", tree)[1] == (b"messages in queue: 3\n"
                                           b"messages in queue but not yet preprocessed: 1\n")


def preprocess_like_qmail_send(tree, n, todo):
    """Turn todo/n into info/n and local/n or remote/n, then remove todo/n and intd/n (S4 -> S5)."""
    records = parse_todo(todo)
    sender = [v for t, v in records if t == b"F"][0]
    put(tree, "info", n, b"F" + sender + b"\0", mtime=BIRTH)
    for channel, want_local in (("local", True), ("remote", False)):
        rcpts = [v for t, v in records if t == b"T" and v.endswith(b"@test.example") == want_local]
        if rcpts:
            put(tree, channel, n, b"".join(b"T" + r + b"\0" for r in rcpts))
    for d in ("todo", "intd"):
        (Path(tree) / "queue" / d / str(n)).unlink()


def test_real_queued_mail(tree):
    message = b"Subject: hi\n\nbody\n"
    assert queue_message(tree, message, b"Fme@test.example\0Tjoe@test.example\0Tbob@elsewhere.example\0\0") == 0
    [(n, (mess, todo))] = queued(tree).items()
    assert run("qmail-qread", tree) == (0, b"", b"")  # in todo: not preprocessed yet, nothing to list
    assert run("qmail-qstat", tree)[1] == (b"messages in queue: 1\n"
                                           b"messages in queue but not yet preprocessed: 1\n")
    preprocess_like_qmail_send(tree, n, todo)
    assert run("qmail-qstat", tree)[1] == (b"messages in queue: 1\n"
                                           b"messages in queue but not yet preprocessed: 0\n")
    assert run("qmail-qread", tree)[1] == (
        b"26 Sep 1995 04:46:54 GMT  #%d  %d  <me@test.example> \n"
        b"\tlocal\tjoe@test.example\n"
        b"\tremote\tbob@elsewhere.example\n" % (n, len(mess)))


# --- property tests of the pure formatting ---------------------------------------------------------

record = st.tuples(st.sampled_from([b"T", b"D", b"X", b""]), st.binary(max_size=12).filter(lambda b: b"\0" not in b))


@given(st.lists(record, max_size=6), st.binary(max_size=8).filter(lambda b: b"\0" not in b))
def test_recipient_lines(records, tail):
    data = b"".join(t + v + b"\0" for t, v in records) + tail
    lines = qreport.recipient_lines(b"remote", data).split(b"\n")
    assert lines.pop() == b""
    kept = [(r[:1], r[1:]) for r in (t + v for t, v in records) if r[:1] in (b"T", b"D")]
    assert len(lines) == len(kept)
    for line, (kind, addr) in zip(lines, kept):
        assert line.startswith(b"  done\tremote\t" if kind == b"D" else b"\tremote\t")
        assert line.split(b"\t", 2)[2] == bytes(c if 32 <= c <= 126 else 95 for c in addr)


@given(st.integers(0, 2 ** 32), st.integers(0, 10 ** 9), st.integers(0, 10 ** 9), st.binary(max_size=20),
       st.booleans())
def test_header_line_is_one_printable_line(mtime, n, size, info, bouncing):
    line = qreport.header_line(mtime, n, size, info, bouncing)
    assert line.endswith(b"\n") and all(32 <= c <= 126 for c in line[:-1])
    assert line.endswith(b">  bouncing\n" if bouncing else b"> \n")
    assert b" GMT  #%d  %d  <" % (n, size) in line
