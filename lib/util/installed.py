"""Recognising our own installed programs: where they live, what PATH finds, and launchers qmail-setup wrote.

A program is ours when its real path (symlinks resolved) is the real path of `<bin>/<name>`, where `<bin>`
is the bin/ of the interpreter running (the virtual environment pyqmail is installed in), or when it is the
launcher qmail-setup wrote into QMAILHOME/bin for that name (lib/util/launcher).
"""

from __future__ import annotations

import os
import sys

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable


def bindirs() -> list[str]:
    """Return the directories our installed programs live in."""
    dirs = [os.path.dirname(sys.executable), os.path.join(sys.prefix, "bin")]
    return list(dict.fromkeys(d for d in dirs if d))


def which(program: str, path: str | None) -> str | None:
    """Return the file execvp would run for program with PATH=path, or None (no shell involved)."""
    if "/" in program:
        return program
    for d in (path or "").split(":"):
        candidate = os.path.join(d or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def is_program(path: str, name: str, dirs: Iterable[str] | None = None) -> bool:
    """True if path, symlinks resolved, is our installed program called name (in one of dirs, by default
    bindirs()), or the launcher qmail-setup wrote for it."""
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        return False
    if any(os.path.realpath(os.path.join(d, name)) == real for d in (bindirs() if dirs is None else dirs)):
        return True
    from pyqmail.lib.util import launcher
    return os.path.basename(real) == name and launcher.runs(real, launcher.module_of(name))
