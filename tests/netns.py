"""A fleet on one machine: mini-qmail nodes and pyqmail QMQP hubs, each in a network namespace of its own,
all joined by a bridge in one more namespace (tests/test_fleet.py, scripts/bench_fleet.py, docs/scale-out.md).

Every namespace, veth pair and address is made here and exists only inside the namespaces: the host's own
interfaces are never touched (the veth pairs are created directly inside the namespaces). Addresses are
10.199.0.0/24 inside them (nodes .11.., hubs .101.., a final SMTP sink .200: Postfix's smtp-sink, to
which the hubs route every non-local recipient with control/smtproutes). Namespace names carry the
process id (pq24-PID-...), so parallel runs never collide, and a run that died is cleaned up by the next.
Needs root; `available()` says why not otherwise.

Run as a program (`python netns.py inject ...`) it is a node's injector: inside the node's namespace it runs
qmail-inject and sendmail (alternately) as nobody for each message, retrying a message that got exit 111,
and writes one line per attempt: `ID PROGRAM ATTEMPT EXITCODE TIME`.
"""

import os
import pwd
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

PREFIX = "pq24-"
SUBNET = "10.199.0."
BIN = Path(sys.executable).parent
RECIPIENT = "u@fleet.example"
SENDER = "fleet@node.fleet.example"
SUBJECT = re.compile(rb"^Subject: fleet (\S+)$", re.M)


def ip(*args, check=True):
    """Run ip(8) with args; return the finished process."""
    return subprocess.run(["ip", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=check)


def available():
    """Return None if this process may make network namespaces, else the reason it may not."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    probe = "%sprobe-%d" % (PREFIX, os.getpid())
    r = ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return "ip netns add is not permitted here: " + r.stderr.decode(errors="replace").strip()
    ip("netns", "del", probe, check=False)
    return None


def pid_alive(pid):
    """True if a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale():
    """Delete namespaces left by runs whose process is gone (a run killed before its own clean-up)."""
    for line in ip("netns", "list", check=False).stdout.decode().splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(re.escape(PREFIX) + r"(\d+)-", name)
        if m and not pid_alive(int(m.group(1))):
            ip("netns", "del", name, check=False)


def wait_for(condition, timeout, what):
    """Wait until condition() is true, or raise after timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))


class Host:
    """One namespace on the bridge: its name, address and veth."""

    def __init__(self, fleet, role, index, address):
        self.fleet, self.role, self.index, self.ip = fleet, role, index, address
        self.ns = "%s%d-%d-%s%d" % (PREFIX, os.getpid(), fleet.serial, role, index)
        self.port_name = "%s%d" % (role[0], index)  # its bridge port's name, inside the switch namespace

    def create(self):
        """Make the namespace, its veth pair to the bridge, its address; bring everything up."""
        ip("netns", "add", self.ns)
        self.fleet.namespaces.append(self.ns)
        ip("link", "add", "eth0", "netns", self.ns, "type", "veth", "peer", "name", self.port_name,
           "netns", self.fleet.switch)
        ip("-n", self.fleet.switch, "link", "set", self.port_name, "master", "br0", "up")
        ip("-n", self.ns, "addr", "add", self.ip + "/24", "dev", "eth0")
        ip("-n", self.ns, "link", "set", "lo", "up")
        ip("-n", self.ns, "link", "set", "eth0", "up")

    def link(self, up):
        """Set this host's interface up or down (a cable pulled)."""
        ip("-n", self.ns, "link", "set", "eth0", "up" if up else "down")

    def argv(self, argv):
        """Return argv run inside this namespace."""
        return ["ip", "netns", "exec", self.ns, *[str(a) for a in argv]]


class Hub(Host):
    """A full pyqmail: qmail-qmqpd under qmail-tcpserver (as the queue's owner) and qmail-send delivering
    every message for RECIPIENT to ./Maildir/ of a home owned by nobody; its tree optionally on a small
    tmpfs of its own (for a full disk)."""

    def __init__(self, fleet, index, tmpfs_mb=None):
        super().__init__(fleet, "hub", index, SUBNET + str(101 + index))
        self.tmpfs_mb = tmpfs_mb
        self.base = fleet.base / ("hub%d" % index)
        self.tree = self.base / "fs" / "qmail"
        self.listener = self.send = None
        self.filler = self.base / "fs" / "filler"

    def setup(self):
        """Make the namespace and the tree (qmail's accounts, owners and modes: the tests run as root)."""
        from mailsystem import assign_users, make_home, make_system_tree
        self.create()
        (self.base / "fs").mkdir(parents=True)
        if self.tmpfs_mb:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=755" % self.tmpfs_mb, "tmpfs",
                            str(self.base / "fs")], check=True)
            self.fleet.mounts.append(self.base / "fs")
        make_system_tree(self.tree, "hub%d.fleet.example" % self.index)
        (self.tree / "control" / "locals").write_text("hub%d.fleet.example\nfleet.example\n" % self.index)
        (self.tree / "control" / "qmqpderrordelay").write_text("0\n")
        self.home = make_home(self.base)
        assign_users(self.tree, [("=", RECIPIENT.split("@")[0], str(self.home), "", "")])

    def start_listener(self):
        """Start qmail-tcpserver running qmail-qmqpd on port 628 of the hub's address; wait for it."""
        from conftest import qenv
        st = (self.tree / "queue").stat()
        self.listener_log = self.base / ("listener-%d.log" % time.monotonic_ns())
        with open(self.listener_log, "ab") as log:
            self.listener = self.fleet.procs.start(
                self.argv([BIN / "qmail-tcpserver", "-v", "-c", "40", "-u", st.st_uid, "-g", st.st_gid, "-H", "-R",
                           "-l", "0", self.ip, "628", self.tree / "bin" / "qmail-qmqpd"]),
                env=qenv(self.tree, QMQPCLIENT=""), stdout=subprocess.DEVNULL, stderr=log)
        wait_for(lambda: b"status:" in self.listener_log.read_bytes(), 30, "hub %d's listener" % self.index)

    def start_send(self):
        """Start qmail-start ./Maildir/ (it becomes qmail-send) in the namespace; wait for its status line."""
        from conftest import qenv
        self.send_log = self.base / ("send-%d.log" % time.monotonic_ns())
        with open(self.send_log, "ab") as log:
            self.send = self.fleet.procs.start(self.argv([self.tree / "bin" / "qmail-start", "./Maildir/"]),
                                               env=qenv(self.tree), stdout=log, stderr=subprocess.DEVNULL)
        wait_for(lambda: b"status: local " in self.send_log.read_bytes(), 30, "hub %d's qmail-send" % self.index)

    def start(self):
        """Start both halves."""
        self.start_send()
        self.start_listener()

    def kill_listener(self):
        """kill -9 the listener (its workers get TERM from the kernel: qmail-tcpserver(8))."""
        os.kill(self.listener.pid, signal.SIGKILL)
        self.listener.wait(10)

    def kill_send(self):
        """kill -9 qmail-send and its helpers (a crash of the delivery side)."""
        os.killpg(self.send.pid, signal.SIGKILL)
        self.send.wait(10)

    def fill_disk(self):
        """Fill the hub's tmpfs to the last page, and keep it full (the hub's own deliveries free pages)
        until free_disk()."""
        self.filling = threading.Event()
        f = open(self.filler, "wb", buffering=0)

        def fill():
            """Take every free page, again and again."""
            for size in (1 << 20, 4096, 1):
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError:
                    pass
        fill()
        self.filler_thread = threading.Thread(target=lambda: [fill() for _ in iter(
            lambda: self.filling.wait(0.005), True)] and f.close(), daemon=True)
        self.filler_thread.start()

    def free_disk(self):
        """Stop filling; remove the filler."""
        self.filling.set()
        self.filler_thread.join(10)
        self.filler.unlink()

    def delivered(self):
        """Return {message id: copies} found in the hub's Maildir."""
        out = {}
        for sub in ("new", "cur"):
            for entry in (self.home / "Maildir" / sub).iterdir():
                m = SUBJECT.search(entry.read_bytes())
                if m:
                    out[m.group(1).decode()] = out.get(m.group(1).decode(), 0) + 1
        return out

    def queue_empty(self):
        """True when no message is left in the hub's queue."""
        mess = self.tree / "queue" / "mess"
        return not any(any(d.iterdir()) for d in mess.iterdir())


class Sink(Host):
    """The final SMTP server in a namespace of its own: Postfix's smtp-sink, one file per message."""

    def __init__(self, fleet):
        super().__init__(fleet, "sink", 0, SUBNET + "200")
        self.dump = fleet.base / "sink"

    def setup(self):
        """Make the namespace; start smtp-sink on port 25 as nobody; wait until it listens."""
        self.create()
        self.dump.mkdir()
        os.chmod(self.dump, 0o777)
        self.fleet.procs.start(self.argv(["smtp-sink", "-u", "nobody", "-d", str(self.dump) + "/m.",
                                          self.ip + ":25", "50"]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = "import socket,sys; socket.create_connection((sys.argv[1], 25), 1).close()"
        wait_for(lambda: subprocess.run(self.argv([sys.executable, "-c", probe, self.ip]),
                                        stderr=subprocess.DEVNULL).returncode == 0, 30, "smtp-sink")

    def delivered(self):
        """Return {message id: copies} the sink received."""
        out = {}
        for entry in self.dump.iterdir():
            m = SUBJECT.search(entry.read_bytes().replace(b"\r\n", b"\n"))
            if m:
                out[m.group(1).decode()] = out.get(m.group(1).decode(), 0) + 1
        return out


class Node(Host):
    """A mini-qmail node: `qmail-setup --mini` naming every hub, control/qmqpspread on or off."""

    def __init__(self, fleet, index):
        super().__init__(fleet, "node", index, SUBNET + str(11 + index))
        self.tree = fleet.base / ("node%d" % index)
        self.injector = None

    def setup(self, hubs, spread):
        """Make the namespace and the mini-qmail tree."""
        from conftest import make_tree
        self.create()
        make_tree(self.tree, "--me", "node%d.fleet.example" % self.index, *["--mini=" + h.ip for h in hubs])
        if spread:
            (self.tree / "control" / "qmqpspread").write_text("1\n")

    def inject(self, count, workers=1, retry=0.5, give_up=300, env=None, first=0):
        """Start the injector for count messages (ids n<index>-<seq>, seq from first) inside the namespace."""
        self.results = self.fleet.base / ("node%d.results" % self.index)
        argv = [sys.executable, os.path.abspath(__file__), "inject", self.tree, self.results,
                "n%d" % self.index, first, count, workers, retry, give_up]
        e = dict(os.environ, PATH="%s:%s" % (BIN, os.environ.get("PATH", "")), **(env or {}))
        self.injector = self.fleet.procs.start(self.argv(argv), env=e, stdout=subprocess.DEVNULL,
                                               stderr=open(str(self.results) + ".err", "ab"))

    def attempts(self):
        """Return [(id, program, attempt, exit code, time)] written so far."""
        try:
            text = self.results.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 5:
                out.append((parts[0], parts[1], int(parts[2]), int(parts[3]), float(parts[4])))
        return out


class Fleet:
    """N nodes and M hubs on a bridge; close() stops what it started and removes everything it made."""

    serial = 0

    def __init__(self, base, procs, nodes=1, hubs=1, spread=True, hub_tmpfs_mb=None, sink=False):
        Fleet.serial += 1
        self.serial = Fleet.serial
        self.base, self.procs = Path(base), procs
        self.namespaces, self.mounts = [], []
        self.switch = "%s%d-%d-sw" % (PREFIX, os.getpid(), self.serial)
        self.hubs = [Hub(self, j, hub_tmpfs_mb) for j in range(hubs)]
        self.nodes = [Node(self, i) for i in range(nodes)]
        self.spread = spread
        self.sink = Sink(self) if sink else None

    def __enter__(self):
        try:
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def setup(self):
        """Make the switch, the hosts and their trees; start the hubs."""
        remove_stale()
        ip("netns", "add", self.switch)
        self.namespaces.append(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        if self.sink:
            self.sink.setup()
        for hub in self.hubs:
            hub.setup()
            if self.sink:  # everything not local to the hub goes on to the sink over SMTP
                (hub.tree / "control" / "smtproutes").write_text(":[%s]:25\n" % self.sink.ip)
        for node in self.nodes:
            node.setup(self.hubs, self.spread)
        for hub in self.hubs:
            hub.start()

    def close(self):
        """Stop every process started, unmount, delete every namespace (and so every veth)."""
        self.procs.stop_all()
        for mount in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(mount)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for ns in reversed(self.namespaces):
            ip("netns", "del", ns, check=False)
        self.namespaces, self.mounts = [], []

    def attempts(self):
        """Every node's attempts."""
        return [a for node in self.nodes for a in node.attempts()]

    def accepted(self):
        """Return the ids whose injector got exit 0."""
        return {a[0] for a in self.attempts() if a[3] == 0}

    def wait_injectors(self, timeout):
        """Wait until every injector has exited; return their exit codes."""
        deadline = time.time() + timeout
        codes = []
        for node in self.nodes:
            codes.append(node.injector.wait(max(1, deadline - time.time())))
        return codes

    def delivered(self):
        """Return {id: copies over all hubs' Maildirs and the sink}, and {hub index: messages it delivered
        to its Maildir}."""
        total, per_hub = dict(self.sink.delivered()) if self.sink else {}, {}
        for hub in self.hubs:
            got = hub.delivered()
            per_hub[hub.index] = sum(got.values())
            for k, v in got.items():
                total[k] = total.get(k, 0) + v
        return total, per_hub

    def wait_delivered(self, ids, timeout):
        """Wait until every id is in some hub's Maildir and every hub's queue is empty."""
        wait_for(lambda: set(ids) <= set(self.delivered()[0]) and all(h.queue_empty() for h in self.hubs),
                 timeout, "delivery of %d messages" % len(ids))


def inject_main(argv):
    """The injector (see the module docstring): TREE RESULTS NODE FIRST COUNT WORKERS RETRY GIVE_UP."""
    tree, results, node, first, count, workers, retry, give_up = argv
    count, workers, retry, give_up = int(count), int(workers), float(retry), float(give_up)
    out = open(results, "a", buffering=1)
    pw = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)  # injections never run as root
    env = dict(os.environ, QMAILHOME=tree, USER="nobody", HOME="/")
    recipient = os.environ.get("FLEET_RECIPIENT", RECIPIENT)
    lock = threading.Lock()
    seqs = iter(range(int(first), int(first) + count))
    end = time.time() + give_up

    def worker():
        """Inject messages until none are left."""
        while True:
            with lock:
                seq = next(seqs, None)
            if seq is None:
                return
            msg_id = "%s-%d" % (node, seq)
            message = ("From: %s\nTo: %s\nSubject: fleet %s\n\nmessage %s\n"
                       % (SENDER, recipient, msg_id, msg_id)).encode()
            attempt = 0
            while True:
                attempt += 1
                name = "qmail-inject" if seq % 2 == 0 else "sendmail"
                cmd = [os.path.join(tree, "bin", name)]
                cmd += [recipient] if name == "qmail-inject" else ["-f", SENDER, recipient]
                code = subprocess.run(cmd, input=message, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL).returncode
                with lock:
                    out.write("%s %s %d %d %.3f\n" % (msg_id, name, attempt, code, time.time()))
                if code != 111 or time.time() > end:
                    break
                time.sleep(retry)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["inject"]:
        sys.exit(inject_main(sys.argv[2:]))
    sys.exit("usage: netns.py inject TREE RESULTS NODE FIRST COUNT WORKERS RETRY GIVE_UP")
