"""Which programs qmail-tcpserver runs in a pre-loaded forked child instead of exec'ing them.

A program is recognised when its real path (symlinks resolved) is the real path of
`<bin>/<name>` for a name in PROGRAMS, where `<bin>` is the bin/ of the interpreter running the
listener (the virtual environment pyqmail is installed in), or when it is the launcher qmail-setup
wrote into QMAILHOME/bin for that name (lib/launcher). The child then calls the module's `run()`,
which is what the installed launcher does after a fresh interpreter has started.
"""

import os
import sys

# per-connection programs that read the connection on fds 0/1 and end with os._exit; the network servers
# that record qmaild's uid when queueing in-process (queuehere.NETWORK_SERVERS) are the same three
PROGRAMS = {
    "qmail-qmqpd": "pyqmail.commands.qmail_qmqpd",
    "qmail-qmtpd": "pyqmail.commands.qmail_qmtpd",
    "qmail-smtpd": "pyqmail.commands.qmail_smtpd",
}


def bindirs():
    """Return the directories our installed programs live in."""
    dirs = [os.path.dirname(sys.executable), os.path.join(sys.prefix, "bin")]
    return list(dict.fromkeys(d for d in dirs if d))


def which(program, path):
    """Return the file execvp would run for program with PATH=path, or None (no shell involved)."""
    if "/" in program:
        return program
    for d in (path or "").split(":"):
        candidate = os.path.join(d or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def recognise(program, path=None, dirs=None):
    """Return the module name serving program in-process, or None when it must be exec'd."""
    found = which(program, os.environ.get("PATH", "") if path is None else path)
    if found is None:
        return None
    for name, module in PROGRAMS.items():
        if is_program(found, name, dirs):
            return module
    return None


def is_program(path, name, dirs=None):
    """True if path, symlinks resolved, is our installed program called name (in one of dirs, by default
    bindirs()), or the launcher qmail-setup wrote for it."""
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        return False
    if any(os.path.realpath(os.path.join(d, name)) == real for d in (bindirs() if dirs is None else dirs)):
        return True
    from pyqmail.lib import launcher
    return os.path.basename(real) == name and launcher.runs(real, launcher.module_of(name))


# what a program imports only on its per-connection path, imported once in the listener instead
PRELOAD = {
    "pyqmail.commands.qmail_qmqpd": ("pyqmail.lib.inject", "pyqmail.lib.received", "pyqmail.lib.timedio",
                                     "pyqmail.lib.queuehere", "pyqmail.lib.launcher"),
    "pyqmail.commands.qmail_smtpd": ("pyqmail.lib.smtpqueue", "pyqmail.lib.queuehere", "pyqmail.lib.inject",
                                     "pyqmail.lib.received", "pyqmail.lib.netlog", "pyqmail.lib.access", "cdbx"),
    "pyqmail.commands.qmail_qmtpd": ("pyqmail.lib.inject", "pyqmail.lib.received", "pyqmail.lib.timedio",
                                     "pyqmail.lib.queuehere", "pyqmail.lib.access", "pyqmail.lib.smtpcmd",
                                     "cdbx"),
}


def preload(module):
    """Import the modules a program would import lazily for every connection; missing ones are skipped."""
    import importlib
    for name in PRELOAD.get(module, ()):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def load(module):
    """Import a program's module and return it, or None if this install lacks it.

    Its `run()` serves one connection and exits; a module that also has `connection()` (serve one
    connection, return the exit code, leave no state behind) is run in reused workers (lib/tcppool)."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
