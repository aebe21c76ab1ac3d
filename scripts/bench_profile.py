"""py-spy profiles for the end-to-end benchmark (--profile): where a process's wall time goes, by line."""

import linecache
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

BIN = Path(sys.executable).parent


def profile_start(started, pids, seconds, work):
    """Start py-spy on each pid for the run, if it is installed; return [(name, Popen, raw output path)]."""
    spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if not spy:
        print("  (py-spy not installed: no profile)", file=sys.stderr)
        return []
    out = []
    for name, pid in pids.items():
        path = work / ("profile-%s.txt" % name)
        p = started.start([spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                           "--nonblocking", "--idle",
                           "--duration", str(seconds), "--output", str(path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append((name, p, path))
    return out


def waits_in_select(frame):
    """True if a py-spy frame ("function (path:line)") is a call of select(): the event loop idling."""
    m = re.search(r"\((.*):(\d+)\)$", frame)
    return bool(m) and "select(" in linecache.getline(m.group(1), int(m.group(2)))


def profile_summary(started, spies, top=8):
    """Stop the profilers; return report lines: where the wall time went, by source line."""
    lines = []
    for name, p, path in spies:
        started.stop(p, signal.SIGINT, timeout=20)  # py-spy writes its output on SIGINT
        if not path.exists():
            lines.append("profile of %s: py-spy wrote nothing (ptrace not allowed?)" % name)
            continue
        own, incl, total, idle = Counter(), Counter(), 0, 0
        for line in path.read_text(errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            n, frames = int(n), stack.split(";")
            total += n
            if waits_in_select(frames[-1]):
                idle += n
                continue
            frames = [re.sub(r" \((?:.*/)?([^/]*)\)$", r" (\1)", f) for f in frames]
            own[frames[-1]] += n
            for f in set(frames):
                incl[f] += n
        share = 100 / max(total, 1)
        lines.append("profile of %s (py-spy --idle, %d samples of its wall time): %.0f%% waiting in select,"
                     " %.0f%% busy (on CPU or in other system calls: fsync, unlink, ...):"
                     % (name, total, idle * share, (total - idle) * share))
        for f, n in own.most_common(top):
            lines.append("  self %5.1f%%  %s" % (n * share, f))
        for f, n in incl.most_common(top + 6):
            if n < 0.98 * (total - idle):  # not the frames every busy sample shares (the loop's callers)
                lines.append("  incl %5.1f%%  %s" % (n * share, f))
    return lines
