"""Which programs qmail-tcpserver runs in a pre-loaded forked child instead of exec'ing them.

A program is recognised when it is our installed program (lib/util/installed) of a name in PROGRAMS.
The child then calls the module's `run()`, which is what the installed launcher does after a fresh
interpreter has started.
See qmail-tcpserver(8).
"""

from __future__ import annotations

import os

from pyqmail.lib.util.installed import is_program, which

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable
    from types import ModuleType

# per-connection programs that read the connection on fds 0/1 and end with os._exit; the network servers
# that record qmaild's uid when queueing in-process (queuehere.NETWORK_SERVERS) are the first three
PROGRAMS = {
    "qmail-qmqpd": "pyqmail.commands.qmail_qmqpd",
    "qmail-qmtpd": "pyqmail.commands.qmail_qmtpd",
    "qmail-smtpd": "pyqmail.commands.qmail_smtpd",
    "qmail-popup": "pyqmail.commands.qmail_popup",  # it then execs the checkpassword chain, as under tcpserver
}

# what a program imports only on its per-connection path, imported once in the listener instead
PRELOAD = {
    "pyqmail.commands.qmail_qmqpd": ("pyqmail.lib.queue.client", "pyqmail.lib.queue.received",
                                     "pyqmail.lib.util.timedio", "pyqmail.lib.queue.queuehere",
                                     "pyqmail.lib.util.launcher"),
    "pyqmail.commands.qmail_smtpd": ("pyqmail.lib.smtpd.smtpqueue", "pyqmail.lib.queue.queuehere",
                                     "pyqmail.lib.queue.client", "pyqmail.lib.queue.received",
                                     "pyqmail.lib.util.netlog", "pyqmail.lib.config.access", "cdbx",
                                     "pyqmail.lib.smtpd.smtptls", "ssl"),  # else each worker imports ssl: 15 ms of CPU
    "pyqmail.commands.qmail_qmtpd": ("pyqmail.lib.queue.client", "pyqmail.lib.queue.received",
                                     "pyqmail.lib.util.timedio", "pyqmail.lib.queue.queuehere",
                                     "pyqmail.lib.config.access", "pyqmail.lib.config.rcpthosts", "cdbx"),
}


# what a program makes once in the listener, after its PRELOAD, for every worker forked later to share (module,
# function): qmail-smtpd's TLS context, so that each worker neither loads the certificate nor has ticket keys of its own
WARM = {
    "pyqmail.commands.qmail_smtpd": ("pyqmail.lib.smtpd.smtptls", "warm"),
}


def recognise(program: str, path: str | None = None, dirs: Iterable[str] | None = None) -> str | None:
    """Return the module name serving program in-process, or None when it must be exec'd."""
    found = which(program, os.environ.get("PATH", "") if path is None else path)
    if found is None:
        return None
    for name, module in PROGRAMS.items():
        if is_program(found, name, dirs):
            return module
    return None


def preload(module: str) -> None:
    """Import the modules a program would import lazily for every connection, and make what WARM names; missing
    ones are skipped."""
    import importlib
    for name in PRELOAD.get(module, ()):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    warm(module)


def warm(module: str) -> None:
    """Make (or make again, if it has aged: qmail-smtpd's TLS context) what WARM names for module; the listener
    calls it before each worker it forks."""
    if module not in WARM:
        return
    import importlib
    name, function = WARM[module]
    try:
        getattr(importlib.import_module(name), function)()
    except (ImportError, AttributeError):
        pass


def load(module: str) -> ModuleType | None:
    """Import a program's module and return it, or None if this install lacks it.

    Its `run()` serves one connection and exits; a module that also has `connection()` (serve one
    connection, return the exit code, leave no state behind) is run in reused workers (lib/tcpserver/tcppool)."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
