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
                           "--nonblocking", "--idle", "--threads",
                           "--duration", str(seconds), "--output", str(path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append((name, p, path))
    return out


WAITS = ("select(", ".poll(", ".get(block=True)", ".wait(")  # source lines where a thread idles


def waits(frame):
    """True if a py-spy frame ("function (path:line)") is idling: the event loop in select() or poll(),
    a thread-pool worker waiting for work, a thread waiting on a condition."""
    m = re.search(r"\((.*):(\d+)\)$", frame)
    return bool(m) and any(w in linecache.getline(m.group(1), int(m.group(2))) for w in WAITS)


def read_samples(path):
    """Parse py-spy's raw --threads output: {"main thread" or "other threads": [(frames, count)]}, thread ids."""
    groups, threads = {}, set()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        head, *frames = stack.split(";")
        threads.add(head.split(":")[0])
        group = "main thread" if head.endswith(": MainThread") else "other threads"
        groups.setdefault(group, []).append((frames, int(n)))
    return groups, threads


def profile_summary(started, spies, top=8):
    """Stop the profilers; return report lines: per group of threads, the share of its wall time spent
    idle and, for the rest, where it went by source line."""
    lines = []
    for name, p, path in spies:
        started.stop(p, signal.SIGINT, timeout=20)  # py-spy writes its output on SIGINT
        if not path.exists():
            lines.append("profile of %s: py-spy wrote nothing (ptrace not allowed?)" % name)
            continue
        groups, threads = read_samples(path)
        lines.append("profile of %s (py-spy --idle --threads, %d thread(s)):" % (name, len(threads)))
        for group, samples in sorted(groups.items()):
            own, incl, total, idle = Counter(), Counter(), 0, 0
            for frames, n in samples:
                total += n
                if not frames or waits(frames[-1]):
                    idle += n
                    continue
                frames = [re.sub(r" \((?:.*/)?([^/]*)\)$", r" (\1)", f) for f in frames]
                own[frames[-1]] += n
                for f in set(frames):
                    incl[f] += n
            share = 100 / max(total, 1)
            lines.append("  %s, %d samples: %.0f%% idle (select, poll, waiting for work), %.0f%% busy (on CPU or"
                         " in other system calls: fsync, unlink, ...):" % (group, total, idle * share,
                                                                          (total - idle) * share))
            for f, n in own.most_common(top):
                lines.append("    self %5.1f%%  %s" % (n * share, f))
            for f, n in incl.most_common(top + 6):
                if n < 0.98 * (total - idle):  # not the frames every busy sample shares (the loop's callers)
                    lines.append("    incl %5.1f%%  %s" % (n * share, f))
    return lines
