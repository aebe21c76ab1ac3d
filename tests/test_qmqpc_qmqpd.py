"""mini-qmail end to end: our qmail-qmqpc → tcpserver → our qmail-qmqpd → qmail-queue in the hub's tree."""

import os

import pytest

from conftest import free_port, make_tree, program, qenv, queued, run_queue_program, tcpserver
from test_envelope import parse_todo
from pyqmail.lib.queue import envelope
from pyqmail.lib.queue.client import QmailQueue

MESSAGE = b"Subject: mini-qmail\n\nline one\nline two\n"
SENDER = b"joe@client.example"
RECIPIENTS = [b"ann@hub.example", b"bob@elsewhere.example"]


@pytest.fixture
def hub(procs, tree):
    """Our qmail-qmqpd under tcpserver on loopback, queueing into `tree`; returns its port."""
    if not os.path.exists(program("qmail-qmqpd")):
        pytest.skip("qmail-qmqpd is not installed yet")
    return tcpserver(procs, tree, [program("qmail-qmqpd")], env=qenv(tree, QMQPCLIENT=""))


@pytest.fixture
def client(world_tmp):
    """The mini-qmail side: a tree whose only job is to name the QMQP servers."""
    return make_tree(world_tmp / "client", "--single-user", "--me", "client.example")


def set_servers(client, *lines):
    """Write the client's control/qmqpservers."""
    (client / "control" / "qmqpservers").write_text("".join(line + "\n" for line in lines))


def run_qmqpc(client, message=MESSAGE, sender=SENDER, recipients=RECIPIENTS):
    """Run the installed qmail-qmqpc with the message on fd 0 and the envelope on fd 1; return its exit code."""
    return run_queue_program("qmail-qmqpc", client, message, envelope.encode(sender, recipients)).returncode


def only_message(tree):
    """Return (mess bytes, todo records) of the single message queued in tree."""
    messages = queued(tree)
    assert len(messages) == 1
    mess, todo = next(iter(messages.values()))
    return mess, parse_todo(todo)


def test_message_reaches_the_hub_queue_intact(hub, tree, client):
    set_servers(client, "127.0.0.1:%d" % hub)
    assert run_qmqpc(client) == 0
    mess, records = only_message(tree)
    assert mess.endswith(b"\n" + MESSAGE)
    headers = mess[:-len(MESSAGE)]
    assert headers.startswith(b"Received: (qmail ")
    assert b"with QMQP; " in headers
    assert [r for r in records if r[0] in b"FT"] == [(b"F", SENDER)] + [(b"T", r) for r in RECIPIENTS]


def test_binary_safe_large_message_reaches_the_hub(hub, tree, client):
    set_servers(client, "127.0.0.1:%d" % hub)
    message = (bytes(range(1, 256)) + b"\n") * 8000  # ~2 MB: the client spools it to a file
    assert run_qmqpc(client, message=message) == 0
    mess, _ = only_message(tree)
    assert mess.endswith(b"\n" + message)


def test_fails_over_from_a_dead_server_to_the_hub(hub, tree, client):
    set_servers(client, "127.0.0.1:%d" % free_port(), "not-an-address", "127.0.0.1:%d" % hub)
    assert run_qmqpc(client) == 0
    only_message(tree)


def test_hub_refusal_of_a_bad_address_is_permanent(hub, tree, client):
    set_servers(client, "127.0.0.1:%d" % hub)
    assert run_qmqpc(client, recipients=[b"x" * 988 + b"@hub.example"]) == 31  # 1000 bytes: qmqpd refuses ≥1000
    assert queued(tree) == {}


def test_qmail_queue_client_reports_success_through_qmqpc(hub, tree, client, monkeypatch):
    """The injector side: lib/queue/client.QmailQueue with QMAILQUEUE=qmail-qmqpc, as mini-qmail runs it."""
    set_servers(client, "127.0.0.1:%d" % hub)
    monkeypatch.setenv("QMAILQUEUE", program("qmail-qmqpc"))
    monkeypatch.setenv("QMAILHOME", str(client))
    qq = QmailQueue(str(client))
    qq.put(MESSAGE)
    assert qq.close(SENDER, RECIPIENTS) == ""
    mess, _ = only_message(tree)
    assert mess.endswith(b"\n" + MESSAGE)


def test_qmail_queue_client_reports_dead_hub_with_qmail_text(client, monkeypatch):
    set_servers(client, "127.0.0.1:%d" % free_port())
    monkeypatch.setenv("QMAILQUEUE", program("qmail-qmqpc"))
    monkeypatch.setenv("QMAILHOME", str(client))
    qq = QmailQueue(str(client))
    qq.put(MESSAGE)
    assert qq.close(SENDER, RECIPIENTS) == "Zconnection to mail server rejected (#4.4.1)"
