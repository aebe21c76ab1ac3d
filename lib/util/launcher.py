"""The launchers qmail-setup writes into QMAILHOME/bin for per-message programs, and how to recognise one.

A launcher runs the interpreter with -S: no site module, about 2 ms less CPU per start, which matters
under tcpserver, where every connection starts an interpreter. The install's paths are fixed in it, and
so is the pyqmail package's directory: pyqmail has no __init__.py (its parts install from commands/,
lib/ and control/), and importing a namespace package lists every sys.path directory, the standard
library's too, about 0.4 ms more per start.
qmail-tcpserver, qmail-rspawn and in-process queueing recognise a launcher as the program it starts,
so that they still run that program in-process instead of exec'ing it.
"""

from __future__ import annotations

import sys

PACKAGE_LINE = 'pyqmail = sys.modules["pyqmail"] = type(sys)("pyqmail")'
TEMPLATE = ("#!%s -S\n# %s, written by qmail-setup: no site module (about 2 ms less per start), so the paths\n"
            "# of this install are fixed here; rerun qmail-setup after moving it\nimport sys\n"
            "sys.path[1:1] = %r\n" + PACKAGE_LINE + "\npyqmail.__path__ = [%r]\nfrom %s import run\nrun()\n")
MAX_SIZE = 4096


def module_of(name: str) -> str:
    """Return the module serving the program called name."""
    return "pyqmail.commands." + name.replace("-", "_")


def text(name: str, paths: list[str]) -> str:
    """Return the launcher for name: this interpreter with -S, paths put first on sys.path, run()."""
    return TEMPLATE % (sys.executable, name, paths, package_dir(), module_of(name))


def here(resolved: bool = True) -> str:
    """Return the directory pyqmail is imported from in this process (what a launcher must put on sys.path);
    resolved=False: as this module's path names it, without resolving symlinks (no os import)."""
    if not resolved:
        return __file__.rsplit("/", 4)[0]
    import os.path  # not at the top: qmail-qmqpd's path avoids os (start-up cost, lib/config/control)
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))


def package_dir(resolved: bool = True) -> str:
    """Return the pyqmail package's directory in this process."""
    return here(resolved) + "/pyqmail"


def same_file(a: str, b: str) -> bool:
    """True if paths a and b name the same file: equal, or equal once symlinks are resolved."""
    if a == b:
        return True
    import os.path
    return os.path.realpath(a) == os.path.realpath(b)


def runs(path: str, module: str) -> bool:
    """True if path is a launcher written by qmail-setup that runs module with this process's interpreter
    and this process's pyqmail."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIZE + 1)
    except OSError:
        return False
    if len(data) > MAX_SIZE:
        return False
    lines = data.decode(errors="replace").split("\n")
    if len(lines) < 5 or lines[-1] != "" or lines[-3:-1] != ["from %s import run" % module, "run()"]:
        return False
    if lines[-4].startswith("pyqmail.__path__ = "):  # older launchers lack these two lines
        if len(lines) < 7 or lines[-5] != PACKAGE_LINE or not any(
                lines[-4] == "pyqmail.__path__ = [%r]" % package_dir(resolved) for resolved in (False, True)):
            return False
        lines = lines[:-5] + lines[-3:]
    interpreter = lines[0][2:].rsplit(" -S", 1)[0] if lines[0].startswith("#!") and lines[0].endswith(" -S") else ""
    paths = lines[-4]
    return (bool(interpreter) and same_file(interpreter, sys.executable) and paths.startswith("sys.path[1:1] = [")
            and any(repr(here(resolved)) in paths for resolved in (False, True)))
