"""sendmail: mutt sending through it, -t, -f, -F, the ignored options, -bp and mailq (qmail-qread), -bs
(qmail-smtpd), newaliases and usage errors — all run as installed, against a private tree."""

import os
import re
import subprocess

import pytest

from conftest import need, program, queue_message, queued
from test_qmail_inject import only_message
from test_qmail_inject_rewrite import inject_env

USAGE = b"sendmail: usage: sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]\n"


def sendmail(tree, message, *args, argv0=None, **env):
    """Run the installed sendmail; return the finished process."""
    exe = argv0 or program("sendmail")
    return subprocess.run([exe, *args], input=message, env=inject_env(tree, USER="joe", **env),
                          capture_output=True, timeout=30)


@pytest.mark.interop  # mutt
def test_mutt_sends_through_sendmail(tree, world_tmp):
    need("mutt")
    body = world_tmp / "body"
    body.write_bytes(b"Hello from mutt.\n")
    env = inject_env(tree, USER="joe", HOME=str(world_tmp))
    with open(body, "rb") as stdin:
        p = subprocess.run(["mutt", "-n", "-F", "/dev/null", "-e", "set sendmail='%s -oi -oem'" % program("sendmail"),
                            "-e", "set from=joe@test.example realname='Joe User' use_envelope_from=yes",
                            "-s", "mutt subject", "--", "ann@x.example", "bob@y.example"],
                           stdin=stdin, env=env, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    mess, sender, rcpts = only_message(tree)
    assert sender == b"joe@test.example"
    assert rcpts == [b"ann@x.example", b"bob@y.example"]
    assert b"\nSubject: mutt subject\n" in mess
    assert re.search(rb"\nFrom: Joe User <joe@test\.example>\n", mess), mess
    assert re.search(rb"\nMessage-I[Dd]: <", mess) and mess.endswith(b"\n\nHello from mutt.\n")


def test_dash_t_takes_header_and_argument_recipients(tree):
    p = sendmail(tree, b"To: a@x.example\nBcc: b@x.example\n\nbody\n", "-t", "c@x.example")
    assert (p.returncode, p.stderr) == (0, b"")
    mess, sender, rcpts = only_message(tree)
    assert rcpts == [b"c@x.example", b"a@x.example", b"b@x.example"] and b"Bcc" not in mess
    assert sender == b"joe@test.example"


def test_without_dash_t_only_arguments(tree):
    assert sendmail(tree, b"To: a@x.example\n\nbody\n", "c@x.example").returncode == 0
    assert only_message(tree)[2] == [b"c@x.example"]


def test_dash_f_sets_sender_and_from_and_drops_names(tree):
    p = sendmail(tree, b"\nbody\n", "-f", "list-owner@lists.example", "a@x.example", NAME="Not Used",
                 QMAILHOST="nothere.example")
    assert p.returncode == 0, p.stderr
    mess, sender, _ = only_message(tree)
    assert sender == b"list-owner@lists.example"
    assert b"\nFrom: list-owner@lists.example\n" in mess


def test_dash_capital_f_sets_the_name(tree):
    assert sendmail(tree, b"\nbody\n", "-F", "Full Name", "a@x.example").returncode == 0
    assert b'\nFrom: "Full Name" <joe@test.example>\n' in only_message(tree)[0]


def test_ignored_options(tree):
    p = sendmail(tree, b"\nbody\n", "-oi", "-oem", "-v", "-i", "-x", "-m", "-eq", "-B8BITMIME", "-pX",
                 "-Ejunk", "-J", "-bm", "--", "a@x.example")
    assert (p.returncode, p.stderr) == (0, b"")
    assert only_message(tree)[2] == [b"a@x.example"]


@pytest.mark.parametrize("args, stderr", [
    (["-q", "a@x.example"], b"sendmail: illegal option -- q\n" + USAGE),
    (["-t", "-f"], b"sendmail: option requires an argument -- f\n" + USAGE),
    (["-bz", "a@x.example"], USAGE),
    (["-b", "", "a@x.example"], USAGE),
])
def test_usage_errors(tree, args, stderr):
    p = sendmail(tree, b"", *args)
    assert (p.returncode, p.stderr) == (100, stderr)
    assert queued(tree) == {}


def named(world_tmp, name):
    """A symlink called name pointing at the installed sendmail."""
    link = world_tmp / name
    link.symlink_to(program("sendmail"))
    return str(link)


def test_newaliases(tree, world_tmp):
    p = sendmail(tree, b"", argv0=named(world_tmp, "newaliases"))
    assert (p.returncode, p.stderr) == (100, b"sendmail: fatal: please use fastforward/newaliases instead\n")


def test_bp_and_mailq_run_qmail_qread(tree, world_tmp):
    assert queue_message(tree, b"Subject: q\n\nx\n", b"Fq@x.example\0Tr@y.example\0\0") == 0
    (n, _), = queued(tree).items()
    q = tree / "queue"  # what qmail-send makes of todo/N: info/ and remote/
    (q / "info" / str(n % 23) / str(n)).write_bytes(b"Fq@x.example\0")
    (q / "remote" / str(n % 23) / str(n)).write_bytes(b"Tr@y.example\0")
    (q / "todo" / str(n)).unlink()
    qread = subprocess.run([program("qmail-qread")], env=inject_env(tree), capture_output=True)
    assert b"<q@x.example>" in qread.stdout and b"r@y.example" in qread.stdout, qread
    for p in (sendmail(tree, b"", "-bp"), sendmail(tree, b"", argv0=named(world_tmp, "mailq"))):
        assert (p.returncode, p.stdout, p.stderr) == (qread.returncode, qread.stdout, qread.stderr)


def test_missing_home_and_programs(tree, world_tmp):
    p = sendmail(world_tmp / "nothere", b"", "a@x.example")
    assert (p.returncode, p.stderr) == (111, b"sendmail: fatal: unable to switch to qmail home directory\n")
    (tree / "bin" / "qmail-inject").unlink()
    p = sendmail(tree, b"\nx\n", "a@x.example")
    assert (p.returncode, p.stderr) == (111, b"sendmail: fatal: unable to run qmail-inject\n")


def test_bs_speaks_smtp_through_qmail_smtpd(tree):
    if not os.path.exists(tree / "bin" / "qmail-smtpd"):
        pytest.skip("qmail-smtpd not installed")
    session = (b"HELO client\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<r@y.example>\r\nDATA\r\n"
               b"Subject: bs\r\n\r\nvia -bs\r\n.\r\nQUIT\r\n")
    p = sendmail(tree, session, "-bs")
    codes = re.findall(rb"^(\d{3})[ -]", p.stdout, re.M)
    assert codes[:1] == [b"220"] and codes[-1] == b"221" and b"354" in codes, p.stdout
    mess, sender, rcpts = only_message(tree)
    assert (sender, rcpts) == (b"s@x.example", [b"r@y.example"])
    assert b"sendmail-bs@127.0.0.1" in mess and mess.endswith(b"Subject: bs\n\nvia -bs\n")
