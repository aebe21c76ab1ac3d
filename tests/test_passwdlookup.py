"""lib/spawn/passwdlookup: qmail-lspawn's passwd rules asked of helper processes without waiting (its answers' bytes,
a real helper answering as qmail-getpw's rules do in-process, what is remembered, lookups that hang, helpers bounded).
The rules a helper runs are replaced by the test's own before the helper forks (the fork inherits them): a helper's
answer counts how often it was asked, and a local part `hang...` never returns. The hang through the installed
qmail-lspawn is tested in tests/test_h4_passwd_hang.py and tests/test_local_audit.py."""

import itertools
import os
import pwd
import select
import signal
import time

import pytest
from hypothesis import given, strategies as st

from pyqmail.lib.config import getpw, users
from pyqmail.lib.spawn import passwdlookup
from pyqmail.lib.spawn.passwdlookup import PasswdLookups, decode_answer, encode_answer
from pyqmail.lib.util.exits import QLX_NOALIAS, QLX_SYS, Exit

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



def resolve(lookups, local, token, timeout=30):
    """Ask lookups for local as qmail-lspawn's loop does (ask; on None, select on fds() until timeout() and take
    ready() until it names token; ask again); return (the Assignment or the Exit code, the tokens decided on the
    way, in order)."""
    seen = []
    deadline = time.monotonic() + timeout
    answer = lookups.ask(local, token)
    while answer is None and token not in seen:
        assert time.monotonic() < deadline, "no decision in time"
        wait = lookups.timeout()
        assert wait is not None  # a lookup is on its way
        ready = select.select(lookups.fds(), [], [], min(wait, max(0, deadline - time.monotonic())))[0]
        seen += lookups.ready(ready)
    if answer is None:
        answer = outcome(lookups, local, token)
    return answer, seen


def take(lookups, tokens, timeout=30):
    """Wait (as qmail-lspawn's loop) until every token is decided; return the tokens in the order decided, each
    with the time it was."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < len(tokens):
        assert time.monotonic() < deadline, "no decision in time"
        wait = lookups.timeout()
        assert wait is not None, out
        ready = select.select(lookups.fds(), [], [], min(wait, max(0, deadline - time.monotonic())))[0]
        out += [(t, time.monotonic()) for t in lookups.ready(ready)]
    return out


def outcome(lookups, local, token):
    """ask() once a token is decided: the Assignment, or the Exit code."""
    try:
        return lookups.ask(local, token)
    except Exit as e:
        return e.code


def stop(lookups, dead=()):
    """Kill the helpers still running and reap them, and those in dead (killed by lookups already)."""
    for pid in [*lookups.close(), *dead]:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


@pytest.fixture
def counting(monkeypatch, tmp_path):
    """The helpers' rules replaced: local `hang...` never returns, `none...` has no account (QLX_NOALIAS), any
    other gets an Assignment whose uid counts the lookups its helper answered; /etc/passwd a file of the test's."""
    passwd = tmp_path / "passwd"
    passwd.write_text("x\n")
    monkeypatch.setattr(passwdlookup, "PASSWD", str(passwd))
    counter = itertools.count(1)

    def rules(local):
        if local.startswith(b"hang"):
            while True:
                time.sleep(3600)
        if local.startswith(b"none"):
            raise Exit(QLX_NOALIAS)
        return users.Assignment(local, next(counter), 1, b"/h", b"", b"")
    monkeypatch.setattr(getpw, "assignment", rules)
    return passwd


def test_the_helper_answers_as_the_rules_do_in_process():
    name = pwd.getpwuid(os.getuid()).pw_name.encode()
    lookups = PasswdLookups()

    def in_process(local):
        try:
            return getpw.assignment(local)
        except Exit as e:
            return e.code
    try:
        for token, local in enumerate((name, b"no-such-user-anywhere", name + b"-ext")):
            assert resolve(lookups, local, token)[0] == in_process(local)
        [helper] = lookups.helpers
        first = helper.pid
        os.kill(first, 9)  # a helper that died meanwhile is replaced at the next lookup
        os.waitpid(first, 0)
        assert resolve(lookups, b"no-such-user-again", 9)[0] == in_process(b"no-such-user-again")
        [helper] = lookups.helpers
        assert helper.pid != first
    finally:
        stop(lookups)


def test_ask_does_not_wait_and_the_answer_comes_with_ready(counting):
    lookups = PasswdLookups()
    try:
        assert lookups.ask(b"a", 1) is None and lookups.timeout() is not None  # sent; nothing waits for it
        [(token, _)] = take(lookups, [1])
        assert token == 1 and outcome(lookups, b"a", 1).uid == 1
        assert lookups.timeout() is None and lookups.fds() == []  # nothing on its way: the loop waits on nothing
    finally:
        stop(lookups)


def test_answers_are_remembered_while_etc_passwd_is_the_same_file_and_young(counting, monkeypatch):
    lookups = PasswdLookups()
    try:
        assert resolve(lookups, b"a", 1)[0].uid == 1
        assert lookups.ask(b"a", 2).uid == 1  # remembered: answered at once, no lookup sent
        counting.write_text("x\ny\n")  # changed: every answer is asked again
        assert lookups.ask(b"a", 3) is None
        assert take(lookups, [3])[0][0] == 3 and outcome(lookups, b"a", 3).uid == 2
        clock = [time.monotonic()]
        monkeypatch.setattr(passwdlookup.time, "monotonic", lambda: clock[0])
        lookups.answers.clear()
        assert resolve(lookups, b"a", 4)[0].uid == 3
        clock[0] += passwdlookup.REMEMBER - 1
        assert lookups.ask(b"a", 5).uid == 3
        clock[0] += 2  # too old: asked again
        assert lookups.ask(b"a", 6) is None
    finally:
        stop(lookups)


def test_a_failure_is_never_remembered(counting):
    lookups = PasswdLookups()
    try:
        for token in (1, 2):
            assert lookups.ask(b"none", token) is None  # asked of the helper each time
            assert resolve(lookups, b"none", token)[0] == QLX_NOALIAS
    finally:
        stop(lookups)


def test_a_decision_is_taken_only_for_its_own_local_part(counting):
    # a delivery whose second ask does not come (users/cdb answered it meanwhile) leaves its decision; a later
    # delivery with the same delnum and another local part must not take it
    lookups = PasswdLookups()
    try:
        assert lookups.ask(b"a", 7) is None
        take(lookups, [7])
        assert lookups.ask(b"b", 7) is None
        assert resolve(lookups, b"b", 7)[0].user == b"b"
    finally:
        stop(lookups)


def test_a_lookup_that_hangs_defers_only_its_own_at_its_deadline_and_its_helper_is_replaced(counting):
    timeout = 2.5
    lookups = PasswdLookups(timeout=timeout)
    try:
        start = time.monotonic()
        assert lookups.ask(b"hang", 1) is None
        assert lookups.ask(b"hang", 2) is None  # the same local part: the same lookup
        assert lookups.ask(b"a", 3) is None  # another: another helper
        assert len(lookups.helpers) == 2
        hung = [h.pid for h in lookups.helpers if h.lookup.local == b"hang"]
        decided = take(lookups, [1, 2, 3])
        assert [t for t, _ in decided] == [3, 1, 2]  # the answer first, the hang at its deadline
        assert decided[0][1] - start < timeout
        assert decided[1][1] - start >= timeout
        assert outcome(lookups, b"a", 3).uid == 1
        assert outcome(lookups, b"hang", 1) == outcome(lookups, b"hang", 2) == QLX_SYS
        [(pid, status)] = [os.waitpid(hung[0], 0)]
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL  # killed, not left stuck
        hung = []
        assert [h.pid for h in lookups.helpers] != [pid] and len(lookups.helpers) == 1
        assert resolve(lookups, b"b", 4)[0].user == b"b"
    finally:
        stop(lookups, hung)


def test_helpers_are_bounded_and_lookups_beyond_wait_their_turn_within_their_own_deadline(counting, monkeypatch):
    real = time.monotonic
    frozen = [real()]  # the four asks at one instant: one deadline for all
    monkeypatch.setattr(passwdlookup.time, "monotonic", lambda: frozen[0] if frozen else real())
    lookups = PasswdLookups(timeout=1.5, helpers=2)
    locals_ = (b"hang1", b"hang2", b"a", b"b")
    try:
        start = frozen[0]
        for token, local in enumerate(locals_):
            assert lookups.ask(local, token) is None
        frozen.clear()
        assert len(lookups.helpers) == 2 and len(lookups.queue) == 2
        hung = [h.pid for h in lookups.helpers]
        decided = take(lookups, [0, 1, 2, 3])
        # every delivery waits at most the timeout in all, its turn included: those that never had a helper
        # are deferred with the hung ones
        assert sorted(t for t, _ in decided) == [0, 1, 2, 3]
        assert all(when >= start + 1.5 for _, when in decided)
        assert [outcome(lookups, local, token) for token, local in enumerate(locals_)] == [QLX_SYS] * 4
        for pid in hung:
            os.waitpid(pid, 0)
        hung = []
        assert lookups.helpers == []
        assert resolve(lookups, b"c", 5)[0].user == b"c"  # and a new helper answers afterwards
    finally:
        stop(lookups, hung)


def test_a_queued_lookup_goes_to_the_helper_that_answered(counting, monkeypatch):
    lookups = PasswdLookups(helpers=1)
    try:
        for token, local in enumerate((b"a", b"b", b"c")):
            assert lookups.ask(local, token) is None
        assert len(lookups.helpers) == 1 and len(lookups.queue) == 2
        assert [t for t, _ in take(lookups, [0, 1, 2])] == [0, 1, 2]
        assert [outcome(lookups, local, token).uid for token, local in enumerate((b"a", b"b", b"c"))] == [1, 2, 3]
        assert len(lookups.helpers) == 1  # one helper answered all three
    finally:
        stop(lookups)
