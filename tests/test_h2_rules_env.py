"""A tcprules rule that sets thousands of variables (task h2): the environment a program gets under qmail-tcpserver,
in a reused worker connection after connection and in a child per connection, is the one tcpserver gives; a rule
over what execve(2) takes drops the connection as tcpserver's exec fails."""

import os
import re
import signal

import pytest

from conftest import need, program, qenv, wait_until
from test_qmail_tcpserver import normal_env, serve, talk, tcprules_cdb

REQUEST = b"18:3:hi\n,3:a@b,3:c@d,,"
MANY = 5000  # well past ruleenv.BULK: the environment is made in one pass


def many(count, prefix="V", value="%d"):
    """Return tcprules text for count variables prefix0.. with their number (or value % number) as value."""
    return ",".join('%s%d="%s"' % (prefix, i, value % i) for i in range(count))


def rule(dump, which, extra):
    """Return a rules file for 127.0.0.1: allowed as a QMQP client, QMAILQUEUE the dumping script, and extra."""
    return '127.0.0.1:allow,QMQPCLIENT="",QMAILQUEUE="%s",WHICH="%s"%s\n' % (dump, which, extra and "," + extra)


def dumping_queue(directory):
    """Write a qmail-queue stand-in that saves its environment to $DUMPDIR/$SERVER-$WHICH and accepts."""
    script = directory / "dump-queue"
    script.write_text('#!/bin/sh\nenv > "$DUMPDIR/$SERVER-$WHICH"\ncat > /dev/null\ncat <&1 > /dev/null\nexit 0\n')
    os.chmod(script, 0o755)
    return script


def environment(path):
    """Return a dumped environment as normal_env lists it, without SERVER (each listener's own name)."""
    return [line for line in normal_env(path.read_bytes()) if not line.startswith("SERVER=")]


def numbered(listed, prefix):
    """Return how many variables of an environment listing are prefix and a number (a rule's many)."""
    return len([v for v in listed if re.match(r"%s\d+=" % prefix, v)])


def qmqp_env(tree, world_tmp, server):
    """The listeners' environment: the tree, where to dump, and a locale Python's start-up leaves alone."""
    return qenv(tree, DUMPDIR=world_tmp, SERVER=server, LC_ALL="C.UTF-8", KEEP="listener")


@pytest.mark.interop
def test_a_reused_worker_gives_each_connection_its_rules_environment_as_tcpserver_does(procs, tree, world_tmp):
    """Three connections in one worker: thousands of variables, then a rule of one (none of the thousands may
    remain), then thousands again; each time the environment qmail-qmqpd's qmail-queue gets is tcpserver's."""
    need("tcpserver")
    dump = dumping_queue(world_tmp)
    rules = [rule(dump, "a", many(MANY) + ',V7="again",KEEP="rule",TCPLOCALHOST="over.example"'),
             rule(dump, "b", 'ONLY="b"'),
             rule(dump, "c", many(MANY, "W", "w%d"))]
    cdb = tcprules_cdb(world_tmp, rules[0])
    qmqpd = [program("qmail-qmqpd")]
    theirs = serve(procs, world_tmp, "tcpserver", qmqpd, ["-x", str(cdb)], env=qmqp_env(tree, world_tmp, "theirs"))
    ours = serve(procs, world_tmp, program("qmail-tcpserver"), qmqpd, ["-c", "1", "-x", str(cdb)],
                 env=qmqp_env(tree, world_tmp, "ours"))
    assert "in forked children" in ours[2].path.read_text()
    for which, text in zip("abc", rules):
        tcprules_cdb(world_tmp, text)
        for port, _, _ in (theirs, ours):
            assert re.fullmatch(rb"\d+:Kok \d+ qp \d+,", talk(port, send=REQUEST))
        assert environment(world_tmp / ("ours-" + which)) == environment(world_tmp / ("theirs-" + which)), which
    a, b, c = (environment(world_tmp / ("ours-" + which)) for which in "abc")
    assert numbered(a, "V") == MANY and "V7=again" in a and "V4999=4999" in a
    assert "KEEP=rule" in a and "TCPLOCALHOST=over.example" in a
    assert "ONLY=b" in b and "KEEP=listener" in b and "TCPLOCALHOST=0" in b
    assert numbered(b, "V") == numbered(b, "W") == 0
    assert numbered(c, "W") == MANY and numbered(c, "V") == 0 and "ONLY=b" not in c
    pids = set(re.findall(r"tcpserver: ok (\d+) ", ours[2].read_text()))
    assert len(pids) == 1, pids  # one worker served all three
    for _, p, _ in (theirs, ours):
        os.kill(p.pid, signal.SIGTERM)
        p.wait(30)


@pytest.mark.interop
def test_a_child_per_connection_execs_with_a_rule_of_thousands_of_variables_as_tcpserver_does(procs, world_tmp):
    need("tcpserver")
    cdb = tcprules_cdb(world_tmp, '127.0.0.1:allow,%s,V3="last",PATH="/nowhere"\n' % many(MANY))
    env = {"PATH": "/usr/bin:/bin", "KEEP": "me", "V1": "listener's"}
    outputs = [talk(serve(procs, world_tmp, server, ["/usr/bin/env"], ["-x", str(cdb)], env=env)[0])
               for server in ("tcpserver", program("qmail-tcpserver"))]
    assert normal_env(outputs[0]) == normal_env(outputs[1])
    listed = normal_env(outputs[1])
    assert "V3=last" in listed and "V1=1" in listed and "KEEP=me" in listed and "PATH=/nowhere" in listed
    assert numbered(listed, "V") == MANY


def test_a_rule_execve_would_refuse_drops_the_connection_as_under_tcpserver(procs, tree, world_tmp):
    """Over ARG_MAX in all, or one variable over 128 KB: tcpserver's exec fails with E2BIG; an in-process
    program's connection is dropped with the same line, after the same `ok` line."""
    need("tcpserver")
    limit = os.sysconf("SC_ARG_MAX")
    big = "x" * 100000 + "%.0s"  # the same value for every number
    rules = ('127.0.0.1:allow,QMQPCLIENT="",%s\n' % many(limit // 100000 + 1, "B", big),
             '127.0.0.1:allow,QMQPCLIENT="",ONE="%s"\n' % ("y" * 140000),
             '127.0.0.1:allow,QMQPCLIENT="",%s\n' % many(15, "B", big))  # 1.5 MB: still runs
    cdb = tcprules_cdb(world_tmp, rules[0])
    qmqpd = [program("qmail-qmqpd")]
    servers = [serve(procs, tree, server, qmqpd, ["-x", str(cdb)], env=qenv(tree, LC_ALL="C.UTF-8"))
               for server in ("tcpserver", program("qmail-tcpserver"))]
    for n, text in enumerate(rules, 1):
        tcprules_cdb(world_tmp, text)
        # a dropped connection's unread request would earn a reset
        answers = [talk(port, send=REQUEST if n == 3 else b"") for port, _, _ in servers]
        for _, _, log in servers:  # one connection at a time, so that both logs have one order
            wait_until(lambda: log.read_text().count("tcpserver: end ") >= n, 30, "connection %d's end" % n)
        if n < 3:
            assert answers == [b"", b""]
        else:
            assert all(re.fullmatch(rb"\d+:Kok \d+ qp \d+,", a) for a in answers), answers
    lines = [re.findall(r"^tcpserver: (?:warning|ok|end)[^\n]*", log.read_text(), re.M) for _, _, log in servers]
    lines = [[re.sub(r"\b(ok|end) \d+", r"\1 N", re.sub(r":\d+$", ":P", line)) for line in ls] for ls in lines]
    for ls, port in zip(lines, [s[0] for s in servers]):
        ls[:] = [line.replace(":%d " % port, ":LPORT ") for line in ls]
    assert lines[0] == lines[1]
    assert lines[1].count("tcpserver: warning: dropping connection, unable to run %s: argument list too long"
                          % qmqpd[0]) == 2
    assert lines[1].count("tcpserver: end N status 28416") == 2  # 111 << 8
