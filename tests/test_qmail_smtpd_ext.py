"""qmail-smtpd beyond qmail, each off until its control file says so: SIZE, SMTPUTF8, IPv6 literals, a recipient
limit and a recipient check at RCPT time."""

import os
import subprocess

from conftest import program, qenv
from test_qmail_smtpd import GREETING, OK, control, messages, smtpd, trickle

EHLO = b"250-test.example\r\n250-PIPELINING\r\n%s250 8BITMIME\r\n"


def test_size_advertised_with_databytes_and_checked_at_mail(tree):
    control(tree, smtpsize=1, databytes=1000)
    out = smtpd(tree, b"EHLO x\r\nMAIL FROM:<a@b> SIZE=1001\r\nMAIL FROM:<a@b> SIZE=1000 BODY=8BITMIME\r\n")[1]
    assert out == GREETING + EHLO % b"250-SIZE 1000\r\n" + \
        b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n" + OK
    control(tree, databytes=None)
    assert smtpd(tree, b"EHLO x\r\nMAIL FROM:<a@b> SIZE=999999999\r\n")[1] == GREETING + EHLO % b"250-SIZE\r\n" + OK
    control(tree, smtpsize=0, databytes=10)  # off: qmail ignores the parameter and refuses after DATA
    assert smtpd(tree, b"EHLO x\r\nMAIL FROM:<a@b> SIZE=99\r\n")[1] == GREETING + EHLO % b"" + OK


def test_smtputf8_advertised_and_recorded_in_received(tree):
    control(tree, smtputf8=1)
    address = "jöe@test.example".encode()
    out = smtpd(tree, b"EHLO x\r\nMAIL FROM:<%s> SMTPUTF8\r\nRCPT TO:<%s>\r\nDATA\r\nx\r\n.\r\n" % (address, address))[1]
    assert out.startswith(GREETING + EHLO % b"250-SMTPUTF8\r\n" + OK + OK)
    [(body, sender, rcpts)] = messages(tree)
    assert sender == address and rcpts == [address] and b" with UTF8SMTP; " in body


def test_ipv6_literal_of_mine_becomes_localiphost_only_when_enabled(tree):
    control(tree, localiphost="local.example", rcpthosts=None)
    script = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@[IPv6:::1]>\r\nRCPT TO:<d@[IPv6:2001:db8::7]>\r\nDATA\r\nx\r\n.\r\n"
    smtpd(tree, script)
    control(tree, smtpipv6literals=1)
    smtpd(tree, script)
    got = sorted(rcpts for _, _, rcpts in messages(tree))
    assert got == [[b"c@[IPv6:::1]", b"d@[IPv6:2001:db8::7]"], [b"c@local.example", b"d@[IPv6:2001:db8::7]"]]


def test_recipient_limit(tree):
    control(tree, smtpmaxrcpt=2)
    out = smtpd(tree, b"MAIL FROM:<a@b>\r\n" + b"RCPT TO:<c@test.example>\r\n" * 3 + b"DATA\r\nx\r\n.\r\n")[1]
    assert out.startswith(GREETING + OK * 3 + b"452 sorry, too many recipients (#4.5.3)\r\n354 go ahead\r\n")
    assert messages(tree)[0][2] == [b"c@test.example"] * 2


def test_recipient_check_refuses_unknown_local_users_only_when_enabled(tree, world_tmp):
    joe, alias = world_tmp / "joe", world_tmp / "alias"
    for home in (joe, alias):
        home.mkdir()
    (alias / ".qmail-postmaster").write_text("./Maildir/\n")
    (alias / ".qmail-list-default").write_text("./Maildir/\n")
    ids = "%d:%d" % (os.getuid(), os.getgid())
    (tree / "users" / "assign").write_text("=joe:u:%s:%s:::\n+:a:%s:%s:-::\n.\n" % (ids, joe, ids, alias))
    subprocess.run([program("qmail-newu")], env=qenv(tree), check=True)
    control(tree, rcpthosts=None)
    rcpts = [b"joe@test.example", b"Postmaster@TEST.example", b"list-foo@test.example", b"nobody@test.example",
             b"nobody@elsewhere.example", b"nobody"]
    script = b"MAIL FROM:<a@b>\r\n" + b"".join(b"RCPT TO:<%s>\r\n" % r for r in rcpts)
    assert smtpd(tree, script)[1] == GREETING + OK * 7
    control(tree, smtprcptcheck=1)
    no = b"550 sorry, no mailbox here by that name (#5.1.1)\r\n"
    assert smtpd(tree, script)[1] == GREETING + OK * 4 + no + OK * 2


def test_minimum_data_rate_ends_a_trickling_data_and_queues_nothing(tree):
    control(tree, smtpminrate=1000, timeoutsmtpd=2)
    code, elapsed, data = trickle(tree, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@test.example>\r\nDATA\r\n", b"x" * 50 + b"\r\n", 0.5)
    assert code == 1 and 2 < elapsed < 6  # 104 bytes/s, each read within the 2 s timeout
    assert data.endswith(b"354 go ahead\r\n451 timeout (#4.4.2)\r\n")
    assert messages(tree) == []
    control(tree, smtpminrate=10)  # a slow but steady enough client gets through
    assert smtpd(tree, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@test.example>\r\nDATA\r\nx\r\n.\r\n")[1].count(b"250 ok ") == 1
