"""qmail-smtpd transcripts, byte for byte: the installed program on pipes or a socketpair, real qmail-queue, real queue."""

import os
import re
import socket
import subprocess
import time

import pytest

from conftest import program, qenv, queued
from test_qmqpd import read_all

GREETING = b"220 test.example ESMTP\r\n"
OK = b"250 ok\r\n"
ACCEPTED = rb"250 ok (\d+) qp (\d+)\r\n"
MSG = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@test.example>\r\nDATA\r\n%s\r\n.\r\n"
QUEUED_HEAD = (rb"Received: \(qmail (\d+) invoked [^)]*\); [^\n]+ -0000\n"
               rb"Received: from ([^\n]*)\n  by (\S+) with (\S+); \d+ \w{3} \d{4} [\d:]{8} -0000\n")


def control(tree, **files):
    """Write control files (name=value; None removes the file)."""
    for name, value in files.items():
        path = tree / "control" / name
        if value is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text("%s\n" % value)


def smtpd(tree, data, timeout=30, **env):
    """Run qmail-smtpd with data on fd 0 (then EOF); return (exit code, everything it wrote on fd 1)."""
    env.setdefault("TCPREMOTEIP", "127.0.0.1")
    environ = qenv(tree, **{k: v for k, v in env.items() if v is not None})
    p = subprocess.run([program("qmail-smtpd")], input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=environ, timeout=timeout)
    assert b"Traceback" not in p.stderr, p.stderr
    return p.returncode, p.stdout


def messages(tree):
    """Return [(message bytes after qmail-queue's Received line, sender, recipients)] in the queue."""
    out = []
    for mess, todo in queued(tree).values():
        fields = todo.split(b"\0")
        sender = [f[1:] for f in fields if f[:1] == b"F"][0]
        out.append((mess.split(b"\n", 1)[1], sender, [f[1:] for f in fields if f[:1] == b"T"]))
    return out


def test_every_reply_byte_for_byte_and_quit_exits_0(tree):
    script = (b"HELO there\r\nEHLO there\r\nRSET\r\nNOOP\r\nVRFY x\r\nHELP\r\nBOGUS\r\n\r\nrcpt to:<x@y>\r\n"
              b"DATA\r\nmail from:<a@b>\r\nDATA\r\nQUIT\r\nNOOP\r\n")
    code, out = smtpd(tree, script)
    assert code == 0
    assert out == (GREETING + b"250 test.example\r\n" + b"250-test.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                   b"250 flushed\r\n250 ok\r\n252 send some mail, i'll try my best\r\n"
                   b"214 notqmail home page: https://notqmail.org\r\n502 unimplemented (#5.5.1)\r\n"
                   b"502 unimplemented (#5.5.1)\r\n503 MAIL first (#5.5.1)\r\n503 MAIL first (#5.5.1)\r\n"
                   b"250 ok\r\n503 RCPT first (#5.5.1)\r\n221 test.example\r\n")


def test_smtpgreeting_overrides_me_and_no_greeting_at_all_is_421(tree):
    control(tree, smtpgreeting="mx.example fine  ")
    assert smtpd(tree, b"QUIT\r\n")[1] == b"220 mx.example fine ESMTP\r\n221 mx.example fine\r\n"
    control(tree, smtpgreeting=None, me=None)
    assert smtpd(tree, b"QUIT\r\n") == (1, b"421 unable to read controls (#4.3.0)\r\n")


def test_eof_exits_1_and_lf_terminated_commands_are_accepted(tree):
    assert smtpd(tree, b"") == (1, GREETING)
    assert smtpd(tree, b"NOOP\nnoop  \r\n") == (1, GREETING + OK + OK)


def test_message_queued_with_received_line_envelope_and_exact_body(tree):
    body = b"Subject: hi\r\n\r\n..leading dot\r\nlone\rcr\r\nlast"
    code, out = smtpd(tree, b"HELO Sender.Example\r\n" + MSG % body + b"QUIT\r\n", TCPREMOTEIP="10.0.0.1",
                      TCPREMOTEHOST="host.example", TCPREMOTEINFO="joe", TCPLOCALHOST="mx.test.example")
    assert code == 0
    m = re.fullmatch(GREETING + b"250 test.example\r\n" + OK + OK + b"354 go ahead\r\n" + ACCEPTED +
                     b"221 test.example\r\n", out)
    assert m and abs(int(m.group(1)) - time.time()) < 60
    [(mess, todo)] = queued(tree).values()
    head = re.match(QUEUED_HEAD, mess)
    assert head.group(1) == m.group(2)  # qp is qmail-queue's pid
    assert head.group(2) == b"host.example (HELO Sender.Example) (joe@10.0.0.1)"
    assert head.group(3, 4) == (b"mx.test.example", b"SMTP")
    assert mess[head.end():] == b"Subject: hi\n\n.leading dot\nlone\rcr\nlast\n"
    assert todo.endswith(b"\0Fa@b.example\0Tc@test.example\0")


def test_received_line_without_helo_and_with_unsafe_bytes(tree):
    smtpd(tree, b"HELO unknown\r\n" + MSG % b"x" + b"HELO a b(c)\xff\r\n" + MSG % b"y", TCPLOCALIP="127.0.0.2")
    heads = sorted(re.match(QUEUED_HEAD, m).group(2, 3) for m, _ in queued(tree).values())
    assert heads == [(b"unknown (127.0.0.1)", b"127.0.0.2"), (b"unknown (HELO a?b?c??) (127.0.0.1)", b"127.0.0.2")]


def test_address_forms_source_routes_quotes_and_the_900_byte_bound(tree):
    script = (b"MAIL FROM: plain@x.example junk\r\nRCPT TO:<@r1,@r2:user@test.example>\r\n"
              b'RCPT TO:<"quoted >name"@test.example> SIZE=1\r\nRCPT TO:<back\\>slash@test.example>\r\n'
              b"RCPT TO:<" + b"a" * 900 + b">\r\nRCPT TO:<" + b"a" * 899 + b">\r\nDATA\r\nx\r\n.\r\n")
    code, out = smtpd(tree, script)
    assert out.split(b"\r\n")[1:7] == [b"250 ok"] * 4 + [b"555 syntax error (#5.5.4)", b"250 ok"]
    [(_, sender, rcpts)] = messages(tree)
    assert sender == b"plain@x.example"
    assert rcpts == [b"user@test.example", b"quoted >name@test.example", b"back>slash@test.example", b"a" * 899]


def test_nul_ends_a_command_as_in_qmail(tree):
    code, out = smtpd(tree, b"NOOP\0junk\r\nMAIL FROM:<a@b\0c>\r\nRCPT TO:<c@test.example>\r\nDATA\r\nx\r\n.\r\n")
    assert out.startswith(GREETING + OK + OK + OK)
    assert messages(tree)[0][1] == b"a@b"


def test_rcpthosts_suffixes_morercpthosts_and_addresses_without_at(tree):
    control(tree, rcpthosts="test.example\n.sub.example\n# comment")
    (tree / "control" / "morercpthosts").write_text("More.example\n")
    subprocess.run([program("qmail-newmrh")], env=qenv(tree), check=True)
    tries = [b"x@TEST.example", b"x@a.sub.example", b"x@sub.example", b"x@more.example", b"x@a.more.example",
             b"x@other.example", b"nobody", b"x@test.example.evil"]
    script = b"MAIL FROM:<a@b>\r\n" + b"".join(b"RCPT TO:<%s>\r\n" % t for t in tries)
    replies = smtpd(tree, script)[1].split(b"\r\n")[2:-1]
    nogateway = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
    assert replies == [b"250 ok", b"250 ok", nogateway, b"250 ok", nogateway, nogateway, b"250 ok", nogateway]
    control(tree, rcpthosts=None)  # no rcpthosts: qmail accepts every domain (and ignores morercpthosts)
    assert smtpd(tree, b"MAIL FROM:<a@b>\r\nRCPT TO:<x@other.example>\r\n")[1].endswith(OK + OK)


def test_a_fifo_as_morercpthosts_cdb_is_a_temporary_failure_not_a_hang(tree):
    """Before: the cdb was opened blocking, so each session waited for a writer for ever (a tcpserver slot
    gone); now anything but a regular file there is unreadable controls."""
    control(tree, rcpthosts="test.example\n")
    os.mkfifo(tree / "control" / "morercpthosts.cdb")
    code, out = smtpd(tree, b"MAIL FROM:<a@b>\r\nRCPT TO:<x@other.example>\r\n", timeout=20)
    assert out.split(b"\r\n")[0][:1] == b"4" or out.split(b"\r\n")[-2][:1] == b"4", out
    assert messages(tree) == []


def test_rcpthosts_saved_with_crlf_reads_as_without(tree):
    """A CR ending a control line is no part of it (unlike qmail, where `test.example\r` matches no domain)."""
    (tree / "control" / "rcpthosts").write_bytes(b"test.example\r\n.sub.example\r\n")
    script = b"MAIL FROM:<a@b>\r\nRCPT TO:<x@test.example>\r\nRCPT TO:<x@a.sub.example>\r\n"
    assert smtpd(tree, script)[1].endswith(OK + OK + OK)


def test_relayclient_skips_rcpthosts_and_is_appended(tree):
    control(tree, rcpthosts="test.example")
    smtpd(tree, MSG.replace(b"c@test.example", b"c@far.example") % b"x", RELAYCLIENT="@relay")
    assert messages(tree)[0][2] == [b"c@far.example@relay"]


def test_badmailfrom_address_and_domain_refused_at_rcpt_case_insensitive(tree):
    control(tree, badmailfrom="bad@x.example\n@Spam.example")
    bmf = b"553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)\r\n"
    for sender in (b"BAD@x.example", b"anyone@spam.EXAMPLE"):
        out = smtpd(tree, b"MAIL FROM:<%s>\r\nRCPT TO:<c@test.example>\r\nDATA\r\n" % sender)[1]
        assert out == GREETING + OK + bmf + b"503 RCPT first (#5.5.1)\r\n"
    assert smtpd(tree, b"MAIL FROM:<good@x.example>\r\nRCPT TO:<c@test.example>\r\n")[1] == GREETING + OK + OK


@pytest.mark.parametrize("source", ["control", "env"])
def test_databytes_boundary_and_nothing_queued_beyond_it(tree, source):
    body = b"Subject: x\r\n\r\n" + b"y" * 20  # stored as 11 + 1 + 20 + 1 = 33 bytes
    env = {}
    for limit, accepted in ((33, True), (32, False)):
        if source == "control":
            control(tree, databytes=limit)
        else:
            control(tree, databytes=1)
            env["DATABYTES"] = str(limit)
        out = smtpd(tree, MSG % body + b"NOOP\r\n", **env)[1]
        if accepted:
            assert re.search(ACCEPTED + OK + b"$", out)
        else:
            assert out.endswith(b"354 go ahead\r\n552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n" + OK)
    assert len(queued(tree)) == 1


def test_hop_count_99_passes_100_is_looping(tree):
    for hops, reply in ((99, ACCEPTED), (100, rb"554 too many hops, this message is looping \(#5\.4\.6\)\r\n")):
        header = b"".join(b"Received: x\r\n" if i % 2 else b"delivered-to: y\r\n" for i in range(hops))
        out = smtpd(tree, MSG % (header + b"\r\nReceived: in body\r\n"))[1]
        assert re.search(b"354 go ahead\r\n" + reply + b"$", out), out
    assert len(queued(tree)) == 1


def test_bare_lf_in_data_is_451_and_the_end_nothing_queued(tree):
    code, out = smtpd(tree, MSG % b"Subject: x\r\n\r\nbare\nlf" + b"QUIT\r\n")
    assert code == 1
    assert out.endswith(b"354 go ahead\r\n451 See https://cr.yp.to/docs/smtplf.html.\r\n")
    assert queued(tree) == {} and not [f for f in (tree / "queue").rglob("*") if f.is_file() and "lock" not in f.parts]


def test_timeout_is_451_and_exit_1(tree):
    control(tree, timeoutsmtpd=1)
    r, w = os.pipe()
    start = time.time()
    p = subprocess.run([program("qmail-smtpd")], stdin=r, stdout=subprocess.PIPE, env=qenv(tree), timeout=20)
    os.close(w)
    os.close(r)
    assert (p.returncode, p.stdout) == (1, GREETING + b"451 timeout (#4.4.2)\r\n")
    assert 0.9 < time.time() - start < 10


def trickle(tree, first, piece, interval):
    """Run qmail-smtpd on a socketpair: send first, then piece every interval s until it exits (at most 15 s).
    Return (exit code, seconds from the first piece to the exit, everything it wrote)."""
    ours, theirs = socket.socketpair()
    p = subprocess.Popen([program("qmail-smtpd")], stdin=theirs, stdout=theirs, env=qenv(tree))
    theirs.close()
    ours.sendall(first)
    start = time.time()
    try:
        while p.poll() is None and time.time() - start < 15:
            ours.sendall(piece)
            time.sleep(interval)
    except OSError:
        pass
    code = p.wait(15)
    elapsed = time.time() - start
    with ours:
        return code, elapsed, read_all(ours)


def test_session_deadline_against_a_trickling_client(tree):
    control(tree, smtpdeadline=2)
    code, elapsed, data = trickle(tree, b"", b"NOOP\r\n", 0.2)  # each read well within the 1200 s timeout
    assert code == 1 and 1.5 < elapsed < 6
    assert data.endswith(b"250 ok\r\n451 timeout (#4.4.2)\r\n")


@pytest.mark.parametrize("code,reply", [
    (31, b"554 mail server permanently rejected message (#5.3.0)"),
    (71, b"451 mail server temporarily rejected message (#4.3.0)"),
    (99, b"451 qq temporary problem (#4.3.0)"),
    (82, b"554 custom refusal"),
])
def test_qmail_queue_failures_become_qmail_replies(tree, code, reply):
    qq = tree / "fake-qq"
    qq.write_text("#!/bin/sh\ncat >/dev/null\nprintf 'Dcustom refusal' >&6\nexit %d\n" % code)
    qq.chmod(0o755)
    out = smtpd(tree, MSG % b"x", QMAILQUEUE=str(qq))[1]
    assert out.endswith(b"354 go ahead\r\n" + reply + b"\r\n")


def test_command_lines_are_bounded_with_a_clear_reply(tree):
    code, out = smtpd(tree, b"NOOP " + b"x" * 100000 + b"\r\nNOOP\r\nMAIL FROM:<" + b"y" * 5000 + b">\r\nQUIT\r\n")
    # the first line over the bound is answered and the session ends (issue 17): nothing after it is read
    assert (code, out) == (1, GREETING + b"500 command line too long (#5.5.2)\r\n")


def test_localiphost_replaces_my_ip_literal(tree):
    control(tree, localiphost="local.example", rcpthosts="local.example")
    smtpd(tree, b"MAIL FROM:<a@[127.0.0.1]>\r\nRCPT TO:<c@[127.0.0.1]>\r\nRCPT TO:<d@[192.0.2.77]>\r\nDATA\r\nx\r\n.\r\n")
    [(_, sender, rcpts)] = messages(tree)
    assert (sender, rcpts) == (b"a@local.example", [b"c@local.example"])
