"""SMTP acceptance benchmark: Postfix's `smtp-source -s 20 -m 2000` into qmail-smtpd and into Postfix's smtpd.

Usage: python scripts/bench_smtp.py [-s 20] [-m 2000] [-l 600] [--modes qmail-tcpserver,tcpserver-owner,tcpserver-root,postfix]
Run through scripts/bench-smtp, which installs everything first. Needs root (qmail's accounts, Postfix).

Each mode gets a fresh tree and measures messages accepted per second (smtp-source's wall time; one
message per connection, smtp-source's default), then checks every message is queued:
  qmail-tcpserver   qmail-tcpserver -u qmailq -g qmail: pre-loaded forked children queue in-process
  tcpserver-owner   ucspi-tcp tcpserver -u qmailq -g qmail: a fresh interpreter per connection, queueing in-process
  tcpserver-root    ucspi-tcp tcpserver as root: a fresh interpreter and a qmail-queue per message
  postfix           a private Postfix (postfix -c DIR start), smtpd on loopback, cleanup into incoming/; no qmgr,
                    so mail is queued, not delivered (as for pyqmail, where qmail-send is not running)
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
from bench_postfix import Postfix  # noqa: E402
from conftest import Processes, program, qenv, tcpserver  # noqa: E402
from mailsystem import make_system_tree  # noqa: E402


class PostfixSmtpd(Postfix):
    """The benchmark's private Postfix with smtpd instead of qmqpd, loopback clients trusted (mynetworks)."""

    def write_config(self, delivering):
        """main.cf as the QMQP benchmark's plus smtpd settings; master.cf with smtpd on our port."""
        self.settings.update({"mynetworks": "127.0.0.0/8", "smtpd_peername_lookup": "no",
                              "smtpd_client_restrictions": "", "smtpd_delay_reject": "no"})
        super().write_config(delivering)
        master = self.conf / "master.cf"
        master.write_text(master.read_text().replace("inet n - n - - qmqpd", "inet n - n - - smtpd"))


def smtp_source(port, sessions, messages, length):
    """Run smtp-source; return the elapsed seconds."""
    start = time.monotonic()
    r = subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(length),
                        "-f", "bench@src.example", "-t", "bench@test.example", "127.0.0.1:%d" % port],
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("smtp-source failed: %s" % r.stderr)
    return time.monotonic() - start


def pyqmail_run(work, mode, args):
    """Start qmail-smtpd for mode on a fresh tree, send, count the queue; return (seconds, queued)."""
    tree = make_system_tree(Path(work) / mode)
    st = os.stat(tree / "queue")
    owner = ["-u", str(st.st_uid), "-g", str(st.st_gid)]
    server, options = {"qmail-tcpserver": (program("qmail-tcpserver"), owner + ["-c", "100"]),
                       "tcpserver-owner": ("tcpserver", owner + ["-c", "100"]),
                       "tcpserver-root": ("tcpserver", ["-c", "100"])}[mode]
    procs = Processes()
    try:
        port = tcpserver(procs, tree, [program("qmail-smtpd")], env=qenv(tree), options=options, server=server)
        seconds = smtp_source(port, args.s, args.m, args.l)
    finally:
        procs.stop_all()
    return seconds, len(os.listdir(tree / "queue" / "todo"))


def postfix_run(work, args):
    """Same against a private Postfix; return (seconds, queued)."""
    procs = Processes()
    pf = PostfixSmtpd(work, procs)
    pf.setup()
    pf.start_server()
    try:
        seconds = smtp_source(pf.port, args.s, args.m, args.l)
        deadline = time.time() + 60
        while pf.queue_size() < args.m and time.time() < deadline:
            time.sleep(0.1)
        return seconds, pf.queue_size()
    finally:
        pf.stop()
        procs.stop_all()


def main():
    """Run every mode once, print one line each."""
    p = argparse.ArgumentParser()
    p.add_argument("-s", type=int, default=20)
    p.add_argument("-m", type=int, default=2000)
    p.add_argument("-l", type=int, default=600)
    p.add_argument("--modes", default="qmail-tcpserver,tcpserver-owner,tcpserver-root,postfix")
    args = p.parse_args()
    print("smtp-source -s %d -m %d -l %d, one message per connection, on %d CPUs" % (
        args.s, args.m, args.l, os.cpu_count()))
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-smtp-") as work:
            os.chmod(work, 0o755)
            seconds, count = postfix_run(work, args) if mode == "postfix" else pyqmail_run(work, mode, args)
        print("%-16s %7.1f msg/s  (%d messages in %.1f s, %d queued)" % (mode, args.m / seconds, args.m, seconds, count),
              flush=True)


if __name__ == "__main__":
    main()
