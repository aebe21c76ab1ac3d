"""How qmail-send starts: controls, queue directory, mutex and the spawners' limits (qmail-send(8), start and
controls); how it rereads its controls on HUP."""

from __future__ import annotations

import fcntl
import os
import signal
import time

from pyqmail.lib.config import control
from pyqmail.lib.send import bounce, sendlog
from pyqmail.lib.send.sendlog import flush_log, log
from pyqmail.lib.send.retry import QUEUELIFETIME
from pyqmail.lib.send.channel import LOCAL, REMOTE
from pyqmail.lib.send.rewrite import Rewriter
from pyqmail.lib.send.sendmessages import SLEEP_ALERT

MYPY = False
if MYPY:  # typing only: never imported at run time
    from pyqmail.lib.send.bounce import BounceControls

FDS = {LOCAL: (1, 2), REMOTE: (3, 4)}  # channel: (to its spawner, from its spawner)
DEFAULT_CONCURRENCY = {LOCAL: 10, REMOTE: 20}


class Stop(Exception):
    """qmail-send cannot start: args[0] is the alert line to log before exiting 111."""


def read_controls() -> tuple[dict[str, int], Rewriter, BounceControls]:
    """Read qmail-send's controls from QMAILHOME/control; return (settings dict, Rewriter, BounceControls)."""
    me = control.readline("me")
    settings = {"lifetime": control.readint("queuelifetime", QUEUELIFETIME),
                LOCAL: control.readint("concurrencylocal", DEFAULT_CONCURRENCY[LOCAL]),
                REMOTE: control.readint("concurrencyremote", DEFAULT_CONCURRENCY[REMOTE])}
    envnoathost = control.rldef("envnoathost", b"envnoathost")
    rewriter = Rewriter.from_controls(envnoathost, control.read_file("locals"), me,
                                      control.read_file("percenthack"), control.read_file("virtualdomains"))
    return settings, rewriter, bounce.controls_from(control.readline, me)


def spawn_limits() -> dict[str, int]:
    """Read the one byte each spawner sends first: its concurrency limit."""
    limits: dict[str, int] = {}
    for name, (_, fd_in) in FDS.items():
        try:
            byte = os.read(fd_in, 1)
        except OSError:
            byte = b""
        if not byte:
            raise Stop(sendlog.cannot_start("spawn"))
        limits[name] = byte[0]
    return limits


def start() -> tuple[str, dict[str, int], Rewriter, BounceControls, dict[str, int]]:
    """Start as qmail-send does; return (home, settings, Rewriter, BounceControls, spawner limits)."""
    home = os.path.abspath(control.qmailhome())
    os.environ["QMAILHOME"] = home  # control reads and bounce injection must not depend on the cwd
    try:
        os.chdir(home)
    except OSError:
        raise Stop(sendlog.cannot_start("home"))
    try:
        settings, rewriter, bounce_controls = read_controls()
    except (OSError, ValueError):
        raise Stop(sendlog.cannot_start("controls"))
    try:
        os.chdir("queue")
    except OSError:
        raise Stop(sendlog.cannot_start("queue"))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.umask(0o077)
    try:
        mutex = os.open("lock/sendmutex", os.O_WRONLY)
    except OSError:
        raise Stop(sendlog.cannot_start("mutex"))
    try:
        fcntl.flock(mutex, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise Stop(sendlog.cannot_start("running"))
    return home, settings, rewriter, bounce_controls, spawn_limits()


def reread(home: str, rewriter: Rewriter) -> Rewriter:
    """SIGHUP: return the Rewriter with locals and virtualdomains reread (the old one if that fails)."""
    try:
        os.chdir(home)
    except OSError:
        log(sendlog.alert("reread_home"))
        return rewriter
    try:
        try:
            locals_data = control.read_file("locals")
        except OSError:
            log(sendlog.alert("reread_locals"))
            return rewriter
        # qmail's control_readfile: an absent locals means control/me as read at start; without one then,
        # the reread fails and the old tables stay (never no local domain at all)
        if locals_data is None and rewriter.me is None:
            log(sendlog.alert("reread_locals"))
            return rewriter
        try:
            return rewriter.reloaded(locals_data, control.read_file("virtualdomains"))
        except OSError:
            log(sendlog.alert("reread_virtualdomains"))
            return rewriter
    finally:
        while True:
            try:
                os.chdir("queue")
                break
            except OSError:
                log(sendlog.alert("back_to_queue"))
                flush_log()
                time.sleep(SLEEP_ALERT)
