"""lib/queue/client.QmailQueue: the one qmail-queue client; $QMAILQUEUE, fd 6 on exit 82, qmail.c's texts."""


import pytest

from pyqmail.lib.queue.client import QmailQueue
from conftest import queued


def fake_queue(tmp_path, script):
    """Write an executable shell script to stand in for qmail-queue; return its path."""
    path = tmp_path / "fake-qq"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def home(tree, monkeypatch):
    """QMAILHOME for the client, with no $QMAILQUEUE inherited."""
    monkeypatch.setenv("QMAILHOME", str(tree))
    monkeypatch.delenv("QMAILQUEUE", raising=False)
    return tree


def test_real_qmail_queue_from_bin(home):
    qq = QmailQueue()
    qq.put(b"Subject: x\n\n")
    qq.put(b"body\n")
    assert qq.close(b"a@b", [b"c@d"]) == ""
    [(mess, todo)] = queued(home).values()
    assert mess.endswith(b"Subject: x\n\nbody\n") and todo.endswith(b"\0Fa@b\0Tc@d\0")
    assert b"p%d\0" % qq.pid in todo


def test_fail_queues_nothing(home):
    qq = QmailQueue()
    qq.put(b"half a message")
    qq.fail()
    assert qq.close(b"a@b", [b"c@d"]) == "Zqq read error (#4.3.0)"
    assert queued(home) == {}


def test_abort_queues_nothing(home):
    qq = QmailQueue()
    qq.put(b"x" * 200000)
    qq.abort()
    assert queued(home) == {}


@pytest.mark.parametrize("code, text", [
    (11, "Denvelope address too long for qq (#5.1.3)"),
    (31, "Dmail server permanently rejected message (#5.3.0)"),
    (53, "Zqq write error or disk full (#4.3.0)"),
    (71, "Zmail server temporarily rejected message (#4.3.0)"),
    (74, "Zcommunication with mail server failed (#4.4.2)"),
    (91, "Zqq internal bug (#4.3.0)"),
    (25, "Dqq permanent problem (#5.3.0)"),
    (99, "Zqq temporary problem (#4.3.0)"),
    (82, "Zqq temporary problem (#4.3.0)"),  # 82 without a usable fd-6 text
])
def test_exit_codes_map_to_qmails_texts(home, tmp_path, monkeypatch, code, text):
    monkeypatch.setenv("QMAILQUEUE", fake_queue(tmp_path, "cat >/dev/null; cat <&1 >/dev/null; exit %d\n" % code))
    qq = QmailQueue()
    qq.put(b"m\n")
    assert qq.close(b"a", [b"b"]) == text


def test_custom_error_on_fd_6(home, tmp_path, monkeypatch):
    monkeypatch.setenv("QMAILQUEUE", fake_queue(
        tmp_path, "cat >/dev/null; printf 'Dno thanks, spam (#5.7.1)' >&6; exit 82\n"))
    qq = QmailQueue()
    qq.put(b"m\n")
    assert qq.close(b"a", [b"b"]) == "Dno thanks, spam (#5.7.1)"


def test_crash_and_exec_failure(home, tmp_path, monkeypatch):
    monkeypatch.setenv("QMAILQUEUE", fake_queue(tmp_path, "kill -SEGV $$\n"))
    qq = QmailQueue()
    assert qq.close(b"a", [b"b"]) == "Zqq crashed (#4.3.0)"
    monkeypatch.setenv("QMAILQUEUE", str(tmp_path / "missing"))
    qq = QmailQueue()
    qq.put(b"m\n")
    assert qq.close(b"a", [b"b"]) == "Zunable to exec qq (#4.3.0)"


def test_envelope_and_message_reach_the_program(home, tmp_path, monkeypatch):
    out = tmp_path / "seen"
    monkeypatch.setenv("QMAILQUEUE", fake_queue(tmp_path, "cat > %s.m; cat <&1 > %s.e; pwd > %s.d\n" % (out, out, out)))
    qq = QmailQueue()
    qq.put(b"hello\n")
    assert qq.close(b"s@x", [b"r1@y", b"r2@z"]) == ""
    assert (tmp_path / "seen.m").read_bytes() == b"hello\n"
    assert (tmp_path / "seen.e").read_bytes() == b"Fs@x\0Tr1@y\0Tr2@z\0\0"
    assert (tmp_path / "seen.d").read_text().strip() == str(home)  # qmail.c chdirs to QMAILHOME
