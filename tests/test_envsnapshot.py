"""A reused worker's environment is put back exactly, in Python and in the C environment children get."""

import os
import subprocess

from hypothesis import given, settings, strategies as st

from pyqmail.lib.util import envsnapshot

NAMES = st.sampled_from(["PYQ_A", "PYQ_B", "PYQ_C", "TCPREMOTEIP", "HOME", "PATH", "LANG"])
VALUES = st.text(st.characters(min_codepoint=32, max_codepoint=0x7E), max_size=20)
CHANGES = st.lists(st.tuples(NAMES, st.none() | VALUES), max_size=10)


def apply(changes):
    """Set (or, for None, unset) each variable in turn, as a connection's program might."""
    for name, value in changes:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@settings(max_examples=200, deadline=None)
@given(CHANGES, CHANGES)
def test_restore_undoes_any_changes(before, during):
    original = dict(os.environ)
    try:
        apply(before)  # the worker's own starting environment
        saved, expected = envsnapshot.take(), dict(os.environ)
        apply(during)
        envsnapshot.restore(saved)
        assert dict(os.environ) == expected
        assert dict(os.environb) == {k.encode(): v.encode() for k, v in expected.items()}
    finally:
        os.environ.clear()
        os.environ.update(original)


@settings(max_examples=200, deadline=None)
@given(CHANGES, CHANGES)
def test_restore_leaves_the_kept_variables_as_they_are(before, during):
    original = dict(os.environ)
    keep = {"TCPREMOTEIP", "PYQ_C"}
    try:
        apply(before)
        saved, expected = envsnapshot.take(), dict(os.environ)
        apply(during)
        now = dict(os.environ)
        envsnapshot.restore(saved, frozenset(k.encode() for k in keep))
        expected = {k: v for k, v in expected.items() if k not in keep}
        expected.update({k: v for k, v in now.items() if k in keep})
        assert dict(os.environ) == expected
        assert dict(os.environb) == {k.encode(): v.encode() for k, v in expected.items()}
    finally:
        os.environ.clear()
        os.environ.update(original)


def test_a_child_sees_the_restored_environment(monkeypatch):
    monkeypatch.setenv("PYQ_KEEP", "kept")
    monkeypatch.delenv("PYQ_GONE", raising=False)
    saved = envsnapshot.take()
    os.environ["PYQ_GONE"] = "should go"
    os.environ["PYQ_KEEP"] = "changed"
    envsnapshot.restore(saved)
    seen = subprocess.run(["/usr/bin/env"], capture_output=True, check=True).stdout.splitlines()
    assert b"PYQ_KEEP=kept" in seen
    assert not any(line.startswith(b"PYQ_GONE=") for line in seen)
