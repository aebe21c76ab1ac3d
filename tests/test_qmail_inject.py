"""qmail-inject queueing for real into a private tree: the envelope (sender and recipients from -a/-h/-H/-A, -f,
Return-Path, QMAILSUSER/QMAILSHOST, VERPs), the queued bytes, qmail-queue's verdicts, the fatal errors and their
exit codes; and one message end to end into a Maildir, read back with mutt."""

import re
import subprocess

import pytest

from conftest import program, queued
from test_envelope import parse_todo
from test_e2e_delivery import maildir, mtree, mutt_read, start, stop, users  # noqa: F401 (mtree: a fixture)
from test_qmail_inject_rewrite import DATE, inject_env

RECEIVED = rb"Received: \(qmail \d+ invoked by uid \d+\); " + DATE + rb"\n"


def inject(tree, message, *args, **env):
    """Run qmail-inject (queueing); return the finished process with stdout and stderr."""
    return subprocess.run([program("qmail-inject"), *args], input=message, env=inject_env(tree, QMAILUSER="joe", **env),
                          capture_output=True, timeout=30)


def only_message(tree):
    """Return (message bytes, sender, recipients) of the one queued message."""
    (mess, todo), = queued(tree).values()
    records = parse_todo(todo)
    assert [t for t, _ in records[:3]] == [b"u", b"p", b"F"]
    return mess, records[2][1], [v for t, v in records[3:]]


def test_message_is_queued_with_header_recipients_in_qmails_order(tree):
    p = inject(tree, b"To: a@x.example, b@x.example\nCc: c\nBcc: d@x.example\nSubject: s\n\nbody\n")
    assert (p.returncode, p.stderr, p.stdout) == (0, b"", b"")
    mess, sender, rcpts = only_message(tree)
    assert sender == b"joe@test.example"
    assert rcpts == [b"b@x.example", b"a@x.example", b"c@test.example", b"d@x.example"]  # right to left per field
    assert re.fullmatch(RECEIVED + rb"Date: " + DATE + rb"\nMessage-ID: <\d{14}\.\d+\.qmail@test\.example>\n"
                        rb"From: joe@test\.example\nTo: a@x\.example, b@x\.example\nCc: c@test\.example\n"
                        rb"Subject: s\n\nbody\n", mess), mess


@pytest.mark.parametrize("option, rcpts", [
    ([], [b"arg@x.example"]), (["-A"], [b"arg@x.example"]), (["-a"], [b"arg@x.example"]),
    (["-h"], [b"hdr@x.example"]), (["-H"], [b"arg@x.example", b"hdr@x.example"]),
    (["-h", "-a"], [b"arg@x.example"]),
])
def test_recipient_strategies(tree, option, rcpts):
    p = inject(tree, b"To: hdr@x.example\n\nb\n", *option, "arg@x.example")
    assert p.returncode == 0, p.stderr
    assert only_message(tree)[2] == rcpts


def test_no_arguments_means_header_recipients(tree):
    assert inject(tree, b"Cc: hdr@x.example\n\nb\n").returncode == 0
    assert only_message(tree)[2] == [b"hdr@x.example"]


def test_arguments_are_quoted_and_rewritten(tree):
    assert inject(tree, b"\n", "--", "john doe", "-x@y", "plus@host+").returncode == 0
    assert only_message(tree)[2] == [b"john doe@test.example", b"-x@y.example", b"plus@host.example"]


def test_resent_message_goes_to_resent_recipients_only(tree):
    assert inject(tree, b"To: orig@x.example\nResent-To: r1@x.example, r2@x.example\nResent-Bcc: r3@x.example\n\nb\n"
                  ).returncode == 0
    mess, _, rcpts = only_message(tree)
    assert rcpts == [b"r2@x.example", b"r1@x.example", b"r3@x.example"]
    assert b"r3@" not in mess and b"\nResent-From: joe@test.example\n" in mess


@pytest.mark.parametrize("args, env, message, sender", [
    ([], {}, b"To: t@x.example\n\n", b"joe@test.example"),
    ([], {}, b"Return-Path: <rp@x.example>\nTo: t@x.example\n\n", b"rp@x.example"),
    ([], {}, b"Return-Path: <>\nTo: t@x.example\n\n", b""),
    ([], {}, b"Return-Path: <first@x.example>\nReturn-Path: <second@x.example>\n\n", b"first@x.example"),
    (["-f", "f@x.example"], {}, b"Return-Path: <rp@x.example>\n\n", b"f@x.example"),
    (["-fbox"], {}, b"\n", b"box@test.example"),
    (["-f", ""], {}, b"\n", b""),
    ([], {"QMAILINJECT": "s"}, b"Return-Path: <rp@x.example>\n\n", b"joe@test.example"),
    ([], {"QMAILSUSER": "bounces", "QMAILSHOST": "lists.example"}, b"\n", b"bounces@lists.example"),
    ([], {"QMAILHOST": "h.example"}, b"\n", b"joe@h.example"),
    ([], {"QMAILINJECT": "r"}, b"\n", b"joe-@test.example-@[]"),
    ([], {"QMAILINJECT": "r"}, b"Return-Path: <l@x.example>\n\n", b"l@x.example-@[]"),
])
def test_envelope_sender(tree, args, env, message, sender):
    p = inject(tree, message, *args, "t@x.example", **env)
    assert p.returncode == 0, p.stderr
    mess, got, _ = only_message(tree)
    assert got == sender
    assert b"Return-Path" not in mess


def test_per_message_verp(tree):
    p = inject(tree, b"\n", "t@x.example", QMAILINJECT="m")
    assert p.returncode == 0
    mess, sender, _ = only_message(tree)
    stamp, pid = re.fullmatch(rb"joe-(\d+)\.(\d+)@test\.example", sender).groups()
    assert re.search(rb"Message-ID: <\d{14}\.%s\.qmail@" % pid, mess)


def test_content_length_and_bcc_removed_and_last_line_ended(tree):
    assert inject(tree, b"Bcc: b@x.example\nContent-Length: 99\nSubject: s\n\nline\nlast").returncode == 0
    mess, _, rcpts = only_message(tree)
    assert rcpts == [b"b@x.example"]
    assert mess.endswith(b"\nCc: recipient list not shown: ;\nSubject: s\n\nline\nlast\n")


def test_large_body_passes_through_unchanged(tree):
    body = b"".join(b"%06d %s\r\n" % (i, b"x" * (i % 200)) for i in range(20000)) + b"\0binary\xff"
    assert inject(tree, b"To: t@x.example\n\n" + body).returncode == 0
    mess = only_message(tree)[0]
    assert mess.endswith(b"\n\n" + body + b"\n")


@pytest.mark.parametrize("args, message, code, stderr", [
    (["-z"], b"\n", 100, b"qmail-inject: illegal option -- z\n"),
    (["-f"], b"\n", 100, b"qmail-inject: option requires an argument -- f\n"),
    (["a@(b"], b"\n", 100, b"qmail-inject: fatal: unable to parse address: a@(b\n"),
    (["-f", "a@(b"], b"\n", 100, b"qmail-inject: fatal: unable to parse this line:\na@(b"),
    ([], b"To: a@b.example, (oops\n\n", 100, b"qmail-inject: fatal: unable to parse this line:\nTo: a@b.example, (oops\n"),
    ([], b"To: x:y@z\n\n", 100, b"qmail-inject: fatal: unable to parse this line:\nTo: x:y@z\n"),
    (["-H", "t@x.example"], b"Cc: a;;\n\n", 100, b"qmail-inject: fatal: unable to parse this line:\nCc: a;;\n"),
    (["t@x.example"], b"From: a@b, (oops\n\n", 100, b"qmail-inject: fatal: unable to parse this line:\nFrom: a@b, (oops\n"),
    (["t@x.example"], b"Return-Path: a>\n\n", 100, b"qmail-inject: fatal: unable to parse this line:\nReturn-Path: a>\n"),
])
def test_fatal_errors_queue_nothing(tree, args, message, code, stderr):
    p = inject(tree, message, *args)
    assert (p.returncode, p.stderr) == (code, stderr)
    assert queued(tree) == {}


def test_unparsable_recipient_field_is_kept_when_arguments_give_the_recipients(tree):
    """qmail-1.03 refuses it; notqmail keeps it (a forward must not bounce over a broken To). We keep it with -a."""
    p = inject(tree, b"To: a@b.example, x:y@z\nCc: (open\n\nb\n", "t@x.example")
    assert p.returncode == 0, p.stderr
    mess, _, rcpts = only_message(tree)
    assert rcpts == [b"t@x.example"]
    assert b"\nTo: a@b.example, x:y@z\nCc: (open\n\nb\n" in mess


def test_unparsable_control_value(tree):
    p = inject(tree, b"\n", "t@x.example", QMAILDEFAULTHOST="a(b")
    assert (p.returncode, p.stderr) == (100, b"qmail-inject: fatal: unable to parse this line:\n@a(b")


@pytest.mark.parametrize("exit_code, code, text", [
    (31, 100, b"mail server permanently rejected message (#5.3.0)"),
    (11, 100, b"envelope address too long for qq (#5.1.3)"),
    (71, 111, b"mail server temporarily rejected message (#4.3.0)"),
    (1, 111, b"qq temporary problem (#4.3.0)"),
])
def test_qmail_queue_verdicts(tree, world_tmp, exit_code, code, text):
    qq = world_tmp / "qq"
    qq.write_text("#!/bin/sh\ncat >/dev/null\nexit %d\n" % exit_code)
    qq.chmod(0o755)
    p = inject(tree, b"To: t@x.example\n\nb\n", QMAILQUEUE=str(qq))
    assert (p.returncode, p.stderr) == (code, b"qmail-inject: fatal: " + text + b"\n")


def test_qmailqueue_gets_the_message_and_envelope(tree, world_tmp):
    qq = world_tmp / "qq"
    out = world_tmp / "out"
    qq.write_text("#!/bin/sh\ncat > %s.msg\ncat <&1 > %s.env\n" % (out, out))
    qq.chmod(0o755)
    p = inject(tree, b"To: t@x.example\n\nb\n", "-f", "s@x.example", QMAILQUEUE=str(qq))
    assert p.returncode == 0, p.stderr
    assert (world_tmp / "out.env").read_bytes() == b"Fs@x.example\0Tt@x.example\0\0"
    assert (world_tmp / "out.msg").read_bytes().endswith(b"To: t@x.example\n\nb\n")


def test_dash_n_prints_and_queues_nothing(tree):
    p = inject(tree, b"To: t@x.example\n\nb\n", "-n")
    assert p.returncode == 0
    assert p.stdout.startswith(b"Return-Path: <joe@test.example>\nDate: ")
    assert queued(tree) == {}


@pytest.mark.interop  # mutt
def test_end_to_end_into_a_maildir_read_back_with_mutt(procs, mtree, world_tmp):
    homes = users(mtree, world_tmp, "joe", "ann")
    system = start(procs, mtree)
    message = b"To: joe, Ann <ann@test.example>\nBcc: ann\nSubject: e2e inject\n\nhello\nFrom here\n"
    p = inject(mtree, message, NAME="Joe User")
    assert p.returncode == 0, p.stderr
    system.wait_log(b"end msg ")
    assert stop(system) == 0
    for name, count in (("joe", 1), ("ann", 2)):
        read = mutt_read(procs, homes[name] / "Maildir", world_tmp / ("mutt-" + name))
        assert len(read) == count and sorted(read) == maildir(homes[name])
        for got in read:
            head, body = got.split(b"\n\n", 1)
            assert body == b"hello\nFrom here\n"
            assert re.search(rb"^Return-Path: <joe@test\.example>$", head, re.M)
            assert re.search(rb'^From: "Joe User" <joe@test\.example>$', head, re.M)
            assert re.search(rb"^To: joe@test\.example, Ann <ann@test\.example>$", head, re.M)
            assert re.search(rb"^Delivered-To: %s@test\.example$" % name.encode(), head, re.M)
            assert b"Bcc" not in head
