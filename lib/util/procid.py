"""This process's id without a system call per use: getpid(2) once, again only in a forked child."""

from __future__ import annotations

import posix  # not os: start-up cost (lib/config/control)

_pid: list[int] = []  # empty until asked; emptied in every forked child (register_at_fork)


def getpid() -> int:
    """Return this process's id (glibc no longer caches it: each os.getpid() is a system call)."""
    if not _pid:
        _pid.append(posix.getpid())
    return _pid[0]


def _forked() -> None:
    """In a new child: forget the parent's id."""
    _pid.clear()


posix.register_at_fork(after_in_child=_forked)
