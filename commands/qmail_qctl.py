"""qmail-qctl: look at a queue: list (-p), show (-m), shape (-q), check (-s); change it: hold (-h), release
(-H), delete (-d), requeue (-r), flush (-f), through qmail-send's control socket while qmail-send runs, else
on the files with lock/sendmutex held; repair (-S) a stopped queue (qmail-qctl(8))."""

import fcntl
import os
import socket
import time

from pyqmail.lib.config import control
from pyqmail.lib.queue import qadmin, qcheck, qlist, qrepair, qshape
from pyqmail.lib.queue.queue import split_name
from pyqmail.lib.util.errstr import oserror_str
from pyqmail.lib.util.exits import PERM_FAILURE, TEMP_FAILURE, Exit
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.program import main
from pyqmail.lib.util import netstring
from pyqmail.lib.util.sgetopt import BadOption, options

PROGRAM = "qmail-qctl"
SPEC = "pm:qsF:T:o:h:H:d:r:fSR:bu"
CHANGES = {"h": "hold", "H": "release", "d": "delete", "r": "requeue"}  # each takes an id or ALL
USAGE = ("usage: qmail-qctl -p [-F sender] [-T recipient] [-o domain] | -m id | -s | -S\n"
         "       qmail-qctl -q [new|active|deferred|hold]...\n"
         "       qmail-qctl -h id|ALL... | -H id|ALL... | -r id|ALL... [-u] | -d id|ALL... [-b] [-R recipient]... | -f")
MESS_CHUNK = 65536
REPLY_WAIT = 360  # seconds to wait for qmail-send's reply (it waits up to 300 for running deliveries)


def say(data):
    """Write bytes to stdout."""
    write_all(1, data)


def fatal(what, e):
    """End with `qmail-qctl: fatal: <what>: <error>` on fd 2 and exit 111."""
    raise Exit(TEMP_FAILURE, "fatal: %s: %s" % (what, oserror_str(e)))


def enter():
    """chdir to QMAILHOME/queue."""
    home = control.qmailhome()
    try:
        os.chdir(home)
        os.chdir("queue")
    except OSError as e:
        fatal("unable to chdir to %s/queue" % home, e)


def messages():
    """Yield every message in the queue, in ascending number (messages vanishing meanwhile are skipped)."""
    try:
        found = qlist.numbers()
    except OSError as e:
        fatal("unable to read the queue directories", e)
    for n in found:
        try:
            m = qlist.read_message(n)
        except OSError as e:
            fatal("unable to read message %d" % n, e)
        if m is not None:
            yield m


def arg(value):
    """Return an option's argument as bytes (as the queue holds addresses)."""
    return os.fsencode(value)


def listing(filters):
    """-p: list the messages passing the filters, then a summary line."""
    now = time.time()
    shown = []
    for m in messages():
        if qlist.matches(m, **filters):
            say(qlist.message_lines(m, now))
            shown.append(m)
    say(qlist.summary_line(shown))
    return 0


def show(ident):
    """-m: one message's envelope, then mess/n (headers and body) as it is, in bounded chunks."""
    if not (ident.isascii() and ident.isdigit()):
        raise Exit(PERM_FAILURE, "fatal: not a message id: %s" % ident)
    n = int(ident)
    try:
        m = qlist.read_message(n)
    except OSError as e:
        fatal("unable to read message %d" % n, e)
    if m is None:
        raise Exit(PERM_FAILURE, "fatal: no message %d in the queue" % n)
    say(qlist.envelope_lines(m, time.time()))
    try:
        fd = qlist.open_file(split_name("mess", n))
    except FileNotFoundError:
        raise Exit(PERM_FAILURE, "fatal: no message %d in the queue" % n)
    except OSError as e:
        fatal("unable to open mess/%d/%d" % (n % 23, n), e)
    try:
        while True:
            data = os.read(fd, MESS_CHUNK)
            if not data:
                break
            say(data)
    except OSError as e:
        fatal("unable to read mess/%d/%d" % (n % 23, n), e)
    finally:
        os.close(fd)
    return 0


def shape(operands):
    """-q [new|active|deferred|hold]...: the table of recipients to do, by domain and age."""
    sets = set()
    for word in operands or ["new", "active"]:
        if word not in ("new", "active", "deferred", "hold"):
            raise Exit(PERM_FAILURE, USAGE)
        sets.add({"new": qlist.NEW, "active": qlist.QUEUED, "deferred": qlist.QUEUED, "hold": qlist.HELD}[word])
    now = time.time()
    say(qshape.format_table(qshape.shape(qlist.shape_entries(messages(), now, sets))))
    return 0


def check():
    """-s: report each defect; 0 when clean, 100 when defects were found."""
    try:
        snap = qcheck.scan(".")
    except OSError as e:
        fatal("unable to read the queue", e)
    top = snap.nodes[""]
    defects = qcheck.check(snap, qcheck.owners_for(top.uid, top.gid), time.time())
    say(qcheck.report(defects))
    return PERM_FAILURE if defects else 0


def repair():
    """-S: with qmail-send stopped (lock/sendmutex held meanwhile), fix what can be fixed and print each change,
    then the defects left; 0 when none is left but damaged messages set aside, 111 otherwise."""
    fd = mutex()
    if fd is None:
        raise Exit(TEMP_FAILURE, "fatal: qmail-send is running: stop it before repairing the queue")
    try:
        top = qcheck.scan(".").nodes[""]
        owners = qcheck.owners_for(top.uid, top.gid)
        say("".join(qrepair.repair(".", owners)).encode("utf-8", "backslashreplace"))
        left = qrepair.remaining(qcheck.check(qcheck.scan("."), owners, time.time()))
    except OSError as e:
        fatal("unable to repair the queue", e)
    finally:
        os.close(fd)
    if left:
        say(b"".join(b"left: " + line for line in qcheck.report(left).splitlines(True)))
        return TEMP_FAILURE
    return 0


def request_of(change, extra):
    """Return the qadmin.Request of the change options (one letter, repeated for several ids)."""
    letter = change[0][0]
    if letter == "f":
        return qadmin.Request("flush", [])
    ids = []
    for _, value in change:
        if value == qadmin.ALL:
            if len(change) != 1:
                raise Exit(PERM_FAILURE, USAGE)
            return qadmin.Request(CHANGES[letter], None, extra["R"] or None, extra["b"] or extra["u"])
        n = qadmin.parse_id(value)
        if n is None:
            raise Exit(PERM_FAILURE, "fatal: not a message id: %s" % value)
        ids.append(n)
    return qadmin.Request(CHANGES[letter], ids, extra["R"] or None, extra["b"] or extra["u"])


def mutex():
    """Return lock/sendmutex's descriptor, locked, if qmail-send is not running; None if it is."""
    try:
        fd = os.open("lock/sendmutex", os.O_WRONLY)
    except OSError as e:
        fatal("unable to open lock/sendmutex", e)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as e:
        fatal("unable to lock lock/sendmutex", e)
    return fd


def changes(request):
    """-h -H -d -r -f: through qmail-send if it runs, else on the files; print each message's result."""
    size = len(qadmin.encode_request(request))
    if size > qadmin.REQUEST_MAX:  # qmail-send would refuse it; refused alike when it does not run
        raise Exit(PERM_FAILURE, "fatal: request too long: %d bytes, at most %d: name fewer ids or recipients"
                   % (size, qadmin.REQUEST_MAX))
    fd = mutex()
    if fd is None:
        reply = ask(request)
    else:
        try:
            reply = b"".join(offline(request))
        finally:
            os.close(fd)
    say(b"".join(line[1:] + b"\n" for line in reply.split(b"\n") if line))
    return qadmin.exit_code(reply)


def ask(request):
    """Send the request to qmail-send's control socket; return its reply's lines."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(REPLY_WAIT)
    try:
        sock.connect(qadmin.SOCKET)
        sock.sendall(qadmin.encode_request(request))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > qadmin.REPLY_MAX:
                raise Exit(TEMP_FAILURE, "fatal: qmail-send's reply is too long")
    except OSError as e:
        fatal("qmail-send is running but its control socket failed (queue/%s)" % qadmin.SOCKET, e)
    finally:
        sock.close()
    try:
        payload, _ = netstring.decode(data, qadmin.REPLY_MAX)
    except netstring.NetstringError:
        raise Exit(TEMP_FAILURE, "fatal: qmail-send's reply was cut short")
    return payload


def offline(request):
    """qmail-send is not running (and cannot start: lock/sendmutex is ours): change the files; yield lines."""
    now = time.time()
    verb = request.verb
    if verb == "flush":
        for n in qadmin.queued_numbers():
            qadmin.touch(n, now)
        yield qadmin.result_line(b"K", None, "flushed (qmail-send is not running: due when it starts)")
        return
    ids = request.ids
    if ids is None:
        ids = qadmin.held_numbers() if verb == "release" else qadmin.queued_numbers() + (
            qadmin.held_numbers() if verb == "delete" else [])
        if not ids:
            yield qadmin.result_line(b"K", None, "no message to %s" % verb)
    for n in sorted(set(ids)):
        try:
            yield offline_one(request, n, now)
        except OSError as e:
            yield qadmin.result_line(b"Z", n, "trouble: %s" % e)


def rewriter(cache=[]):
    """Return qmail-send's rewriting as the control files say now (read once; cwd is QMAILHOME/queue)."""
    if not cache:
        from pyqmail.lib.send.sendstart import read_controls
        try:
            os.chdir("..")
            cache.append(read_controls()[1])
            os.chdir("queue")
        except OSError as e:
            fatal("unable to read the controls", e)
    return cache[0]


def offline_one(request, n, now):
    """One message's change on the files; return the reply line."""
    verb = request.verb
    if verb == "hold":
        return qadmin.hold(n)
    if verb == "release":
        return qadmin.release(n, due=now)
    held = qadmin.exists(qadmin.hold_name(n))
    if qadmin.exists("todo/%d" % n):
        return qadmin.result_line(b"Z", n, "not preprocessed yet (qmail-send does that)")
    if not held and not qadmin.exists(split_name("info", n)):
        return qadmin.result_line(b"D", n, "no such message in the queue")
    if verb == "requeue":
        if held:
            return qadmin.result_line(b"D", n, "held: release it instead")
        moved = qadmin.reroute(n, rewriter().rewrite) if request.reroute else 0
        qadmin.touch(n, now)
        return qadmin.result_line(b"K", n, "requeued" + ("" if not moved else ", %d recipient%s now local"
                                                         % (moved, "" if moved == 1 else "s")))
    deleted, left = qadmin.delete(n, request.recipients, request.bounce)
    if held and not left:
        qadmin.release(n)  # nothing left: qmail-send finishes it at its start (bounce, end msg)
    if request.recipients is not None and not deleted:
        return qadmin.result_line(b"D", n, "no such recipient still to do")
    return qadmin.result_line(b"K", n, "%d recipient%s deleted" % (deleted, "" if deleted == 1 else "s"))


def body(argv):
    """Parse the options and run the one request."""
    try:
        pairs, operands = options(argv, SPEC, PROGRAM)
    except BadOption as e:
        raise Exit(PERM_FAILURE, "%s\n%s" % (e.why, USAGE))
    filters = {}
    requests = []
    change = []
    extra = {"R": [], "b": False, "u": False}
    for letter, value in pairs:
        if letter in CHANGES or letter == "f":
            change.append((letter, value))
        elif letter == "R":
            if not value:
                raise Exit(PERM_FAILURE, "fatal: -R needs an address")
            extra["R"].append(arg(value))
        elif letter == "b":
            extra["b"] = True
        elif letter == "u":
            extra["u"] = True
        elif letter == "F":
            filters["sender"] = arg(value)
        elif letter == "T":
            filters["recipient"] = arg(value)
        elif letter == "o":
            filters["domain"] = arg(value)
        else:
            requests.append((letter, value))
    if change:
        if requests or filters or operands or len({c for c, _ in change}) != 1 or (
                (extra["R"] or extra["b"]) and change[0][0] != "d") or (extra["u"] and change[0][0] != "r"):
            raise Exit(PERM_FAILURE, USAGE)
        enter()
        return changes(request_of(change, extra))
    if extra["R"] or extra["b"] or extra["u"]:
        raise Exit(PERM_FAILURE, USAGE)
    if len(requests) != 1 or (filters and requests[0][0] != "p") or (operands and requests[0][0] != "q"):
        raise Exit(PERM_FAILURE, USAGE)
    letter, value = requests[0]
    enter()
    if letter == "S":
        return repair()
    if letter == "p":
        return listing(filters)
    if letter == "m":
        return show(value)
    if letter == "q":
        return shape(operands)
    return check()


def run():
    """Console-script entry point."""
    main(PROGRAM, body, crash_code=TEMP_FAILURE)
