"""qmail-queue: put one message (fd 0) with its envelope (fd 1) into the queue (qmail-queue(8))."""

import os
import _signal  # not `signal`: it imports enum, a third of our start-up budget

from pyqmail.lib.config import control
from pyqmail.lib.queue import envelope, queue
from pyqmail.lib.util import fdio
from pyqmail.lib.util.exits import BUG, TIMEOUT, Exit
from pyqmail.lib.util.program import main


def queue_directly(home, uid, pid):
    """Write the message into the queue in qmail-queue's order."""
    queue.enter_queue(home)
    injection = queue.Injection(pid, uid)
    fd, _ = injection.open_mess()
    injection.write_message(fd, fdio.chunks(0))
    try:
        sender, recipients = envelope.read(fdio.FdStream(1))
    except (envelope.EnvelopeError, Exit) as e:
        injection.fail(e.code)
    injection.commit(sender, recipients)


def body(argv):
    """Queue the message directly, or through the maildrop for users who do not own the queue."""
    _signal.signal(_signal.SIGALRM, lambda *_: os._exit(TIMEOUT))  # no clean-up: qmail-send's orphan rule owns it
    _signal.alarm(queue.DEATH)
    home = control.qmailhome()
    uid, pid = os.getuid(), os.getpid()
    if os.geteuid() == 0:
        queue.become_queue_owner(home)
    if queue.owns_queue(home):
        queue_directly(home, uid, pid)
    else:
        from pyqmail.lib.queue import maildrop
        maildrop.drop(home, pid, fdio.chunks(0), fdio.FdStream(1))
    return 0


def run():
    """Console-script entry point."""
    main("qmail-queue", body, crash_code=BUG)
