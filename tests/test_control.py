"""lib/config/control: QMAILHOME and qmail's control-file reading rules (qmail's control.c)."""

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pyqmail.lib.config import control


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A tree with an empty control/ and QMAILHOME pointing at it."""
    (tmp_path / "control").mkdir()
    monkeypatch.setenv("QMAILHOME", str(tmp_path))
    return tmp_path


def put(home, name, data):
    """Write control/name."""
    (home / "control" / name).write_bytes(data)


def test_qmailhome_default_and_override(monkeypatch):
    monkeypatch.delenv("QMAILHOME", raising=False)
    assert control.qmailhome() == "/var/qmail"
    monkeypatch.setenv("QMAILHOME", "")
    assert control.qmailhome() == "/var/qmail"
    monkeypatch.setenv("QMAILHOME", "/srv/q")
    assert control.path("control", "me") == "/srv/q/control/me"


@pytest.mark.parametrize("data,line", [
    (b"mail.example.org\n", b"mail.example.org"),
    (b"mail.example.org", b"mail.example.org"),
    (b"mail.example.org \t \n", b"mail.example.org"),
    (b"mail.example.org\r\nsecond\r\n", b"mail.example.org"),  # saved with CRLF: the CR is no part of it
    (b"\r\n", b""),
    (b"first\nsecond\n", b"first"),
    (b"  leading kept\n", b"  leading kept"),
    (b"\n", b""), (b"", b""),
    (b"# not a comment here\n", b"# not a comment here"),
])
def test_readline_first_line_trailing_blanks_stripped(home, data, line):
    put(home, "me", data)
    assert control.readline("me") == line
    assert control.me() == line


def test_readline_absent_is_none(home):
    assert control.readline("me") is None
    assert control.me() is None


def test_readline_other_errors_are_not_absence(home):
    (home / "control" / "me").mkdir()
    with pytest.raises(OSError):
        control.readline("me")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # each example rewrites the file
@given(st.binary(max_size=40).filter(lambda b: b"\n" not in b), st.text(" \t\r", max_size=4), st.binary(max_size=20))
def test_readline_property(home, first, blanks, rest):
    put(home, "x", first + blanks.encode() + b"\n" + rest)
    assert control.readline("x") == first.rstrip(control.BLANKS)


@pytest.mark.parametrize("data,value", [
    (b"60\n", 60), (b"0\n", 0), (b"1200 \t\n", 1200), (b"007\n", 7),
    (b"99999999999999999999\n", 2**63 - 1),  # saturated: control.READ_MAX
])
def test_readint(home, data, value):
    put(home, "timeoutconnect", data)
    assert control.readint("timeoutconnect", 60) == value


@pytest.mark.parametrize("data", [b"", b"\n", b"abc\n", b"-5\n", b"+5\n", b" 5\n", b"\xd9\xa1\n",
                                  ])
def test_readint_unparsable_keeps_default(home, data):
    put(home, "timeoutconnect", data)
    assert control.readint("timeoutconnect", 60) == 60


@pytest.mark.parametrize("data, value", [(b"5.0\n", 5), (b"12abc\n", 12), (b"10k\n", 10), (b"1_000\n", 1)])
def test_readint_reads_leading_digits_like_scan_ulong(home, data, value):
    put(home, "timeoutconnect", data)
    assert control.readint("timeoutconnect", 60) == value


def test_readline_drops_a_carriage_return_unlike_qmail(home):
    """qmail keeps it (`EHLO host.example\r`, a CRLF smtproutes naming no host, tlsdestinations no longer
    matching): a file saved with CRLF reads as without."""
    put(home, "me", b"host.example\r\n")
    assert control.readline("me") == b"host.example"


def test_readint_absent_keeps_default(home):
    assert control.readint("timeoutconnect", 60) == 60


def test_readlist_rules(home):
    put(home, "rcpthosts", b"# comment\nexample.org \t\n\n   \n#another\n  # indented is a line\nexample.net")
    assert control.readlist("rcpthosts") == [b"example.org", b"  # indented is a line", b"example.net"]


def test_readlist_absent(home):
    assert control.readlist("locals") == []
    assert control.readlist("locals", [b"test.example"]) == [b"test.example"]


def test_readlist_empty_file_is_not_absent(home):
    put(home, "locals", b"")
    assert control.readlist("locals", [b"test.example"]) == []


lines = st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b and b"\0" not in b), max_size=10)


@given(lines)
def test_parse_list_property(raw_lines):
    data = b"\n".join(raw_lines)
    got = control.parse_list(data)
    stripped = [line.rstrip(b" \t\r") for line in raw_lines]
    assert got == [line for line in stripped if line and not line.startswith(b"#")]
    for line in got:
        assert line and line[:1] != b"#" and line[-1:] not in (b" ", b"\t", b"\r")
    assert control.parse_list(b"\r\n".join(raw_lines)) == got  # the same file saved with CRLF


def test_rldef(home):
    assert control.rldef("bouncehost", b"bouncehost") == b"bouncehost"
    put(home, "me", b"me.example\n")
    assert control.rldef("bouncehost", b"bouncehost") == b"me.example"
    put(home, "bouncehost", b"bounce.example\n")
    assert control.rldef("bouncehost", b"bouncehost") == b"bounce.example"


def old(path, when=1_000_000_000):
    """Give path an old mtime, as a long-standing control file has."""
    os.utime(path, ns=(when, when))


def test_memo_reads_again_only_when_control_changes(home, monkeypatch):
    monkeypatch.setattr(control, "SETTLED_NS", 0)  # ctimes are now: the test controls the mtimes instead
    built = []

    def build():
        built.append(1)
        return control.readint("a", 7), control.readint("b", 8)
    put(home, "a", b"1\n")
    old(home / "control" / "a")
    old(home / "control")
    assert [control.memo("t", ["a", "b"], build) for _ in range(3)] == [(1, 8)] * 3 and len(built) == 1
    put(home, "a", b"2\n")  # written in place, same size: control/ itself is untouched
    old(home / "control" / "a", 2_000_000_000)
    assert control.memo("t", ["a", "b"], build) == (2, 8) and len(built) == 2
    put(home, "b", b"5\n")  # a file that did not exist: control/ changes
    assert control.memo("t", ["a", "b"], build) == (2, 5) and len(built) == 3
    os.rename(home / "control" / "b", home / "control" / "a")  # replaced by another file
    assert control.memo("t", ["a", "b"], build) == (5, 8) and len(built) == 4
    assert control.memo("t", ["a", "b"], build) == (5, 8) and len(built) == 4


def test_memo_does_not_keep_what_was_read_within_a_second_of_a_change(home):
    built = []

    def build():
        built.append(1)
        return control.readint("a", 7)
    put(home, "a", b"1\n")  # just written: a second write in the same clock tick could keep its mtime
    assert control.memo("t2", ["a"], build) == 1 and control.memo("t2", ["a"], build) == 1
    assert len(built) == 2


@given(st.lists(st.text(alphabet="ab/.", max_size=6), min_size=1, max_size=5))
def test_join_is_os_path_join(parts):
    """control.join stands in for os.path.join on the per-connection path (no os import there)."""
    assert control.join(*parts) == os.path.join(*parts)


def test_exists_and_is_file_follow_symlinks(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "d").mkdir()
    (tmp_path / "to-f").symlink_to(tmp_path / "f")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    for name in ("f", "d", "to-f", "dangling", "missing"):
        path = str(tmp_path / name)
        assert control.exists(path) == os.path.exists(path), name
        assert control.is_file(path) == os.path.isfile(path), name
