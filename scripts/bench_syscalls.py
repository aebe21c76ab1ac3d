"""System calls per message of a running SMTP benchmark (issue 23): strace -f attached for a few seconds to
pyqmail's qmail-tcpserver and its qmail-smtpd workers, or to the private Postfix's processes (master, smtpd,
cleanup, ...), then counted by process kind and call name, per message.

Usage (root; run while scripts/bench_smtp.py sends, e.g. `--cases 20:4000 --modes queue --systems pyqmail`):
    python scripts/bench_syscalls.py pyqmail|postfix [SECONDS] [TRACE_FILE]
It waits for the system's processes to appear, traces them for SECONDS (default 3) and prints a table.
Messages are counted as pyqmail's links to todo/ and as Postfix smtpd's accepted connections (one message
per connection, smtp-source's default). Postfix's processes must be traced from their start (master with -f):
they drop privileges and cannot be attached later, so for postfix start this before the run's first message.
"""

import collections
import os
import re
import signal
import subprocess
import sys
import time

POSTFIX = ("smtpd", "cleanup", "master", "trivial-rewrite", "postlogd", "proxymap", "anvil", "tlsmgr")


def processes(system):
    """Return {pid: kind} of the system's live processes (not zombies)."""
    found = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = open("/proc/%s/cmdline" % p, "rb").read().split(b"\0")
            comm = open("/proc/%s/comm" % p).read().strip()
            state = open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()[0]
            env = open("/proc/%s/environ" % p, "rb").read() if system == "postfix" else b""
        except (OSError, IndexError):
            continue
        if state == "Z":
            continue
        line = b" ".join(cmd)
        if system == "pyqmail" and b"qmail-tcpserver" in line and b"qmail-smtpd" in line:
            found[int(p)] = "qmail-tcpserver+qmail-smtpd"
        elif system == "postfix" and comm in POSTFIX and b"pyqmail-smtp" in env:  # bench_postfix's instance
            found[int(p)] = comm
    return found


def trace(system, seconds, out):
    """Attach strace -f to the system's processes for seconds; return {pid: kind} at the start."""
    deadline = time.time() + 120
    while True:
        found = processes(system)
        if system == "pyqmail" and len(found) > 3 or system == "postfix" and "master" in found.values():
            break
        if time.time() > deadline:
            sys.exit("bench_syscalls: no %s processes found" % system)
        time.sleep(0.1)
    if system == "pyqmail":
        time.sleep(1.0)  # the workers forked for the load are there
        found = processes(system)
    args = ["strace", "-f", "-qq", "-o", out]
    for pid in found:
        args += ["-p", str(pid)]
    st = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    st.send_signal(signal.SIGINT)
    st.wait()
    return found


def count(out, kinds, system):
    """Return ({kind: Counter(call)}, messages) from strace's output."""
    call_at = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()")
    forked = re.compile(r"^(\d+)\s+(?:clone3?\(|fork\(|vfork\(|<\.\.\. (?:clone3?|fork|vfork) resumed>).*= (\d+)")
    parent, per_pid, messages = {}, collections.defaultdict(collections.Counter), 0
    lines = open(out, errors="replace").read().splitlines()
    for line in lines:
        m = forked.match(line)
        if m:
            parent[int(m.group(2))] = int(m.group(1))
    for line in lines:
        m = call_at.match(line)
        if not m or m.group(2):
            continue  # a resumed call was counted where it started
        pid, call = int(m.group(1)), m.group(3)
        if call == "execve":
            exe = re.search(r'execve\("[^"]*/([^/"]+)"', line)
            if exe:
                kinds[pid] = exe.group(1)
        per_pid[pid][call] += 1
        if system == "pyqmail" and call in ("link", "linkat") and '"todo/' in line:
            messages += 1
    by_kind = collections.defaultdict(collections.Counter)
    for pid, calls in per_pid.items():
        p = pid
        while p not in kinds and p in parent:
            p = parent[p]
        by_kind[kinds.get(p, "unknown")].update(calls)
    if system == "postfix":
        messages = by_kind["smtpd"]["accept"] + by_kind["smtpd"]["accept4"]
    return by_kind, messages


def main():
    """Trace, count, print."""
    system = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    out = sys.argv[3] if len(sys.argv) > 3 else "/tmp/bench_syscalls.%s.trace" % system
    by_kind, messages = count(out, trace(system, seconds, out), system)
    messages = max(messages, 1)
    print("%s: %d messages in the window; system calls per message" % (system, messages))
    total = 0.0
    for kind, calls in sorted(by_kind.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(calls.values()) / messages
        total += n
        print("  %-28s %6.1f  %s" % (kind, n, ", ".join("%s %.1f" % (c, v / messages)
                                                       for c, v in calls.most_common() if v / messages >= 0.05)))
    print("  %-28s %6.1f" % ("all", total))


if __name__ == "__main__":
    main()
