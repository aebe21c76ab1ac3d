"""qmail-qmtpd transcripts: the installed program on a socketpair, a QMTP client written from the spec, a real queue."""

import os
import random
import re
import resource
import socket
import subprocess
import time

import pytest

from conftest import need, program, qenv, queued
from test_qmqpd import assert_nothing_queued, read_all

# ---- a QMTP client written from cr.yp.to/proto/qmtp.txt, independent of lib/qmtp/qmtp ----


def ns(data):
    """Netstring: `<length>:<bytes>,` (qmtp.txt's section 6)."""
    return str(len(data)).encode() + b":" + data + b","


def package(message_lines, sender, recipients, crlf=False):
    """qmtp.txt's section 4 (and qmail-qmtpd(8)): encoding #1 is 0d then lines joined by 0d0a; #2 is 0a then 0a."""
    sep = b"\r\n" if crlf else b"\n"
    encoded = (b"\r" if crlf else b"\n") + sep.join(message_lines)
    return ns(encoded) + ns(sender) + ns(b"".join(ns(r) for r in recipients))


def lines(message):
    """Split an LF-terminated message into the lines the spec talks about (the last one may be empty)."""
    return message.split(b"\n")


def read_responses(sock, count, timeout=20):
    """Read count response netstrings (qmtp.txt's section 5, qmail-qmtpd(8)); each nonempty, starting with K, Z or D."""
    sock.settimeout(timeout)
    buf = b""
    out = []
    while len(out) < count:
        m = re.match(rb"(0|[1-9][0-9]*):", buf)
        if m and len(buf) >= m.end() + int(m.group(1)) + 1:
            end = m.end() + int(m.group(1))
            assert buf[end:end + 1] == b",", buf
            text = buf[m.end():end]
            assert text[:1] in (b"K", b"Z", b"D"), text
            out.append(text)
            buf = buf[end + 1:]
            continue
        assert re.fullmatch(rb"\d{0,10}(:.*)?", buf, re.S), buf
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return out, buf


def responses(data):
    """Split a stream of response netstrings."""
    out = []
    pos = 0
    number = re.compile(rb"(\d+):")
    while pos < len(data):
        m = number.match(data, pos)
        assert m, data[pos:pos + 100]
        end = m.end() + int(m.group(1))
        assert data[end:end + 1] == b","
        out.append(data[m.end():end])
        pos = end + 1
    return out


# ---- running the installed qmail-qmtpd ----

K = re.compile(rb"Kok (\d+) qp (\d+)")
RCPTHOSTS_D = b"Dsorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
CANT_HANDLE = b"Dsorry, I can't handle that recipient (#5.1.3)"
BAD_SENDER = b"Dunacceptable sender (#5.1.7)"
TOO_BIG = b"Dsorry, that message size exceeds my databytes limit (#5.3.4)"


def control(tree, **files):
    """Write control files (name=value); None removes one."""
    for name, value in files.items():
        path = tree / "control" / name
        if value is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text("%s\n" % value)


def start(procs, tree, conn, preexec=None, **env):
    """Start qmail-qmtpd with conn as fds 0 and 1; env given as TCPREMOTEIP=... (None removes)."""
    env.setdefault("TCPREMOTEIP", "127.0.0.1")
    environ = qenv(tree, **{k: v for k, v in env.items() if v is not None})
    for k in [k for k, v in env.items() if v is None]:
        environ.pop(k, None)
    return procs.start([program("qmail-qmtpd")], stdin=conn, stdout=conn, stderr=subprocess.PIPE, env=environ,
                       preexec_fn=preexec)


def talk(sock, data, timeout=20):
    """Send data and half-close (the server may have hung up already); return all the server sends."""
    with sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return read_all(sock, timeout)


def session(procs, tree, data, **env):
    """Send data over a socketpair, half-close; return (responses, exit code, log)."""
    ours, theirs = socket.socketpair()
    p = start(procs, tree, theirs, **env)
    theirs.close()
    out = responses(talk(ours, data))
    return out, p.wait(20), p.stderr.read().decode()


def payloads(tree):
    """Return [(message after our two Received lines, envelope records after u/p)] sorted by message."""
    out = []
    for mess, todo in queued(tree).values():
        m = re.match(rb"Received: \(qmail \d+ invoked [^)]*\); [^\n]+\nReceived: from [^\n]+\n  by [^\n]+ with QMTP; "
                     rb"\d+ \w{3} \d{4} \d\d:\d\d:\d\d -0000\n", mess)
        assert m, mess[:300]
        out.append((mess[m.end():], re.sub(rb"^u\d+\0p\d+\0", b"", todo)))
    return sorted(out)


@pytest.fixture
def relaying(tree):
    """The test tree, accepting any recipient domain (no rcpthosts)."""
    control(tree, rcpthosts=None)
    return tree


# ---- the spec's own example ----

SPEC_M1 = [b"Received: (qmail-queue invoked by uid 0); 29 Jul 1996 09:36:40 -0000",
           b"Date: 29 Jul 1996 11:35:35 -0000", b"Message-ID: <19960729113535.375.qmail@heaven.af.mil>",
           b"From: God@heaven.af.mil", b"To: djb@silverton.berkeley.edu (D. J. Bernstein)", b"", b"This is a test.", b""]
SPEC_M2 = [b"From: MAILER-DAEMON@heaven.af.mil", b"To:", b'   Hate."The Quoting"@SILVERTON.berkeley.edu,',
           b'   "\\\\Backslashes!"@silverton.BERKELEY.edu', b"",
           b"The recipient addresses here could have been encoded in SMTP as", b"",
           b"   RCPT TO:<Hate.The\\ Quoting@silverton.berkeley.EDU>", b"   RCPT TO:<\\\\Backslashes!@silverton.berkeley.edu>",
           b"", b"This ends with a partial last line, right here"]
SPEC_R2 = [b"Hate.The Quoting@silverton.berkeley.edu", b"\\Backslashes!@silverton.berkeley.EDU"]


def test_the_example_from_the_spec(procs, relaying):
    data = package(SPEC_M1, b"God-DSN-37@heaven.af.mil", [b"djb@silverton.berkeley.edu"]) + package(
        SPEC_M2, b"", SPEC_R2, crlf=True)
    assert data.startswith(b"246:\n") and b",356:\r" in data and b",0:,83:39:Hate." in data  # the spec's bytes
    before = int(time.time())
    out, code, log = session(procs, relaying, data)
    assert code == 0 and len(out) == 3 and all(K.fullmatch(r) for r in out), out
    assert out[1] == out[2] and out[0] != out[1]  # one qp per message
    assert all(before <= int(K.fullmatch(r).group(1)) <= time.time() + 1 for r in out)
    assert payloads(relaying) == sorted([
        (b"\n".join(SPEC_M1), b"FGod-DSN-37@heaven.af.mil\0Tdjb@silverton.berkeley.edu\0"),
        (b"\n".join(SPEC_M2), b"F\0T" + b"\0T".join(SPEC_R2) + b"\0")])
    assert log.count("queued qp ") == 2


def test_received_line_like_qmail(procs, relaying):
    out, _, _ = session(procs, relaying, package([b"hi", b""], b"a@b", [b"c@d"]), TCPLOCALIP="10.0.0.9",
                        TCPREMOTEHOST="bad host\n.example", TCPREMOTEINFO="id[1]", TCPREMOTEIP="127.0.0.3")
    qp = int(K.fullmatch(out[0]).group(2))
    [(mess, todo)] = queued(relaying).values()
    assert re.fullmatch(rb"Received: \(qmail %d invoked [^)]*\); \d+ \w{3} \d{4} \d\d:\d\d:\d\d -0000\n"
                        rb"Received: from bad\?host\?\.example \(id\[1\]@127\.0\.0\.3\)\n"
                        rb"  by 10\.0\.0\.9 with QMTP; \d+ \w{3} \d{4} \d\d:\d\d:\d\d -0000\nhi\n" % qp, mess), mess
    assert re.fullmatch(rb"u\d+\0p%d\0Fa@b\0Tc@d\0" % qp, todo)
    session(procs, relaying, package([b"x"], b"", [b"c@d"]), TCPLOCALIP=None, TCPLOCALHOST=None, TCPREMOTEIP=None)
    assert any(b"\nReceived: from unknown (unknown)\n  by unknown with QMTP; " in m for m, _ in queued(relaying).values())
    session(procs, relaying, package([b"x"], b"", [b"c@d"]), TCPLOCALHOST="mx.example", TCPLOCALIP="10.0.0.9")
    assert any(b"  by mx.example with QMTP; " in m for m, _ in queued(relaying).values())


# ---- recipients, senders, sizes ----


def more_rcpthosts(tree, domains):
    """Build control/morercpthosts.cdb with tinycdb's cdb(1), as qmail-newmrh's output (keys, empty values)."""
    need("cdb")
    src = "".join("+%d,0:%s->\n" % (len(d), d) for d in domains) + "\n"
    subprocess.run(["cdb", "-c", str(tree / "control" / "morercpthosts.cdb")], input=src.encode(), check=True)


def test_each_recipient_gets_its_own_verdict_in_order(procs, tree):
    control(tree, rcpthosts="test.example\n.sub.example\n# comment\nUPPER.example")
    more_rcpthosts(tree, ["more.example", ".deep.example"])
    rcpts = [b"ok@test.example", b"x@other.example", b"y@a.sub.example", b"z@MORE.example", b"a" * 1000,
             b"n\0l@test.example", b"noat", b"w@b.deep.example", b"u@upper.EXAMPLE", b"v@sub.example",
             b"n\0l@other.example", b"a" * 999, b"ok@test.example", b"empty.domain@"]
    out, code, _ = session(procs, tree, package([b"Subject: v", b"", b"x", b""], b"s@x", rcpts))
    k = out[0]
    assert K.fullmatch(k) and code == 0
    assert out == [k, RCPTHOSTS_D, k, k, CANT_HANDLE, CANT_HANDLE, k, k, k, RCPTHOSTS_D, RCPTHOSTS_D, k, k, RCPTHOSTS_D]
    [(_, todo)] = payloads(tree)
    assert todo == b"Fs@x\0T" + b"\0T".join(r for r, v in zip(rcpts, out) if v == k) + b"\0"


def test_morercpthosts_cdb_is_ignored_without_rcpthosts(procs, tree):
    control(tree, rcpthosts=None)
    more_rcpthosts(tree, ["more.example"])
    out, _, _ = session(procs, tree, package([b"x"], b"", [b"a@anywhere.example"]))
    assert K.fullmatch(out[0])
    control(tree, rcpthosts="test.example")
    out, _, log = session(procs, tree, package([b"x"], b"", [b"a@anywhere.example", b"b@more.example"]))
    assert out == [RCPTHOSTS_D, K.fullmatch(out[1]).group(0)]
    out, _, log = session(procs, tree, package([b"x"], b"", [b"a@anywhere.example"]))
    assert out == [RCPTHOSTS_D] and "not queued (no recipient accepted) qp" in log


def test_corrupt_morercpthosts_cdb_exits_111_without_a_reply(procs, tree):
    (tree / "control" / "morercpthosts.cdb").write_bytes(b"not a cdb")
    out, code, log = session(procs, tree, package([b"x"], b"", [b"a@anywhere.example"]))
    assert out == [] and code == 111 and "morercpthosts.cdb" in log
    assert_nothing_queued(tree)


def test_relayclient_skips_rcpthosts_and_is_appended(procs, tree):
    out, _, _ = session(procs, tree, package([b"x"], b"s", [b"a@other.example", b"b" * 993, b"c" * 994, b"d"]),
                        RELAYCLIENT="@relay")
    k = out[0]
    assert out == [k, k, CANT_HANDLE, k]  # 994 + len("@relay") = 1000: too long, as qmail
    assert payloads(tree)[0][1] == b"Fs\0Ta@other.example@relay\0T" + b"b" * 993 + b"@relay\0Td@relay\0"


@pytest.mark.parametrize("sender", [b"a" * 1000, b"a\0b", b"x" * 300000])
def test_unacceptable_sender(procs, tree, sender):
    out, code, log = session(procs, tree, package([b"x"], sender, [b"a@test.example", b"b@other.example"]))
    assert out == [BAD_SENDER, RCPTHOSTS_D] and code == 0
    assert re.search(r"not queued \(Dunacceptable sender \(#5\.1\.7\)\) qp \d+ size 1 rcpts 1/2 from ", log), log
    assert_nothing_queued(tree)


@pytest.mark.parametrize("crlf", [False, True])
def test_databytes_counts_the_stored_message(procs, relaying, crlf):
    control(relaying, databytes=10)
    fits, over = [b"123456789", b""], [b"1234567890", b""]  # 10 and 11 bytes once stored with LF line ends
    out, _, _ = session(procs, relaying, package(fits, b"", [b"a"], crlf) + package(over, b"", [b"a", b"b@c"], crlf))
    assert K.fullmatch(out[0]) and out[1:] == [TOO_BIG, TOO_BIG]
    assert payloads(relaying) == [(b"123456789\n", b"F\0Ta\0")]


def test_databytes_environment_overrides_control(procs, relaying):
    control(relaying, databytes=5)
    out, _, _ = session(procs, relaying, package([b"x" * 20], b"", [b"a"]), DATABYTES="100")
    assert K.fullmatch(out[0])
    out, _, _ = session(procs, relaying, package([b"x" * 20], b"", [b"a"]), DATABYTES="19")
    assert out == [TOO_BIG]


def test_zero_recipients_get_no_response_and_nothing_is_queued(procs, relaying):
    out, code, _ = session(procs, relaying, ns(b"\nx") + ns(b"a@b") + ns(b"") + package([b"y"], b"", [b"c"]))
    assert len(out) == 1 and K.fullmatch(out[0]) and code == 0
    assert payloads(relaying) == [(b"y", b"F\0Tc\0")]


def test_qmail_queue_failure_goes_to_the_accepted_recipients_only(procs, tree, world_tmp):
    script = world_tmp / "qq"
    script.write_text("#!/bin/sh\ncat >/dev/null\nexit 31\n")
    script.chmod(0o755)
    out, _, _ = session(procs, tree, package([b"x"], b"", [b"a@test.example", b"b@other.example"]),
                        QMAILQUEUE=str(script))
    assert out == [b"Dmail server permanently rejected message (#5.3.0)", RCPTHOSTS_D]


# ---- encodings and pipelining ----

MESSAGES = [b"Subject: plain\n\nbody\n", b"no final newline", b"\n", b"bare\rCR\r\n\r\nand \x00 NUL \xff\n\r",
            b"lone CR at the end\r", b"".join(b"line %05d \xe9\n" % i for i in range(20000))]


def pipeline(n):
    """n packages alternating encodings; return (bytes, [(stored message, envelope)]): either way, the lines come back."""
    data, want = b"", []
    for i in range(n):
        message = MESSAGES[i % len(MESSAGES)] + b"#%d" % i
        crlf = i % 2 == 1
        data += package(lines(message), b"s%d@x" % i, [b"r%d@test.example" % i, b"bad@x"], crlf)
        want.append((message, b"Fs%d@x\0Tr%d@test.example\0" % (i, i)))
    return data, sorted(want)


def test_pipelined_packages_in_both_encodings_are_stored_byte_exact(procs, tree):
    data, want = pipeline(24)
    out, code, log = session(procs, tree, data)
    assert code == 0 and len(out) == 48
    assert all(K.fullmatch(out[i]) for i in range(0, 48, 2)) and set(out[1::2]) == {RCPTHOSTS_D}
    assert len({K.fullmatch(out[i]).group(2) for i in range(0, 48, 2)}) == 24
    assert payloads(tree) == want


def test_a_pipeline_split_into_random_chunks(procs, tree):
    data, want = pipeline(12)
    rng = random.Random(5)
    ours, theirs = socket.socketpair()
    p = start(procs, tree, theirs)
    theirs.close()
    with ours:
        pos = 0
        while pos < len(data):
            step = rng.choice([1, 2, 3, 7, 100, 4096, 70000])
            ours.sendall(data[pos:pos + step])
            pos += step
            if rng.random() < 0.05:
                time.sleep(0.01)
        ours.shutdown(socket.SHUT_WR)
        out = responses(read_all(ours))
    assert p.wait(20) == 0 and len(out) == 24
    assert payloads(tree) == want


def test_no_response_before_the_last_byte_and_no_waiting_after_it(procs, relaying):
    first, second = package([b"one"], b"", [b"a", b"b"]), package([b"two"], b"", [b"c"])
    ours, theirs = socket.socketpair()
    p = start(procs, relaying, theirs)
    theirs.close()
    with ours:
        ours.sendall(first + second[:-1])
        got, rest = read_responses(ours, 2)  # the server may not wait for more data before answering
        assert len(got) == 2 and rest == b""
        ours.settimeout(1.0)
        with pytest.raises(socket.timeout):
            ours.recv(100)  # the second package is not complete
        ours.sendall(second[-1:])
        got2, _ = read_responses(ours, 1)
        assert K.fullmatch(got2[0])
        ours.shutdown(socket.SHUT_WR)
        assert read_all(ours) == b""
    assert p.wait(20) == 0
    assert len(queued(relaying)) == 2


# ---- malformed input, lies and departures ----

GOOD = package([b"good"], b"", [b"a@test.example"])


@pytest.mark.parametrize("bad, where", [
    (b"1x:\nab,0:,0:,", "message"),
    (b"04:\nab,0:,0:,", "message"),
    (b"3:\nab;0:,0:,", "message"),
    (b"3:\nab,0:;", "sender"),
    (b"3:\nab,+0:,0:,", "sender"),
    (b"3:\nab,0:,4:2:ab,,", "recipient list"),  # the inner netstring runs past the list's stated length
    (b"3:\nab,0:,4:3:ab,,", "recipient list"),
    (b"3:\nab,0:,5:2:abX,", "recipient list"),
    (b"3:\nab,0:,5:2:ab,X", "recipient list"),
    (b"GET / HTTP/1.0\r\n\r\n", "message"),
])
def test_malformed_package_gets_one_clear_d_reply_exit_100_and_nothing_queued(procs, tree, bad, where):
    out, code, log = session(procs, tree, GOOD + bad + GOOD)
    assert K.fullmatch(out[0]) and len(out) == 2
    assert out[1] == b"Dprotocol error: netstring format error in the %s (#5.5.2)" % where.encode()
    assert code == 100 and "protocol error from unknown[127.0.0.1]" in log
    assert len(queued(tree)) == 1


@pytest.mark.parametrize("bad", [b"0:,0:,0:,", b"3:Xab,0:,0:,", b"3: ab,0:,0:,"])
def test_message_in_neither_encoding_is_refused(procs, tree, bad):
    out, code, _ = session(procs, tree, bad)
    assert out == [b"Dmessage is neither LF (\\n) nor CRLF (\\r) encoded (#5.6.0)"] and code == 100
    assert_nothing_queued(tree)


def test_length_over_qmails_cap_is_refused_at_once_with_exit_111(procs, tree):
    out, code, _ = session(procs, tree, b"2000000000:")
    assert out == [b"Dprotocol error: netstring length exceeds 200000000 in the message (#5.5.2)"] and code == 111


@pytest.mark.parametrize("cut", [1, 3, 5, 200, -30, -12, -2, -1])
def test_client_leaving_mid_package_queues_nothing_of_it(procs, tree, cut):
    big = package([b"x" * 100000, b""], b"a@b", [b"c@test.example", b"d@test.example"])
    out, code, log = session(procs, tree, GOOD + big[:cut])
    assert len(out) == 1 and K.fullmatch(out[0]) and code == 0
    assert "lost connection from unknown[127.0.0.1] while receiving the" in log
    assert len(queued(tree)) == 1
    assert len([f for f in (tree / "queue" / "mess").rglob("*") if f.is_file()]) == 1


def limit_memory(megabytes):
    """preexec_fn: cap the address space, so that a big allocation fails (MemoryError, exit 111)."""
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))
    return apply


@pytest.mark.parametrize("lie", [
    b"199999999:\nabc",
    ns(b"\nx") + b"199999999:abc",
    ns(b"\nx") + ns(b"") + b"199999999:3:abc,",
    ns(b"\nx") + ns(b"") + b"199999999:199999990:abc",
])
def test_lying_lengths_allocate_nothing(procs, tree, lie):
    ours, theirs = socket.socketpair()
    p = start(procs, tree, theirs, preexec=limit_memory(150))
    theirs.close()
    with ours:
        ours.sendall(GOOD + lie)
        time.sleep(0.3)
        ours.shutdown(socket.SHUT_WR)
        out = responses(read_all(ours))
    assert p.wait(20) == 0, p.stderr.read()
    assert len(out) == 1 and len(queued(tree)) == 1


def test_a_huge_recipient_list_keeps_bounded_memory_and_answers_every_recipient(procs, relaying):
    n = 600000  # 1.8 MB of empty recipients: past the 1000000 bytes whose recipients are kept
    data = package([b"x"], b"", [b""] * n)
    ours, theirs = socket.socketpair()
    p = start(procs, relaying, theirs, preexec=limit_memory(150))
    theirs.close()
    with ours:
        ours.sendall(data)
        ours.shutdown(socket.SHUT_WR)
        out = responses(read_all(ours, 120))
    assert p.wait(60) == 0 and len(out) == n
    kept = 1000000 // 3 + 1
    assert all(K.fullmatch(r) for r in out[:kept]) and len(set(out[:kept])) == 1
    assert set(out[kept:]) == {b"Zsorry, too many recipients in one package (#4.5.3)"}
    [(_, todo)] = payloads(relaying)
    assert todo.count(b"\0T") == kept


def test_per_read_timeout(procs, relaying):
    control(relaying, timeoutqmtpd=1)
    ours, theirs = socket.socketpair()
    p = start(procs, relaying, theirs)
    theirs.close()
    with ours:
        ours.sendall(GOOD + GOOD[:9])
        got, _ = read_responses(ours, 1)
        t = time.time()
        assert p.wait(10) == 111 and 0.8 < time.time() - t < 5
    assert "timeout from unknown[127.0.0.1] while receiving the sender" in p.stderr.read().decode()
    assert len(queued(relaying)) == 1 and K.fullmatch(got[0])


def test_session_deadline_while_trickling(procs, relaying):
    control(relaying, qmtpddeadline=2)
    ours, theirs = socket.socketpair()
    p = start(procs, relaying, theirs)
    theirs.close()
    t = time.time()
    with ours:
        ours.sendall(GOOD)
        for byte in GOOD:
            try:
                ours.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.25)
            if p.poll() is not None:
                break
    assert p.wait(10) == 111 and time.time() - t < 6
    assert "session deadline reached" in p.stderr.read().decode()
    assert len(queued(relaying)) == 1
    assert [f for f in (relaying / "queue" / "pid").iterdir()] == []


def test_stderr_on_the_client_socket_never_reaches_the_client(procs, tree):
    ours, theirs = socket.socketpair()
    environ = qenv(tree, TCPREMOTEIP="127.0.0.1")
    p = procs.start([program("qmail-qmtpd")], stdin=theirs, stdout=theirs, stderr=theirs, env=environ)
    theirs.close()
    with ours:
        ours.sendall(GOOD + b"xx")
        ours.shutdown(socket.SHUT_WR)
        out = responses(read_all(ours))
    assert p.wait(20) == 100
    assert len(out) == 2 and K.fullmatch(out[0]) and out[1].startswith(b"Dprotocol error")
