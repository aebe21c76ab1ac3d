"""splogger: the real program logging through glibc's syslog(3) to a real /dev/log datagram socket.

The test runs splogger in a private mount namespace (`unshare -m`, as root) whose /dev is a bind mount of a
test directory: its `log` is this test's datagram socket, and null, urandom and random are bind mounts of the
real devices. The host's /dev is never touched."""

import os
import re
import shutil
import socket
import subprocess

import pytest
from hypothesis import given, strategies as st

from conftest import need, program
from pyqmail.lib.util import syslogfold
from pyqmail.lib.util.syslogfold import ALERT, CHUNK, INFO, WARNING, Folder

MAIL = 2
NAMESPACE_SCRIPT = ('set -e; d=$1; shift; for n in null urandom random; do mount --bind /dev/$n "$d/$n"; done; '
                    'mount --bind "$d" /dev; exec "$@"')


def logger_dev(tmp_path):
    """Return (the directory to become /dev, the bound datagram socket at its `log`)."""
    d = tmp_path / "dev"
    d.mkdir()
    for n in ("null", "urandom", "random"):
        (d / n).touch()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(d / "log"))
    os.chmod(d / "log", 0o666)
    s.settimeout(20)
    return d, s


def splogger(tmp_path, stdin, *args):
    """Run the real splogger on stdin with a private /dev/log; return (exit code, [(facility, priority, text)])."""
    need("unshare", "mount")
    if os.geteuid() != 0:
        pytest.skip("a private mount namespace needs root")
    d, s = logger_dev(tmp_path)
    try:
        p = subprocess.run(["unshare", "-m", "sh", "-c", NAMESPACE_SCRIPT, "sh", str(d), program("splogger"), *args],
                           input=stdin, capture_output=True, timeout=60)
        if p.returncode != 0 and b"unshare" in p.stderr:
            pytest.skip("no mount namespace here: " + p.stderr.decode(errors="replace"))
        records = []
        s.setblocking(False)
        while True:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                break
            m = re.match(rb"<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d (.*?): (.*)\Z", data, re.S)
            assert m, data
            pri = int(m.group(1))
            records.append((pri >> 3, pri & 7, m.group(2), m.group(3)))
        return p.returncode, p.stderr, records
    finally:
        s.close()


STAMP = rb"\d+\.\d{6}"


def test_lines_priorities_and_tag(tmp_path):
    code, err, recs = splogger(tmp_path, b"hello world\nwarning: disk\nalert: fire\n\n\x01bad\xffbyte\nlast", "qmail")
    assert (code, err) == (0, b"")
    assert [(f, p, tag) for f, p, tag, _ in recs] == [(MAIL, INFO, b"qmail"), (MAIL, WARNING, b"qmail"),
                                                      (MAIL, ALERT, b"qmail"), (MAIL, INFO, b"qmail")]
    texts = [t for *_, t in recs]
    for t, want in zip(texts, [b"hello world", b"warning: disk", b"alert: fire", b"?bad?byte"], strict=True):
        assert re.fullmatch(STAMP + b" " + re.escape(want), t), t
    # the blank line gives nothing, and the unfinished last line is dropped at EOF, as qmail's splogger does


def test_default_tag_and_numeric_facility(tmp_path):
    code, _, recs = splogger(tmp_path, b"one\n")
    assert code == 0 and [(f, p, tag) for f, p, tag, _ in recs] == [(MAIL, INFO, b"splogger")]
    (tmp_path / "again").mkdir()
    code, _, recs = splogger(tmp_path / "again", b"two\n", "t", "16")
    assert code == 0 and [(f, p, tag) for f, p, tag, _ in recs] == [(16, INFO, b"t")]  # local0


def test_long_lines_are_folded_with_the_first_pieces_stamp_and_priority(tmp_path):
    line = b"warning: " + b"x" * (2 * CHUNK)
    code, _, recs = splogger(tmp_path, line + b"\nnext\n")
    assert code == 0 and [p for _, p, _, _ in recs] == [WARNING, WARNING, WARNING, INFO]
    texts = [t for *_, t in recs]
    stamp = texts[0].split(b" ", 1)[0]
    assert texts[0] == stamp + b" " + line[:CHUNK]
    assert texts[1] == stamp + b"+" + line[CHUNK:2 * CHUNK]
    assert texts[2] == stamp + b"+" + line[2 * CHUNK:]
    assert texts[3].split(b" ", 1)[1] == b"next"


# ---------------------------------------------------------------- the state machine

def stamps():
    n = iter(range(10 ** 9))
    return lambda: b"%d.000000" % next(n)


@given(st.lists(st.binary(max_size=2000), max_size=6))
def test_folder_reassembles_every_line(pieces):
    data = b"".join(pieces)
    f = Folder(stamps())
    recs = []
    for p in pieces:
        recs += f.feed(p)
    lines = data.split(b"\n")[:-1]  # the unfinished last line is never logged, as qmail's
    wanted = [ln.translate(syslogfold.PRINTABLE) for ln in lines if ln]
    got = []
    for prio, rec in recs:
        stamp, sep, text = re.match(rb"(\d+\.\d{6})([ +])(.*)\Z", rec, re.S).groups()
        assert 0 < len(text) <= CHUNK and all(32 <= c <= 126 for c in text)
        if sep == b" ":
            got.append([text, prio, stamp])
        else:
            assert got[-1][1] == prio and got[-1][2] == stamp
            got[-1][0] += text
    assert [g[0] for g in got] == wanted
    assert [g[1] for g in got] == [syslogfold.priority(w) for w in wanted]
    assert len(f.buf) <= CHUNK


def test_folder_is_split_independent():
    data = b"a" * 1700 + b"\nwarning: b\n"
    whole = Folder(stamps()).feed(data)
    f = Folder(stamps())
    bytewise = [r for i in range(len(data)) for r in f.feed(data[i:i + 1])]
    assert whole == bytewise and len(whole) == 4
    assert shutil.which("sh")
