"""Postfix for the end-to-end benchmark: a private instance of Debian's package, configured like pyqmail's
benchmark tree (QMQP in on loopback, one virtual recipient delivered into a Maildir as nobody).

The instance has its own config directory (main.cf and master.cf written here), queue_directory,
data_directory and maillog_file under the run's work directory; it is started with `postfix -c DIR
start` and stopped with `postfix -c DIR stop`. The system's /etc/postfix is never read or changed.

Delivery is virtual(8): virtual_mailbox_maps maps bench@bench.example to <home>/Maildir/ with a static
uid and gid (nobody's), the counterpart of pyqmail's users/assign entry `=bench:nobody:...:<home>:::`
followed by qmail-local's ./Maildir/ delivery. Durability is Postfix's default, which no setting here
changes: cleanup(8) fsyncs the queue file before qmqpd(8) answers, and virtual(8) fsyncs the Maildir
file before it reports the delivery. Process limits are the defaults (qmqpd's maxproc is
default_process_limit, 100, like tcpserver -c 100).
"""

import os
import pwd
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench_procs import ProcSampler, descendants, subtree_cpu, wait_gone
from conftest import free_port, wait_port
from mailsystem import delivery_account, make_home

DOMAIN = "bench.example"
RECIPIENT = "bench@" + DOMAIN
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

# (service, type, private, unprivileged, chroot, wakeup, maxproc, command): Postfix's standard services,
# none chrooted (pyqmail runs none in a chroot either); qmgr is added by start_delivery().
SERVICES = [
    ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup"),
    ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite"),
    ("bounce", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("defer", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("trace", "unix", "-", "-", "n", "-", "0", "bounce"),
    ("verify", "unix", "-", "-", "n", "-", "1", "verify"),
    ("flush", "unix", "n", "-", "n", "1000?", "0", "flush"),
    ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap"),
    ("showq", "unix", "n", "-", "n", "-", "-", "showq"),
    ("error", "unix", "-", "-", "n", "-", "-", "error"),
    ("retry", "unix", "-", "-", "n", "-", "-", "error"),
    ("discard", "unix", "-", "-", "n", "-", "-", "discard"),
    ("virtual", "unix", "-", "n", "n", "-", "-", "virtual"),
    ("anvil", "unix", "-", "-", "n", "-", "1", "anvil"),
    ("scache", "unix", "-", "-", "n", "-", "1", "scache"),
    ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"),
]
QMGR = ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr")


class Postfix:
    """A private Postfix instance: qmqpd on a free loopback port, virtual(8) Maildir delivery."""

    name = "postfix"
    extra_services: list = []  # master.cf lines beyond qmqpd and the standard services
    log_name = "maillog"

    def __init__(self, work, procs):
        self.work, self.procs = Path(work), procs
        self.dir = self.work / "postfix"
        self.conf = self.dir / "etc"
        self.queue = self.dir / "spool"
        self.maillog = self.dir / "maillog"
        self.master = self.sampler = None
        self.port = free_port()

    def postfix(self, *command):
        """Run `postfix -c <our config directory> COMMAND...`; raise with its output if it fails."""
        r = subprocess.run(["postfix", "-c", str(self.conf), *command], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("postfix %s failed (%d): %s%s\nmaillog ends:\n%s" % (
                " ".join(command), r.returncode, r.stdout, r.stderr, self.log_tail()))

    def base_settings(self, domain):
        """Make the instance's directories; return the main.cf settings every private instance shares."""
        self.conf.mkdir(parents=True)
        self.queue.mkdir(mode=0o755)  # postfix start makes the queue's subdirectories
        data = self.dir / "data"
        data.mkdir(mode=0o700)
        owner = pwd.getpwnam("postfix")
        os.chown(data, owner.pw_uid, owner.pw_gid)
        return {
            "compatibility_level": "3.6",
            "queue_directory": self.queue, "data_directory": data,
            "maillog_file": self.maillog, "maillog_file_prefixes": self.dir,
            "myhostname": "postfix." + domain, "mydomain": domain, "mydestination": "localhost",
            "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
            "alias_maps": "", "alias_database": "", "biff": "no",
            "qmqpd_authorized_clients": "127.0.0.1", "qmqpd_error_delay": "0s",
        }

    def setup(self):
        """Write main.cf and master.cf and make the recipient's Maildir (owned by nobody, as pyqmail's)."""
        settings = self.base_settings(DOMAIN)
        self.home = make_home(self.work)
        pw = delivery_account()
        settings.update({
            "virtual_mailbox_domains": DOMAIN, "virtual_mailbox_base": self.home,
            "virtual_mailbox_maps": "inline:{ %s=Maildir/ }" % RECIPIENT,
            "virtual_uid_maps": "static:%d" % pw.pw_uid, "virtual_gid_maps": "static:%d" % pw.pw_gid,
        })
        self.settings = settings

    def write_config(self, delivering):
        """Write main.cf and master.cf: while only queueing, without qmgr and with in_flow_delay 0 (with
        no qmgr handing out inflow tokens, cleanup would wait in_flow_delay, 1 s, per message); when
        delivering, exactly the settings above and every service, Postfix's defaults for the rest."""
        settings = dict(self.settings, **({} if delivering else {"in_flow_delay": "0s"}))
        (self.conf / "main.cf").write_text("".join("%s = %s\n" % kv for kv in settings.items()))
        lines = ["127.0.0.1:%d inet n - n - - qmqpd" % self.port] + self.extra_services
        lines += [" ".join(s) for s in SERVICES + ([QMGR] if delivering else [])]
        (self.conf / "master.cf").write_text("\n".join(lines) + "\n")

    def start(self):
        """`postfix start`; wait for the QMQP port; sample the instance's processes from now."""
        self.postfix("start")
        self.master = int((self.queue / "pid" / "master.pid").read_text().split()[0])
        wait_port("127.0.0.1", self.port)
        self.sampler = ProcSampler(lambda: {self.master: (None, True)})

    def start_server(self):
        """Start the instance without qmgr, so that messages stay in incoming/."""
        self.write_config(delivering=False)
        self.start()

    def prepare_delivery(self):
        """Stop the instance and write the delivering configuration (not timed in a drain run)."""
        self.stop()
        self.write_config(delivering=True)

    def start_delivery(self):
        """(Re)start the instance with qmgr, which picks up incoming/ at once; return once qmgr runs."""
        if self.master is not None:
            self.prepare_delivery()
        self.start()
        deadline = time.time() + 30
        while "qmgr" not in self.kinds():
            if time.time() > deadline:
                raise RuntimeError("qmgr did not start; maillog ends:\n" + self.log_tail())
            time.sleep(0.05)

    def kinds(self):
        """The kinds (program names) of the instance's processes running now."""
        kinds = set()
        for pid in descendants(self.master):
            try:
                with open("/proc/%d/comm" % pid) as f:
                    kinds.add(f.read().strip())
            except OSError:
                pass
        return kinds

    def cpu(self, user=False):
        """CPU seconds used so far by each kind of process (user mode only if asked), each process as
        last sampled; what the exited ones used after their last sample (or between two samples) is the
        rest of master's whole tree."""
        if self.master is None:
            return {}
        total, _ = self.sampler.cpu_by_kind(user)
        total["(exited between samples)"] = subtree_cpu(self.master, user) - sum(total.values())
        return total

    def memory(self):
        """Peak memory of the instance's processes (see ProcSampler.memory)."""
        return self.sampler.memory()

    def delivered_dir(self):
        """The Maildir/new every message must reach."""
        return self.home / "Maildir" / "new"

    def queue_size(self):
        """Messages in the instance's queues (files below maildrop, incoming, active, deferred, hold)."""
        return sum(len(files) for q in QUEUES for _, _, files in os.walk(self.queue / q))

    def log_lines(self):
        """maillog's lines (Postfix's own log daemon writes it)."""
        try:
            return self.maillog.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def log_counts(self):
        """Counts of maillog lines since the last start: deliveries by status, warnings, errors, fatals, panics."""
        counts, lines = Counter(), self.log_lines()
        starts = [k for k, line in enumerate(lines) if "]: daemon started" in line]
        for line in lines[starts[-1] if starts else 0:]:  # since delivery started
            m = re.search(r" status=(\w+)", line) or re.search(r"\]: (warning|error|fatal|panic):", line)
            if m:
                counts[m.group(1)] += 1
        return counts

    def log_tail(self, lines=15):
        """The end of maillog."""
        return "\n".join(self.log_lines()[-lines:])

    def hot_pids(self):
        """Processes worth profiling with py-spy: none (Postfix is C)."""
        return {}

    def stop(self):
        """`postfix stop`, wait for master and its children to exit, kill by pid whatever is left."""
        if self.master is None:
            return
        pids = [self.master] + descendants(self.master)
        try:
            self.postfix("stop")
        except RuntimeError as e:
            print("warning: %s" % e)
        for pid in wait_gone(pids, 20):
            os.kill(pid, signal.SIGKILL)
        if self.sampler is not None:
            self.sampler.stop()
        self.master = self.sampler = None
