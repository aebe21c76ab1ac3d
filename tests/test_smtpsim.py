"""The destination simulator (tests/smtpsim.py) driven by real clients: smtplib, qmail-remote, smtp-source."""

import json
import os
import signal
import smtplib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import smtpsim
from conftest import need, program, qenv
from smtpsim import Limits, Simulator, Sink

TOP = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_loop_left():
    """Every simulator loop thread a test starts is stopped by the end of the test."""
    yield
    smtpsim.wait_until(lambda: [t for t in threading.enumerate() if t.name == "smtpsim"], lambda ts: not ts, 10)


def client(sink, timeout=5.0):
    """Return an smtplib client connected to a sink (its greeting read)."""
    return smtplib.SMTP(*sink.address, timeout=timeout)


def closed_by_peer(sock, timeout=5.0):
    """Return True once the peer closed sock (reads drained), False at the deadline."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sock.recv(65536) == b"":
                return True
    except (ConnectionResetError, socket.timeout):
        return False
    return False


# ---- the pure parts: dot-unstuffing, addresses, behaviours


def stuff(lines):
    """Return lines as SMTP DATA: CRLF ends, leading dots doubled, the final dot."""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


LINE = st.lists(st.sampled_from([b".", b"..", b"a", b"\r", b" ", b"\xff", b"\0", b".\r"]), max_size=6).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=12), st.lists(st.integers(1, 40), max_size=20), st.binary(max_size=20))
def test_data_reader_unstuffs_in_any_chunks(lines, cuts, after):
    """Whatever the chunking, the reader ends at the final dot, gives the lines back, and leaves what follows."""
    wire = stuff(lines) + after
    reader = smtpsim.DataReader(keep=True, limit=1 << 20)
    pos, finished, rest = 0, False, b""
    for size in cuts + [len(wire)]:
        finished, rest = reader.feed(wire[pos:pos + size])
        pos += size
        if finished:
            break
    assert finished
    assert rest + wire[pos:] == after
    expected = b"".join(line + b"\r\n" for line in lines)
    assert bytes(reader.body) == expected and reader.size == len(expected)


@given(st.lists(LINE, max_size=12), st.integers(0, 100))
def test_data_reader_counts_past_its_limit_without_keeping(lines, limit):
    """A message over the limit is counted in full and stored only up to the limit."""
    reader = smtpsim.DataReader(keep=True, limit=limit)
    assert reader.feed(stuff(lines))[0]
    size = sum(len(line) + 2 for line in lines)
    assert reader.size == size and reader.too_big == (size > limit)
    assert len(reader.body) <= limit


@pytest.mark.parametrize("argument, path", [
    (b"<a@b>", "a@b"), (b"<> BODY=8BITMIME", ""), (b' <"a >b"@c> SIZE=9', '"a >b"@c'), (b"a@b", "a@b"),
    (b"<a@b", "a@b"),
])
def test_path_of(argument, path):
    assert smtpsim.path_of(argument) == path


BEHAVIOUR = st.one_of(
    st.just(smtpsim.healthy()), st.just(smtpsim.mute()), st.just(smtpsim.drop_after_dot()),
    st.floats(0.01, 5).map(smtpsim.slow_greeting), st.floats(0.01, 5).map(smtpsim.slow_data),
    st.integers(1, 9).map(smtpsim.too_many),
    st.dictionaries(st.sampled_from(["a@x", "b@x", "*@y"]), st.sampled_from([450, 451, 550, 553]),
                    min_size=1).map(smtpsim.rcpt_codes))


@given(BEHAVIOUR, BEHAVIOUR, BEHAVIOUR)
def test_combining_behaviours(a, b, c):
    """healthy is neutral, combining is associative, and each side's settings survive in the result."""
    healthy = smtpsim.healthy()
    assert healthy + a == a == a + healthy
    assert (a + b) + c == a + (b + c)
    both = a + b
    for name in ("greeting_delay", "mute", "max_concurrent", "drop_after_dot", "data_delay"):
        expected = getattr(b, name) if getattr(b, name) != getattr(healthy, name) else getattr(a, name)
        assert getattr(both, name) == expected
    assert set(both.rcpt_codes) == set(a.rcpt_codes) | set(b.rcpt_codes)


def test_rcpt_code_matching():
    behaviour = smtpsim.rcpt_codes({"Bad@X": 550, "*@later.example": 451, lambda a: a.startswith("q"): 452})
    assert [behaviour.code_for(a) for a in ("bad@x", "z@later.example", "q@y", "ok@x", "c@[127.0.0.1]")] == [
        550, 451, 452, None, None]
    with pytest.raises(ValueError):
        smtpsim.rcpt_codes({"a@b": 250})


def test_behaviour_from_spec():
    built = smtpsim.behaviour_from_spec({"slow_greeting": 2, "too_many": 3, "rcpt_codes": {"a@b": 550}})
    assert built == smtpsim.slow_greeting(2) + smtpsim.too_many(3) + smtpsim.rcpt_codes({"a@b": 550})
    assert smtpsim.behaviour_from_spec("mute") == smtpsim.mute()
    assert smtpsim.behaviour_from_spec(None) == smtpsim.healthy()
    with pytest.raises(ValueError):
        smtpsim.behaviour_from_spec({"flaky": 1})


# ---- each behaviour against smtplib


def test_healthy_records_a_transaction_with_unstuffed_body():
    with Sink(host="127.0.1.1", name="a.example", keep_bodies=True) as sink:
        c = client(sink)
        code, features = c.ehlo("client.example")
        assert code == 250 and b"PIPELINING" in features and b"8BITMIME" in features and b"STARTTLS" not in features
        assert c.sendmail("s@x", ["a@a.example", "b@a.example"], b"Subject: t\r\n\r\n.dot\r\n..two\r\nend\r\n") == {}
        assert c.noop()[0] == 250 and c.rset()[0] == 250
        c.quit()
        records = sink.wait_for(lambda r: r["connections_closed"] == 1)
    [t] = records["transactions"]
    assert (t["sender"], t["recipients"]) == ("s@x", ["a@a.example", "b@a.example"])
    assert sink.transactions()[0]["body"] == b"Subject: t\r\n\r\n.dot\r\n..two\r\nend\r\n"
    assert t["bytes"] == len(b"Subject: t\r\n\r\n.dot\r\n..two\r\nend\r\n")
    assert records["errors"] == []
    assert records["recipients_per_transaction"] == [2]
    assert records["connections_opened"] == 1 and records["max_concurrent"] == 1
    assert [n for _, n in records["concurrency"]] == [1, 0]


def test_several_transactions_per_session_and_helo():
    with Sink(host="127.0.1.1") as sink:
        c = client(sink)
        c.helo("client.example")
        for n in range(1, 4):
            c.sendmail("s@x", ["r%d@y" % k for k in range(n)], b"x\r\n")
        c.quit()
        records = sink.wait_for(lambda r: r["connections_closed"] == 1)
    assert records["recipients_per_transaction"] == [1, 2, 3] and records["transaction_count"] == 3


def test_protocol_errors():
    with Sink(host="127.0.1.1") as sink:
        c = client(sink)
        c.ehlo()
        assert c.docmd("RCPT TO:<a@b>")[0] == 503
        assert c.docmd("DATA")[0] == 503
        assert c.docmd("MAIL FROM:<a@b>")[0] == 250
        assert c.docmd("MAIL FROM:<a@b>")[0] == 503
        assert c.docmd("DATA")[0] == 554
        assert c.docmd("WHAT")[0] == 502
        c.quit()


def test_slow_greeting_is_measured():
    with Sink(smtpsim.slow_greeting(0.4), host="127.0.1.2") as sink:
        start = time.monotonic()
        c = client(sink)
        assert 0.4 <= time.monotonic() - start < 5
        c.quit()


def test_mute_accepts_and_never_greets():
    with Sink(smtpsim.mute(), host="127.0.1.3") as sink:
        with pytest.raises((socket.timeout, smtplib.SMTPServerDisconnected)):
            smtplib.SMTP(*sink.address, timeout=0.3)
        records = sink.wait_for(lambda r: r["connections_closed"] == 1)
        assert records["connections_opened"] == 1 and records["transactions"] == []


def test_too_many_gives_421_to_the_k_plus_first():
    with Sink(smtpsim.too_many(2), host="127.0.1.4") as sink:
        first, second = client(sink), client(sink)
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            client(sink)
        assert refused.value.smtp_code == 421
        first.quit()
        sink.wait_for(lambda r: r["open_now"] == 1)
        third = client(sink)  # a place is free again
        third.quit()
        second.quit()
        records = sink.wait_for(lambda r: r["connections_closed"] == 4)
    assert records["errors"] == []
    assert records["refused_421"] == 1 and records["max_concurrent"] == 2 and records["connections_opened"] == 4
    assert max(n for _, n in records["concurrency"]) == 2


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 4), st.integers(0, 7))
def test_too_many_refuses_exactly_the_excess(k, n):
    """n connections held open at once against too_many(k): max(0, n - k) get 421, min(n, k) are served."""
    with Sink(smtpsim.too_many(k), host="127.0.1.4") as sink:
        held, refused = [], 0
        for _ in range(n):
            try:
                held.append(client(sink))
            except smtplib.SMTPConnectError:
                refused += 1
        records = sink.wait_for(lambda r: r["refused_421"] == refused)
        for c in held:
            c.close()
    assert refused == max(0, n - k) and len(held) == min(n, k)
    assert records["max_concurrent"] == min(n, k)


def test_slow_greeting_and_too_many_combine():
    with Sink(smtpsim.slow_greeting(0.2) + smtpsim.too_many(1), host="127.0.1.5") as sink:
        start = time.monotonic()
        first = client(sink)
        with pytest.raises(smtplib.SMTPConnectError):
            client(sink)
        assert time.monotonic() - start >= 0.4
        first.quit()


def test_rcpt_codes():
    behaviour = smtpsim.rcpt_codes({"bad@x": 550, lambda a: a.startswith("later"): 451})
    with Sink(behaviour, host="127.0.1.6") as sink:
        c = client(sink)
        c.ehlo()
        c.mail("s@x")
        assert [c.rcpt(a)[0] for a in ("ok@x", "bad@x", "later@x", "ok2@x")] == [250, 550, 451, 250]
        assert c.data(b"hi\r\n")[0] == 250
        c.quit()
        records = sink.wait_for(lambda r: r["connections_closed"] == 1)
    assert records["transactions"][0]["recipients"] == ["ok@x", "ok2@x"]
    assert records["rcpt_refused"] == [["bad@x", 550], ["later@x", 451]]


def test_drop_after_dot():
    with Sink(smtpsim.drop_after_dot(), host="127.0.1.7") as sink:
        c = client(sink)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            c.sendmail("s@x", ["a@y"], b"hi\r\n")
        records = sink.wait_for(lambda r: r["connections_closed"] == 1)
    assert records["errors"] == []
    assert records["dropped_after_dot"] == 1 and records["transactions"] == []


def test_slow_data_delays_the_reply_to_the_dot():
    with Sink(smtpsim.slow_data(0.4), host="127.0.1.8") as sink:
        c = client(sink)
        c.ehlo()
        c.mail("s@x")
        c.rcpt("a@y")
        start = time.monotonic()
        assert c.data(b"hi\r\n")[0] == 250
        assert 0.4 <= time.monotonic() - start < 5
        c.quit()


def test_pipelined_commands_are_answered_in_order():
    with Sink(smtpsim.slow_data(0.1), host="127.0.1.8") as sink:
        s = socket.create_connection(sink.address, timeout=5)
        s.sendall(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\nhi\r\n.\r\n"
                  b"MAIL FROM:<g@h>\r\nRCPT TO:<i@j>\r\nDATA\r\nho\r\n.\r\nQUIT\r\n")
        replies = b""
        while not replies.endswith(b"bye\r\n"):
            chunk = s.recv(4096)
            assert chunk
            replies += chunk
        s.close()
        codes = [line[:3] for line in replies.split(b"\r\n") if line[3:4] == b" "]
        assert codes == [b"220", b"250", b"250", b"250", b"250", b"354", b"250", b"250", b"250", b"354", b"250",
                         b"221"]
        records = sink.wait_for(lambda r: r["connections_closed"] == 1)
    assert records["errors"] == []
    assert records["recipients_per_transaction"] == [2, 1]


# ---- bounds


def test_session_time_limit():
    with Sink(smtpsim.mute(), host="127.0.1.9", limits=Limits(session=0.3)) as sink:
        s = socket.create_connection(sink.address, timeout=5)
        assert closed_by_peer(s)
        s.close()
        sink.wait_for(lambda r: r["session_timeouts"] == 1 and r["connections_closed"] == 1)


def test_long_line_and_big_message_and_many_recipients():
    limits = Limits(line=100, message=50, recipients=2)
    with Sink(host="127.0.1.9", limits=limits) as sink:
        c = client(sink)
        c.ehlo()
        c.mail("s@x")
        assert [c.rcpt("r%d@y" % k)[0] for k in range(3)] == [250, 250, 452]
        assert c.data(b"x" * 60 + b"\r\n")[0] == 552
        c.quit()
        s = socket.create_connection(sink.address, timeout=5)
        s.sendall(b"NOOP " + b"x" * 200)
        assert closed_by_peer(s)
        s.close()
        records = sink.wait_for(lambda r: r["connections_closed"] == 2)
    assert records["errors"] == []
    assert records["transactions"] == [] and records["over_limits"] == 1


def test_input_is_bounded_while_the_sink_waits():
    """A client that floods before the greeting fills only the input bound; then TCP holds it back."""
    limits = Limits(input=1024)
    with Sink(smtpsim.slow_greeting(30), host="127.0.1.10", limits=limits) as sink:
        s = socket.create_connection(sink.address, timeout=5)
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 10
        stalled_since = None
        while time.monotonic() < deadline:
            try:
                sent += s.send(b"NOOP\r\n" * 10000)
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 0.3:
                    break
                time.sleep(0.01)
        [connection] = list(sink.connections)
        assert len(connection.inbuf) < limits.input + 65536
        s.close()


def test_records_are_bounded():
    with Sink(host="127.0.1.10", limits=Limits(records=2)) as sink:
        c = client(sink)
        for _ in range(3):
            c.sendmail("s@x", ["a@y"], b"x\r\n")
        c.quit()
        records = sink.wait_for(lambda r: r["connections_closed"] == 1)
    assert records["transaction_count"] == 3 and len(records["transactions"]) == 2 and records["truncated"]


def test_only_loopback():
    with pytest.raises(ValueError):
        Sink(host="10.0.0.1")


# ---- the simulator


def test_simulator_routes_records_and_stops_everything(world_tmp):
    destinations = [("a.example", smtpsim.healthy()), ("b.example", smtpsim.slow_data(0.05)),
                    ("c.example", smtpsim.mute())]
    with Simulator(destinations, prefix="127.0.2.") as sim:
        hosts = [sim.sink(d).host for d, _ in destinations]
        assert hosts == ["127.0.2.1", "127.0.2.2", "127.0.2.3"]
        routes = sim.smtproutes()
        assert routes == b"".join(b"%s:[%s]:%d\n" % (d.encode(), h.encode(), sim.sink(d).port)
                                  for (d, _), h in zip(destinations, hosts))
        path = sim.write_routes(world_tmp / "smtproutes")
        assert Path(path).read_bytes() == routes
        for domain in ("a.example", "b.example"):
            c = client(sim.sink(domain))
            c.sendmail("s@x", ["u@" + domain], b"x\r\n")
            c.quit()
        left_open = socket.create_connection(sim.sink("c.example").address, timeout=5)
        sim.sink("c.example").wait_for(lambda r: r["open_now"] == 1)
        for domain in ("a.example", "b.example"):
            sim.sink(domain).wait_for(lambda r: r["connections_closed"] == 1)
        records = sim.records()
        thread = sim.loop.thread
    assert not thread.is_alive()
    assert closed_by_peer(left_open)
    left_open.close()
    for domain, _ in destinations:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(sim.sink(domain).address, timeout=5)
    assert records["a.example"]["recipients_per_transaction"] == [1]
    assert records["b.example"]["transactions"][0]["recipients"] == ["u@b.example"]
    assert records["c.example"]["connections_opened"] == 1
    assert all(r["errors"] == [] for r in records.values())
    json.dumps(records)


def test_simulator_writes_a_trees_smtproutes(tree):
    with Simulator([("a.example", smtpsim.healthy())], prefix="127.0.3.") as sim:
        assert sim.write_routes(tree) == str(tree / "control" / "smtproutes")
        assert (tree / "control" / "smtproutes").read_bytes() == sim.smtproutes()


# ---- real clients: qmail-remote, smtp-source, the command-line front


def test_qmail_remote_delivers_three_recipients_in_one_transaction(tree, world_tmp):
    with Simulator([("a.example", smtpsim.healthy()), ("b.example", smtpsim.healthy())],
                   prefix="127.0.4.", keep_bodies=True) as sim:
        sim.write_routes(tree)
        message = world_tmp / "message"
        message.write_bytes(b"Subject: three\n\n.dot\nbody\n")
        with open(message, "rb") as f:
            p = subprocess.run([program("qmail-remote"), "a.example", "s@x.example", "r1@a.example",
                                "r2@a.example", "r3@a.example"], stdin=f, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=qenv(tree), timeout=60)
        assert p.returncode == 0 and p.stderr == b""
        assert p.stdout.startswith(b"r\0r\0r\0K127.0.4.1 accepted message.\n")
        records = sim.sink("a.example").wait_for(lambda r: r["connections_closed"] == 1)
        body = sim.sink("a.example").transactions()[0]["body"]
        assert sim.sink("b.example").snapshot()["connections_opened"] == 0
    [t] = records["transactions"]
    assert t["sender"] == "s@x.example" and t["recipients"] == ["r1@a.example", "r2@a.example", "r3@a.example"]
    assert records["errors"] == []
    assert records["recipients_per_transaction"] == [3]
    assert body == b"Subject: three\r\n\r\n.dot\r\nbody\r\n"


def test_qmail_remote_sees_refused_recipients_and_421(tree, world_tmp):
    behaviour = smtpsim.rcpt_codes({"bad@a.example": 550, "later@a.example": 451})
    with Simulator([("a.example", behaviour)], prefix="127.0.4.") as sim:
        sim.write_routes(tree)
        message = world_tmp / "message"
        message.write_bytes(b"Subject: x\n\nbody\n")
        with open(message, "rb") as f:
            p = subprocess.run([program("qmail-remote"), "a.example", "s@x.example", "ok@a.example",
                                "bad@a.example", "later@a.example"], stdin=f, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=qenv(tree), timeout=60)
        reports = p.stdout.split(b"\0")
        assert [r[:1] for r in reports[:4]] == [b"r", b"h", b"s", b"K"]
        records = sim.sink("a.example").wait_for(lambda r: r["connections_closed"] == 1)
    assert records["transactions"][0]["recipients"] == ["ok@a.example"]


def test_smtp_source_against_a_sink():
    need("smtp-source")
    with Sink(smtpsim.slow_data(0.01), host="127.0.4.9") as sink:
        p = subprocess.run(["smtp-source", "-s", "3", "-m", "9", "-r", "2", "-M", "client.example",
                            "-f", "s@x.example", "-t", "r@y.example", "%s:%d" % sink.address],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        assert p.returncode == 0, p.stderr
        records = sink.wait_for(lambda r: r["connections_closed"] == r["connections_opened"]
                                and r["transaction_count"] == 9)
    assert records["errors"] == []
    assert records["recipients_per_transaction"] == [2] * 9
    assert 1 <= records["max_concurrent"] <= 3


def test_command_line_front(procs, world_tmp):
    spec = world_tmp / "spec.json"
    spec.write_text(json.dumps([{"domain": "a.example", "behaviour": "healthy"},
                                {"domain": "b.example", "behaviour": {"too_many": 1, "slow_greeting": 0.01}}]))
    routes, out = world_tmp / "smtproutes", world_tmp / "records.json"
    p = procs.start([str(TOP / "scripts" / "smtpsim"), "--spec", str(spec), "--routes", str(routes),
                     "--records", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    smtpsim.wait_until(routes.exists, bool, 10)
    lines = routes.read_bytes().decode().split()
    assert [line.split(":")[0] for line in lines] == ["a.example", "b.example"]
    host, port = lines[0].split(":")[1].strip("[]"), int(lines[0].split(":")[2])
    c = smtplib.SMTP(host, port, timeout=5)
    c.sendmail("s@x", ["a@a.example", "b@a.example", "c@a.example"], b"x\r\n")
    c.quit()
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(10) == 0, p.stderr.read()
    records = json.loads(out.read_text())
    assert records["a.example"]["recipients_per_transaction"] == [3]
    assert records["b.example"]["behaviour"] == {"max_concurrent": 1, "greeting_delay": 0.01}
