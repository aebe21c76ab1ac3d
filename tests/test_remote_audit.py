"""An adversarial audit of outbound delivery: the installed qmail-remote against hostile loopback servers and a
tired administrator's control files, and qmail-rspawn's connection cache (see qmail-remote(8), qmail-rspawn(8)).

Servers are threads of this process (test_hardening_remote's Hostile) on a loopback address; nothing uses DNS.
"""

import pytest

from test_hardening_remote import HOST, deliver, dialogue, hostile, reply  # noqa: F401

IP = HOST.encode()
DIED = b"ZConnected to %s but connection died. (#4.4.2)\n\0" % IP
OK = b"r\0K%s accepted message.\nRemote host said: 250 queued\n\0" % IP


def answering(table):
    """A plain SMTP server whose replies to the verbs in table (b"." the message) are table's bytes."""
    def script(server, conn):
        def answer(server, conn, verb):
            if verb in table:
                conn.sendall(table[verb])
            else:
                reply(server, conn, verb)
        dialogue(server, conn, answer)
    return script


def said(text):
    """The end of a report quoting the server."""
    return b".\nRemote host said: " + text + b"\n\0"


@pytest.mark.parametrize("table, out", [
    # 250 to DATA: the server is not reading a message; what it answers to the message's lines is no final reply
    ({b"DATA": b"250 ok\r\n"}, b"r\0Z%s failed on DATA command" % IP + said(b"250 ok")),
    # only 2xx after the final dot delivers: a 3xx or a code outside 2xx-5xx is not an acceptance
    ({b".": b"354 more\r\n"}, b"r\0Z%s failed after I sent the message" % IP + said(b"354 more")),
    ({b".": b"150 hm\r\n"}, b"r\0Z%s failed after I sent the message" % IP + said(b"150 hm")),
    ({b".": b"099 hm\r\n"}, b"r\0Z%s failed after I sent the message" % IP + said(b"099 hm")),
    # a code above 5xx is malformed: temporary, never a bounce
    ({b".": b"650 hm\r\n"}, b"r\0Z%s failed after I sent the message" % IP + said(b"650 hm")),
    ({b"RCPT": b"150 hm\r\n"}, b"s%s does not like recipient.\nRemote host said: 150 hm\n\0DGiving up on %s.\n\0"
     % (IP, IP)),
    ({b"MAIL": b"000 hm\r\n"}, b"ZConnected to %s but sender was rejected" % IP + said(b"000 hm")),
    ({b"MAIL": b"354 hm\r\n"}, b"ZConnected to %s but sender was rejected" % IP + said(b"354 hm")),
])
def test_a_step_succeeds_only_with_the_reply_class_it_asked_for(tree, world_tmp, hostile, table, out):
    hostile(answering(table), 2)
    got, _ = deliver(tree, world_tmp, 20)
    assert got == out


@pytest.mark.parametrize("table", [
    # a 250 sent with the 354, before the message: the 554 to the message would be read as the next reply
    {b"DATA": b"354 go\r\n250 ok\r\n", b".": b"554 no\r\n"},
    # a doubled reply to MAIL shifts every later reply by one: RCPT's would be read for DATA, DATA's for the dot
    {b"MAIL": b"250 ok\r\n250 ok\r\n", b"RCPT": b"550 unknown\r\n", b"DATA": b"354 go\r\n", b".": b"554 no\r\n"},
    {b"GREETING": b"220 hostile\r\n554 go away\r\n"},
])
def test_a_reply_sent_out_of_turn_ends_the_session(tree, world_tmp, hostile, table):
    hostile(answering(table), 2)
    got, _ = deliver(tree, world_tmp, 20)
    assert got in (DIED, b"r\0" + DIED)


@pytest.mark.parametrize("value", [b"2147483648", b"4294967296", b"9" * 30, b"18446744073709551617"])
def test_huge_timeouts_are_capped_not_a_crash_or_an_instant_timeout(tree, world_tmp, hostile, value):
    """A timeout whose milliseconds wrap around in poll(2) timed out at once; one beyond 2^63 ns crashed."""
    hostile(answering({}), 2)
    (tree / "control" / "timeoutremote").write_bytes(value + b"\n")
    (tree / "control" / "timeoutconnect").write_bytes(value + b"\n")
    got, _ = deliver(tree, world_tmp, 20)
    assert got == OK
