"""End to end through the whole delivery side started by qmail-start: mail in by QMQP (Postfix's qmqp-source,
tcpserver, qmail-qmqpd) or qmail-queue, through qmail-send, qmail-lspawn and qmail-local, out to Maildirs, mboxes,
programs and forwards, read back with mutt; bounces, retries, ALRM, HUP, TERM and the uid 0 refusal."""

import math
import os
import pwd
import re
import shlex
import signal
import subprocess
import time

import pytest

from conftest import need, program, qenv, queue_message, tcpserver
from mailsystem import ROOT, MailSystem, delivery_account, make_home, make_system_tree

MSG = b"Subject: e2e\nMessage-ID: <e2e@x>\n\nFrom the start\n>From quoted\n>>From twice\nFromage\nlast line"
DATE = rb"\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000"
QUEUED = rb"Received: \(qmail (\d+) invoked by uid (\d+)\); " + DATE + rb"\n"
LOG_LINE = (rb"status: local \d+/\d+ remote \d+/\d+( exitasap)?|status: exiting|new msg \d+|end msg \d+"
            rb"|info msg \d+: bytes \d+ from <[^>\s]*> qp \d+ uid \d+|bounce msg \d+ qp \d+"
            rb"|starting delivery \d+: msg \d+ to (local|remote) \S+|delivery \d+: (success|failure|deferral): \S*"
            rb"|qmail-pickup: queued maildrop/[0-9a-f]+: msg \d+ uid \d+")  # qmail-pickup(8) logs here too
FAKE_REMOTE = "fake-qmail-remote"
REMOTE = b"Zno remote deliveries in these tests.\n"


@pytest.fixture
def mtree(world_tmp):
    """A tree set up as an installation would be (qmail's accounts when root), with a qmail-remote stand-in."""
    tree = make_system_tree(world_tmp / "qmail")
    fake = world_tmp / FAKE_REMOTE  # no DNS, no network: every remote delivery is deferred
    fake.write_text("#!/bin/sh\ncat >/dev/null\nprintf '%s\\0'\n" % REMOTE.decode().replace("\n", "\\n"))
    fake.chmod(0o755)
    return tree


def start(procs, tree, **env):
    """Start qmail-start on tree with ./Maildir/ as the default delivery; return the MailSystem."""
    return MailSystem(procs, tree, "./Maildir/", env=dict(env, QMAILREMOTE=tree.parent / FAKE_REMOTE))


def stop(system):
    """TERM the system (checking its helpers go too); return qmail-send's exit code after checking the log is clean."""
    code = system.stop()
    trouble = [line for line in system.log().splitlines() if not re.fullmatch(LOG_LINE, line)]
    assert not trouble, system.log().decode(errors="replace")  # alerts, warnings, helpers' complaints
    return code


def write_assign(tree, entries):
    """users/assign from (kind, local, account, uid, gid, home, dash, ext) entries, compiled by the real qmail-newu."""
    text = "".join("%s%s:%s:%d:%d:%s:%s:%s:\n" % e for e in entries) + ".\n"
    (tree / "users" / "assign").write_text(text)
    subprocess.run([str(tree / "bin" / "qmail-newu")], env=qenv(tree), check=True)


def users(tree, world_tmp, *names):
    """Give each name a home with a Maildir, as name and name-*; return {name: home}."""
    pw = delivery_account()
    homes = {name: make_home(world_tmp, name) for name in names}
    entries = []
    for name, home in homes.items():
        entries.append(("=", name, pw.pw_name, pw.pw_uid, pw.pw_gid, home, "", ""))
        entries.append(("+", name + "-", pw.pw_name, pw.pw_uid, pw.pw_gid, home, "-", ""))
    write_assign(tree, entries)
    return homes


def dotqmail(home, ext, text):
    """Write home/.qmail-ext, owned by the delivery account, mode 0644."""
    path = home / (".qmail-" + ext)
    path.write_text(text)
    os.chmod(path, 0o644)
    if ROOT:
        pw = delivery_account()
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def send(tree, rcpts, sender=b"s@example.org", message=MSG):
    """Queue message with the real qmail-queue."""
    envelope = b"F" + sender + b"\0" + b"".join(b"T" + r + b"\0" for r in rcpts) + b"\0"
    assert queue_message(tree, message, envelope) == 0


MUTT_SEP = b"\n=== message ends (pyqmail tests) ===\n"


def mutt_read(procs, folder, out, order="date-received"):
    """Read every message in a Maildir or mbox with mutt (on a pty from script), piped raw into one file.

    Returns the messages as mutt handed them over, in mutt's order (`order` is its sort setting)."""
    need("mutt", "script")
    keys = "<tag-pattern>~A<enter><tag-prefix><pipe-entry>cat > %s<enter><quit>" % out
    mutt = ["mutt", "-n", "-F", "/dev/null", "-R",
            "-e", "set pipe_split=no pipe_decode=no wait_key=no sort=%s folder=%s" % (order, out.parent),
            "-e", 'set pipe_sep="%s"' % MUTT_SEP.decode().replace("\n", "\\n"),
            "-e", 'push "%s"' % keys, "-f", str(folder)]  # -f after -e: otherwise the keys come too early
    p = procs.start(["script", "-qec", shlex.join(mutt), "/dev/null"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env=dict(os.environ, TERM="vt100", HOME=str(out.parent)))
    try:
        screen = p.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        procs.stop(p)
        raise AssertionError("mutt did not finish reading %s" % folder)
    assert p.returncode == 0 and out.exists(), screen[-2000:]
    messages = out.read_bytes().split(MUTT_SEP)
    assert messages[-1] == b"", screen[-2000:]  # the separator follows every message
    return messages[:-1]


def maildir(home):
    """Return the raw files in home/Maildir/new (read directly, to compare with what mutt saw)."""
    return sorted(f.read_bytes() for f in (home / "Maildir" / "new").iterdir())


def queue_is_empty(tree):
    """True when no message is left anywhere in the queue."""
    q = tree / "queue"
    for part in ("mess", "info", "local", "remote"):
        for sub in (q / part).iterdir():
            if any(sub.iterdir()):
                return False
    return not any(any((q / part).iterdir()) for part in ("todo", "intd", "bounce"))


def msg_numbers(log):
    """The message numbers in the log's `new msg` lines, in order."""
    return [int(n) for n in re.findall(rb"^new msg (\d+)$", log, re.M)]


# 1. QMQP in, Maildir out, read back with mutt

QMQP_RECEIVED = rb"Received: from unknown \(127\.0\.0\.1\)\n  by 0 with QMQP; " + DATE + rb"\n"
QMQP_PAYLOAD = (rb"From: <qs@example\.org>\nTo: <joe@test\.example>\nDate: [^\n]+\nMessage-Id: <\d+@[^\n]+>\n\n"
                rb"((?:X+\n)+)")


@pytest.mark.interop  # mutt and qmqp-source
def test_qmqp_source_to_maildir_read_back_with_mutt(procs, mtree, world_tmp):
    need("qmqp-source")
    homes = users(mtree, world_tmp, "joe")
    system = start(procs, mtree)
    (mtree / "control" / "qmqpderrordelay").write_text("0\n")
    # as installed: qmail-qmqpd runs as qmaild (whose mail goes through the maildrop and qmail-pickup)
    daemon = pwd.getpwnam("qmaild") if ROOT else pwd.getpwuid(os.getuid())
    options = ("-u", str(daemon.pw_uid), "-g", str(daemon.pw_gid)) if ROOT else ()
    port = tcpserver(procs, mtree, [program("qmail-qmqpd")], options=options)
    count, length = 20, 400
    result = subprocess.run(["qmqp-source", "-s", "4", "-m", str(count), "-l", str(length), "-f", "qs@example.org",
                             "-t", "joe@test.example", "127.0.0.1:%d" % port], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    log = system.wait_log(b"end msg ", count)
    assert log.count(b"to local joe@test.example\n") == count
    assert len(re.findall(rb"^info msg \d+: bytes \d+ from <qs@example\.org> qp \d+ uid %d$" % daemon.pw_uid,
                          log, re.M)) == count
    assert len(re.findall(rb"^delivery \d+: success: did_1\+0\+0/$", log, re.M)) == count
    assert stop(system) == 0
    assert queue_is_empty(mtree)

    read = mutt_read(procs, homes["joe"] / "Maildir", world_tmp / "mutt")
    assert len(read) == count
    assert sorted(read) == maildir(homes["joe"])  # mutt saw exactly the delivered bytes
    network = (rb"Received: \(qmail \d+ invoked %s\); " % (b"from network" if ROOT else b"by uid %d" % daemon.pw_uid)
               + DATE + rb"\n")
    for message in read:
        head = re.match(rb"Return-Path: <qs@example\.org>\nDelivered-To: joe@test\.example\n" + network
                        + QMQP_RECEIVED, message)
        assert head, message[:300]
        m = re.fullmatch(QMQP_PAYLOAD, message[head.end():])
        assert m, message[:600]
        assert len(message) - head.end() == length
        xs = [len(line) for line in m.group(1).splitlines()]
        assert xs[:-1] == list(range(1, len(xs)))  # qmqp-source's body: X, XX, XXX, ... cut at -l bytes
    for f in (homes["joe"] / "Maildir" / "new").iterdir():
        assert f.stat().st_uid == delivery_account().pw_uid


# 2. mbox, program and forward deliveries through the whole system

FROM_ = rb"From s@example\.org (Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
QUOTED = (b"Subject: e2e\nMessage-ID: <e2e@x>\n\n>From the start\n>>From quoted\n>>>From twice\nFromage\n"
          b"last line\n")


@pytest.mark.interop  # mutt
def test_mbox_delivery_from_lines_quoting_and_mutt(procs, mtree, world_tmp):
    homes = users(mtree, world_tmp, "joe")
    dotqmail(homes["joe"], "mbox", "./Mailbox\n")
    system = start(procs, mtree)
    send(mtree, [b"joe-mbox@test.example"])
    system.wait_log(b"end msg ", 1)
    send(mtree, [b"joe-mbox@test.example"])
    log = system.wait_log(b"end msg ", 2)
    assert len(re.findall(rb"^delivery \d: success: did_1\+0\+0/$", log, re.M)) == 2
    assert stop(system) == 0

    box = (homes["joe"] / "Mailbox").read_bytes()
    entry = (FROM_ + rb"Return-Path: <s@example\.org>\nDelivered-To: joe-mbox@test\.example\n" + QUEUED
             + re.escape(QUOTED) + rb"\n")
    assert re.fullmatch(entry * 2, box), box
    assert (homes["joe"] / "Mailbox").stat().st_uid == delivery_account().pw_uid

    read = mutt_read(procs, homes["joe"] / "Mailbox", world_tmp / "mutt", order="mailbox-order")
    assert len(read) == 2  # a body line "From the start" left unquoted would have made a third message
    assert b"".join(m + b"\n" for m in read) == box  # mutt splits the mbox exactly at our From_ lines


def test_program_delivery_gets_qmail_command_environment_and_the_recipients_uid(procs, mtree, world_tmp):
    homes = users(mtree, world_tmp, "joe")
    home = homes["joe"]
    variables = ["USER", "HOME", "LOCAL", "HOST", "RECIPIENT", "SENDER", "EXT", "EXT2", "EXT3", "DEFAULT", "HOST2",
                 "DTLINE", "RPLINE"]
    dotqmail(home, "prog-default", "|printf '%%s\\n' %s > vars; id -u > uid; id -G > groups; cat > body; "
             "echo prog ran\n" % " ".join('"$%s"' % v for v in variables))
    system = start(procs, mtree)
    send(mtree, [b"joe-prog-a-b@test.example"])
    log = system.wait_log(b"end msg ", 1)
    assert re.search(rb"^delivery 1: success: prog_ran/did_0\+0\+1/$", log, re.M), log
    assert stop(system) == 0

    pw = delivery_account()
    values = [pw.pw_name, str(home), "joe-prog-a-b", "test.example", "joe-prog-a-b@test.example", "s@example.org",
              "prog-a-b", "a-b", "b", "a-b", "test", "Delivered-To: joe-prog-a-b@test.example\n",
              "Return-Path: <s@example.org>\n"]
    assert (home / "vars").read_text() == "".join(v + "\n" for v in values)
    assert (home / "uid").read_text() == "%d\n" % pw.pw_uid  # the recipient's, not qmail-send's or root's
    if ROOT:
        assert (home / "groups").read_text() == "%d\n" % pw.pw_gid  # and no supplementary groups
        assert pw.pw_uid != pwd.getpwnam("qmails").pw_uid
    assert re.fullmatch(QUEUED + re.escape(MSG), (home / "body").read_bytes())  # fd 0: the message as queued


@pytest.mark.interop  # mutt
def test_forward_to_another_local_user(procs, mtree, world_tmp):
    homes = users(mtree, world_tmp, "joe", "sam")
    dotqmail(homes["joe"], "fwd", "&sam@test.example\n")
    system = start(procs, mtree)
    send(mtree, [b"joe-fwd@test.example"])
    log = system.wait_log(b"end msg ", 2)
    first, second = msg_numbers(log)
    forward_qp = re.search(rb"^delivery 1: success: did_0\+1\+0/qp_(\d+)/$", log, re.M)
    assert forward_qp, log
    info = re.search(rb"^info msg %d: bytes \d+ from <s@example\.org> qp (\d+) uid (\d+)$" % second, log, re.M)
    assert info and info.group(1) == forward_qp.group(1)
    assert int(info.group(2)) == delivery_account().pw_uid  # the forwarder's uid, as qmail-queue records it
    assert re.search(rb"^starting delivery 2: msg %d to local sam@test\.example$" % second, log, re.M)
    assert re.search(rb"^delivery 2: success: did_1\+0\+0/$", log, re.M)
    assert stop(system) == 0

    assert maildir(homes["joe"]) == []
    [delivered] = mutt_read(procs, homes["sam"] / "Maildir", world_tmp / "mutt")
    m = re.fullmatch(rb"Return-Path: <s@example\.org>\nDelivered-To: sam@test\.example\n" + QUEUED
                     + rb"Delivered-To: joe-fwd@test\.example\n" + QUEUED + re.escape(MSG), delivered)
    assert m, delivered
    assert (m.group(1), m.group(2)) == (forward_qp.group(1), info.group(2))
    assert queue_is_empty(mtree)


# 3. A bounce to a local sender, byte for byte

@pytest.mark.interop  # mutt
def test_bounce_to_a_local_sender_is_byte_exact(procs, mtree, world_tmp):
    homes = users(mtree, world_tmp, "joe")
    system = start(procs, mtree)
    send(mtree, [b"joe-nosuch@test.example"], sender=b"joe@test.example")
    log = system.wait_log(b"end msg ", 2)
    original, bounce = msg_numbers(log)
    assert re.search(rb"^delivery 1: failure: Sorry,_no_mailbox_here_by_that_name._\(#5\.1\.1\)/$", log, re.M), log
    info = re.search(rb"^info msg %d: bytes \d+ from <joe@test\.example> qp (\d+) uid (\d+)$" % original, log, re.M)
    bounce_qp = re.search(rb"^bounce msg %d qp (\d+)$" % original, log, re.M)
    assert info and bounce_qp, log
    # queued by qmail-send as itself: qmails on a qmail tree, where qmail-queue says "for bounce"
    qmails = pwd.getpwnam("qmails").pw_uid if ROOT else os.getuid()
    who = b"for bounce" if ROOT else b"by uid %d" % qmails
    assert re.search(rb"^info msg %d: bytes \d+ from <> qp %s uid %d$" % (bounce, bounce_qp.group(1), qmails), log, re.M)
    assert re.search(rb"^starting delivery 2: msg %d to local joe@test\.example$" % bounce, log, re.M)
    assert re.search(rb"^delivery 2: success: did_1\+0\+0/$", log, re.M)
    assert stop(system) == 0

    [delivered] = maildir(homes["joe"])
    expected = (b"Return-Path: <>\n"
                b"Delivered-To: joe@test.example\n"
                b"Received: (qmail " + bounce_qp.group(1) + b" invoked " + who + b"); DATE\n"
                b"Date: DATE\n"
                b"From: MAILER-DAEMON@test.example\n"
                b"To: joe@test.example\n"
                b"Subject: failure notice\n"
                b"\n"
                b"Hi. This is the qmail-send program at test.example.\n"
                b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
                b"This is a permanent error; I've given up. Sorry it didn't work out.\n"
                b"\n"
                b"<joe-nosuch@test.example>:\n"
                b"Sorry, no mailbox here by that name. (#5.1.1)\n"
                b"\n"
                b"--- Below this line is a copy of the message.\n"
                b"\n"
                b"Return-Path: <joe@test.example>\n"
                b"Received: (qmail " + info.group(1) + b" invoked by uid " + info.group(2) + b"); DATE\n"
                + MSG)
    pattern = re.escape(expected).replace(b"DATE", DATE)
    assert re.fullmatch(pattern, delivered), delivered
    assert mutt_read(procs, homes["joe"] / "Maildir", world_tmp / "mutt") == [delivered]
    assert queue_is_empty(mtree)


# 4. Retries after a temporary failure; the retry time survives TERM in local/N's mtime

def test_temporary_failure_is_retried_at_qmails_time_and_on_alrm(procs, mtree, world_tmp):
    homes = users(mtree, world_tmp, "joe")
    home = homes["joe"]
    dotqmail(home, "retry", "|if [ -e retried ]; then echo delivered on retry; exit 0; fi; touch retried; "
             "echo not yet; exit 111\n./Maildir/\n")
    system = start(procs, mtree)
    before = math.floor(time.time())
    send(mtree, [b"joe-retry@test.example"])
    log = system.wait_log(b"delivery 1: deferral: not_yet/\n")
    after = math.ceil(time.time())
    [n] = msg_numbers(log)
    assert stop(system) == 0
    assert system.log().endswith(b"status: exiting\n")

    birth = int((mtree / "queue" / "info" / str(n % 23) / str(n)).stat().st_mtime)
    retry = int((mtree / "queue" / "local" / str(n % 23) / str(n)).stat().st_mtime)
    assert before <= birth <= after
    # qmail's nextretry for the local channel: birth + (isqrt(pass start - birth) + 10)^2, the pass starting at once
    due = {(math.isqrt(start - birth) + 10) ** 2 for start in range(birth, after + 1)}
    assert retry - birth in due, (retry - birth, due)
    assert retry - birth >= 100
    assert maildir(home) == []

    again = start(procs, mtree)
    time.sleep(1.0)
    assert b"starting delivery" not in again.log()  # not due for another 100 seconds
    again.signal(signal.SIGALRM)
    log = again.wait_log(b"end msg %d\n" % n)
    assert re.search(rb"^starting delivery 1: msg %d to local joe-retry@test\.example\n" % n, log, re.M)
    assert re.search(rb"^delivery 1: success: delivered_on_retry/did_1\+0\+1/$", log, re.M), log
    assert stop(again) == 0
    [delivered] = maildir(home)
    assert re.fullmatch(rb"Return-Path: <s@example\.org>\nDelivered-To: joe-retry@test\.example\n" + QUEUED
                        + re.escape(MSG), delivered)


# 5. HUP rereads locals and virtualdomains; TERM waits for a running delivery

def hup(system, tree):
    """SIGHUP qmail-send; return once it has reread its controls (mail arriving before then is classified as
    before). It rereads at the top of the turn after the one the signal woke or interrupted; two requests over its
    control socket, each sent once the last was answered, are handled in two later turns: a hold of a message that
    does not exist changes nothing and logs nothing. (No fixed sleep: a loaded machine may take longer.)"""
    system.signal(signal.SIGHUP)
    for _ in range(2):
        p = subprocess.run([program("qmail-qctl"), "-h", "99999999"], env=qenv(tree), capture_output=True, timeout=60)
        assert p.returncode == 100 and b"no such message" in p.stdout, (p.returncode, p.stdout, p.stderr)


def test_hup_rereads_locals_and_virtualdomains(procs, mtree, world_tmp):
    homes = users(mtree, world_tmp, "joe")
    home = homes["joe"]
    dotqmail(home, "default", "./Maildir/\n")
    system = start(procs, mtree)
    send(mtree, [b"joe@other.example", b"box@virt.example"])
    log = system.wait_log(b": deferral: ", 2)  # both reports, in whichever order they come back
    assert re.search(rb"^starting delivery \d: msg \d+ to remote joe@other\.example$", log, re.M)
    assert re.search(rb"^starting delivery \d: msg \d+ to remote box@virt\.example$", log, re.M)
    assert log.count(b": deferral: no_remote_deliveries_in_these_tests./\n") == 2

    with open(mtree / "control" / "locals", "a") as f:
        f.write("other.example\n")
    (mtree / "control" / "virtualdomains").write_text("virt.example:joe\n")
    hup(system, mtree)
    send(mtree, [b"joe@other.example", b"box@virt.example"])
    log = system.wait_log(b"end msg ", 1)
    first, second = msg_numbers(log)
    assert re.search(rb"^starting delivery \d: msg %d to local joe@other\.example$" % second, log, re.M), log
    assert re.search(rb"^starting delivery \d: msg %d to local joe-box@virt\.example$" % second, log, re.M), log
    assert b"alert:" not in log
    assert stop(system) == 0
    delivered = [re.match(rb"Return-Path: <s@example\.org>\n(Delivered-To: [^\n]+\n)", m).group(1)
                 for m in maildir(home)]
    assert sorted(delivered) == [b"Delivered-To: joe-box@virt.example\n", b"Delivered-To: joe@other.example\n"]
    # the message queued before HUP keeps its classification
    assert (mtree / "queue" / "remote" / str(first % 23) / str(first)).exists()


def test_term_waits_for_a_running_delivery_then_exits_0(procs, mtree, world_tmp):
    homes = users(mtree, world_tmp, "joe")
    home = homes["joe"]
    dotqmail(home, "slow", "|touch started; while [ ! -e go ]; do sleep 0.05; done; echo slow done\n./Maildir/\n")
    system = start(procs, mtree)
    send(mtree, [b"joe-slow@test.example"])
    deadline = time.time() + 30
    while not (home / "started").exists():
        assert time.time() < deadline, system.log()
        time.sleep(0.02)
    system.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert system.proc.poll() is None  # still waiting for the delivery
    (home / "go").write_text("")
    log = system.wait_log(b"status: exiting\n")
    assert stop(system) == 0  # already gone: returns its exit code and checks the helpers left too
    success = log.index(b"delivery 1: success: slow_done/did_1+0+1/\n")
    assert re.search(rb"^status: local 0/10 remote 0/20 exitasap$", log[success:], re.M), log
    assert log.endswith(b"status: exiting\n")
    assert len(maildir(home)) == 1


# 6. Privilege: no deliveries as root

def test_account_with_uid_0_is_refused_through_the_whole_system(procs, mtree, world_tmp):
    home = make_home(world_tmp, "rootly")
    write_assign(mtree, [("=", "rootly", "root", 0, 0, home, "", "")])
    (home / ".qmail").write_text("|touch ran\n./Maildir/\n")
    system = start(procs, mtree)
    send(mtree, [b"rootly@test.example"])
    log = system.wait_log(b"\ndelivery 1: ")  # not "starting delivery 1: "
    [n] = msg_numbers(log)
    assert re.search(rb"^starting delivery 1: msg %d to local rootly@test\.example$" % n, log, re.M)
    assert re.search(rb"^delivery 1: deferral: Not_allowed_to_perform_deliveries_as_root./$", log, re.M), log
    assert stop(system) == 0
    assert maildir(home) == [] and not (home / "ran").exists()
    assert (mtree / "queue" / "local" / str(n % 23) / str(n)).read_bytes() == b"Trootly@test.example\0"
