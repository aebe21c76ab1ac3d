"""mailsubj: the message on fd 0 queued through qmail-inject with the Subject and To it adds."""

import subprocess

from conftest import program, queued
from test_qmail_inject import only_message
from test_qmail_inject_rewrite import inject_env


def mailsubj(tree, stdin, *args, **env):
    """Run the installed mailsubj; return the finished process."""
    return subprocess.run([program("mailsubj"), *args], input=stdin, env=inject_env(tree, USER="joe", **env),
                          capture_output=True, timeout=30)


def test_subject_and_recipients(tree):
    p = mailsubj(tree, b"the text\nlast", "Weekly report", "ann@x.example", "bob")
    assert (p.returncode, p.stderr) == (0, b"")
    mess, sender, rcpts = only_message(tree)
    assert sender == b"joe@test.example"
    assert rcpts == [b"bob@test.example", b"ann@x.example"]  # qmail-inject takes them from To, right to left
    assert b"\nFrom: joe@test.example\nSubject: Weekly report\nTo: ann@x.example, bob@test.example\n\nthe text\nlast\n" \
        in mess


def test_a_newline_in_the_subject_stays_inside_the_field(tree):
    assert mailsubj(tree, b"x\n", "one\nBcc: evil@x.example", "ann@x.example").returncode == 0
    mess, _, rcpts = only_message(tree)
    assert rcpts == [b"ann@x.example"]
    assert b"\nSubject: one\n Bcc: evil@x.example\n" in mess


def test_usage(tree):
    for args in ([], ["subject only"]):
        p = mailsubj(tree, b"x\n", *args)
        assert (p.returncode, p.stderr) == (100, b"mailsubj: usage: mailsubj subject recip ...\n")
    assert queued(tree) == {}


def test_qmail_inject_failure_is_passed_on(tree):
    p = mailsubj(tree, b"x\n", "s", "a@(b")
    assert p.returncode == 100 and b"qmail-inject: fatal: unable to parse this line:\nTo: a@(b\n" in p.stderr
    (tree / "bin" / "qmail-inject").unlink()
    p = mailsubj(tree, b"x\n", "s", "a@x.example")
    assert p.returncode == 111 and p.stderr.startswith(b"mailsubj: fatal: unable to run qmail-inject")
