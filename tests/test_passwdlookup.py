"""lib/spawn/passwdlookup: qmail-lspawn's passwd rules asked of a helper process (its answers' bytes, a real helper
answering as qmail-getpw's rules do in-process, and what is remembered). The hang it bounds is tested through the
installed qmail-lspawn in tests/test_local_audit.py."""

import os
import pwd

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.config import getpw, users
from pyqmail.lib.spawn import passwdlookup
from pyqmail.lib.spawn.passwdlookup import PasswdLookups, decode_answer, encode_answer
from pyqmail.lib.util.exits import QLX_SYS, Exit

field = st.binary(max_size=40).filter(lambda b: b"\0" not in b)
ids = st.integers(min_value=0, max_value=2 ** 32 - 1)


@given(field, ids, ids, field, field, field)
def test_an_answer_round_trips(user, uid, gid, home, dash, ext):
    a = users.Assignment(user, uid, gid, home, dash, ext)
    assert decode_answer(encode_answer(a)) == a


@given(st.integers(min_value=0, max_value=255))
def test_a_refusal_carries_its_exit_code(code):
    with pytest.raises(Exit) as e:
        decode_answer(encode_answer(None, code))
    assert e.value.code == code


@given(st.binary(max_size=80))
def test_any_bytes_decode_to_an_assignment_or_an_exit(data):
    try:
        a = decode_answer(data)
    except Exit as e:
        assert data[:1] == b"E" or e.code == QLX_SYS
    else:
        assert data[:1] == b"K" and isinstance(a.uid, int) and isinstance(a.gid, int)


def test_the_helper_answers_as_the_rules_do_in_process():
    name = pwd.getpwuid(os.getuid()).pw_name.encode()
    lookups = PasswdLookups()
    try:
        for local in (name, b"no-such-user-anywhere", name + b"-ext"):
            try:
                want = getpw.assignment(local)
            except Exit as e:
                with pytest.raises(Exit) as got:
                    lookups.ask_helper(local)
                assert got.value.code == e.code
            else:
                assert lookups.ask_helper(local) == want
        first = lookups.pid
        os.kill(first, 9)  # a helper that died meanwhile is replaced at the next lookup
        os.waitpid(first, 0)
        assert lookups.ask_helper(name) == getpw.assignment(name) and lookups.pid != first
    finally:
        pid = lookups.pid
        lookups.stop()
        if pid:
            os.waitpid(pid, 0)


def test_answers_are_remembered_while_etc_passwd_is_the_same_file_and_young(tmp_path, monkeypatch):
    passwd = tmp_path / "passwd"
    passwd.write_text("x\n")
    monkeypatch.setattr(passwdlookup, "PASSWD", str(passwd))
    asked = []
    lookups = PasswdLookups()
    monkeypatch.setattr(lookups, "ask_helper", lambda local: asked.append(local) or users.Assignment(
        b"u", len(asked), 1, b"/h", b"", b""))
    assert lookups.ask(b"a").uid == 1 and lookups.ask(b"a").uid == 1 and asked == [b"a"]
    passwd.write_text("x\ny\n")  # changed: every answer is asked again
    assert lookups.ask(b"a").uid == 2
    clock = [0.0]
    monkeypatch.setattr(passwdlookup.time, "monotonic", lambda: clock[0])
    lookups.answers.clear()
    assert lookups.ask(b"a").uid == 3
    clock[0] = passwdlookup.REMEMBER - 1
    assert lookups.ask(b"a").uid == 3
    clock[0] = passwdlookup.REMEMBER + 1  # too old: asked again
    assert lookups.ask(b"a").uid == 4


def test_a_failure_is_never_remembered(monkeypatch, tmp_path):
    monkeypatch.setattr(passwdlookup, "PASSWD", str(tmp_path / "none"))
    lookups = PasswdLookups()
    calls = []

    def fail(local):
        calls.append(local)
        raise Exit(QLX_SYS)
    monkeypatch.setattr(lookups, "ask_helper", fail)
    for _ in range(2):
        with pytest.raises(Exit):
            lookups.ask(b"a")
    assert calls == [b"a", b"a"]
