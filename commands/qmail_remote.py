"""qmail-remote: send the message on fd 0 by SMTP to a host's mail exchangers; reports on fd 1 (see qmail-remote(8))."""

import os

from pyqmail.lib.util.regularfile import is_regular
from pyqmail.lib.remote import smtpclient
from pyqmail.lib.util.fdio import write_all
from pyqmail.lib.util.program import main
from pyqmail.lib.remote.remotesession import Connection, Fallback, Finish, Session
from pyqmail.lib.util.exits import TEMP_FAILURE

CACHE = None  # set by qmail-rspawn in its worker (or forked child) per delivery: a conncache.Link (qmail-rspawn(8))

USAGE = b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n"
NOCONN = b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
TEMP_DNS = b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n"
NOMX = b"DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n"
AMBIGMX = (b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n"
           b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n")
CONTROL = b"ZUnable to read control files. (#4.3.0)\n"
CHDIR = b"ZUnable to switch to home directory. (#4.3.0)\n"
AUTH_EXPOSED = b"ZSorry, control/remoteauth can be read by others; I won't use its passwords. (#4.3.0)\n"
BAD_SENDER = b"DSorry, a sender address with a CR or LF in it can't be sent in SMTP. (#5.1.7)\n"
OSERR = b"ZSystem resources temporarily unavailable. (#4.3.0)\n"
ROUTED_PREF = 300000  # with a route, qmail disables the "an MX is me" check


def perm_dns(host):
    """Return qmail's permanent DNS failure text for host (unprintables shown as `?`)."""
    return b"DSorry, I couldn't find any host named " + smtpclient.outsafe(host) + b". (#5.1.2)\n"


def find_targets(config, route, host):
    """Return the Targets to try, in order, for a route or the host's MX; DNS failures raise Finish."""
    from pyqmail.lib.remote.dnsmx import Target
    from pyqmail.lib.remote.remoteroute import literal_ip
    name = route.relay if route.relay is not None else host
    ip = literal_ip(name) if route.relay is not None or host.startswith(b"[") else None
    if ip is not None:
        return [Target(0, ip, ip.encode())]
    from pyqmail.lib.remote import dnsmx
    try:
        resolver = dnsmx.make_resolver(dnsmx.server_list(config.dnsservers))
        if route.relay is not None:
            return dnsmx.host_targets(resolver, name)
        return dnsmx.mx_targets(resolver, name)
    except dnsmx.DnsSoft:
        raise Finish(TEMP_DNS)
    except dnsmx.DnsHard:
        raise Finish(perm_dns(name))


def usable(targets, routed):
    """Return the targets qmail may try: with no route, only MXes better than the best one that is this host."""
    if not targets:
        raise Finish(NOMX)
    prefme = ROUTED_PREF
    if not routed:
        from pyqmail.lib.config.ipme import ipv4_addresses, ipv6_addresses
        try:
            mine = ipv4_addresses() | ipv6_addresses()
        except OSError:
            raise Finish(OSERR)
        prefme = min([t.pref for t in targets if t.ip in mine] + [100000])
    allowed = [t for t in targets if t.pref < prefme]
    if not allowed:
        raise Finish(AMBIGMX)
    return allowed


def connect(ip, port, timeout):
    """Return a socket connected to ip:port within timeout seconds (OSError, TimeoutError otherwise)."""
    import _socket
    sock = _socket.socket(_socket.AF_INET6 if ":" in ip else _socket.AF_INET, _socket.SOCK_STREAM)
    sock.settimeout(max(timeout, 1))
    try:
        sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


def message_size(fd):
    """Return the size of the message file on fd; 0 for a pipe (its bytes are allowed for as they are read)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return 0
    return st.st_size if is_regular(st.st_mode) else 0


def relay_auth(route):
    """Return (user, password) for the route's relay from control/remoteauth, or None."""
    if route.relay is None:
        return None
    from pyqmail.lib.remote import remoteconf
    try:
        return remoteconf.auth_for(route.relay)
    except remoteconf.AuthFileExposed:
        raise Finish(AUTH_EXPOSED)
    except remoteconf.ControlError:
        raise Finish(CONTROL)


def features_for(config, host, target, auth):
    """Return the Features for one connection: TLS policy of the domain, AUTH for the relay."""
    from pyqmail.lib.config import control
    from pyqmail.lib.remote.remotefeatures import Features
    cafile = control.path("control", "tlscafile")
    return Features(config.tls_policy(host), target.name.decode("utf-8", "replace"), auth,
                    cafile=cafile if os.path.exists(cafile) else None,
                    loopback=target.ip.startswith("127.") or target.ip == "::1")


def parker(link, key, ip, born, uses, opened):
    """Return the Session's park callback: hand the connection to qmail-rspawn with its record (opened: what the
    session was opened with, conncache.session_of)."""
    def park(session):
        from pyqmail.lib.remote import conncache
        record = conncache.Record(key, ip.encode(), born, uses + 1, session.keywords, opened)
        try:
            fd = session.conn.sock.fileno()
        except OSError:
            return False
        if not link.give(fd, record):
            return False
        session.conn.close()  # our copy: the connection itself stays open in qmail-rspawn
        return True
    return park


def reuse(config, lent, sender, recipients, out):
    """Deliver over a cached connection from its MAIL FROM on (raises Finish); return if it must be given up."""
    import _socket
    from pyqmail.lib.remote import conncache
    from pyqmail.lib.remote.remotefeatures import Features
    record = lent.record
    try:
        sock = _socket.socket(fileno=lent.fd)
    except OSError:
        os.close(lent.fd)
        return
    budget = smtpclient.session_budget(config.timeout, len(recipients))
    conn = Connection(sock, config.timeout, budget, message_size(0))
    features = Features(try_tls=False)  # a cached connection never did TLS, nor may it start it now
    park = parker(CACHE, record.key, record.ip.decode("ascii", "replace"), record.born, record.uses, record.session)
    try:
        Session(conn, record.ip.decode("ascii", "replace"), config.helohost, sender, recipients, out, features,
                reused=record.keywords, park=park).run(0)
    except Fallback:
        del out[:]  # nothing was accepted: the fresh connection reports every recipient anew
        conncache.say_quit(sock.detach())


def attempt(config, route, host, target, sock, sender, recipients, out, auth):
    """Run the SMTP session on a connected socket; opportunistic TLS trouble means one plain retry."""
    import time
    from pyqmail.lib.remote.remotefeatures import RetryPlain
    features = features_for(config, host, target, auth)
    budget = smtpclient.session_budget(config.timeout, len(recipients))
    size = message_size(0)
    conn = Connection(sock, config.timeout, budget, size)
    park = None
    if CACHE is not None:
        from pyqmail.lib.remote.conncache import cache_key, session_of
        park = parker(CACHE, cache_key(config.routes, host), target.ip, time.monotonic(), 0,
                      session_of(config.helohost, route.port, auth))
    try:
        Session(conn, target.ip, config.helohost, sender, recipients, out, features, park=park).run(0)
    except RetryPlain:
        conn.close()
        try:
            sock = connect(target.ip, route.port, config.timeoutconnect)
        except OSError:
            raise Finish(NOCONN)
        features.try_tls = False
        conn = Connection(sock, config.timeout, budget, size)  # a new session, with a new deadline
        Session(conn, target.ip, config.helohost, sender, recipients, out, features, park=park).run(0)


def deliver(host, sender, recipients, out):
    """Everything after argv: controls, route, lookups, connections; ends by raising Finish."""
    from pyqmail.lib.config import control
    from pyqmail.lib.remote import remoteconf, tcpto
    from pyqmail.lib.remote.remoteroute import find_route
    try:
        os.chdir(control.qmailhome())
    except OSError:
        raise Finish(CHDIR)
    try:
        config = remoteconf.Config()
    except remoteconf.ControlError:
        raise Finish(CONTROL)
    if smtpclient.has_line_break(sender):
        raise Finish(BAD_SENDER)
    route = find_route(config.routes, host)
    auth = relay_auth(route)
    lent = None
    if CACHE is not None:
        from pyqmail.lib.remote.conncache import cache_key, session_of
        lent = CACHE.take(cache_key(config.routes, host), session_of(config.helohost, route.port, auth))
    if lent is not None:
        if config.tls_policy(host) is None:
            reuse(config, lent, sender, recipients, out)
        else:  # TLS is required now: a cached connection is plain text
            from pyqmail.lib.remote import conncache
            conncache.say_quit(lent.fd)
    targets = usable(find_targets(config, route, host), route.relay is not None)
    table = tcpto.Table()
    for target in targets:
        if table.skip(target.ip):
            continue
        try:
            sock = connect(target.ip, route.port, config.timeoutconnect)
        except OSError as e:
            import errno
            table.note(target.ip, isinstance(e, TimeoutError) or e.errno == errno.ETIMEDOUT)
            continue
        table.note(target.ip, False)
        attempt(config, route, host, target, sock, sender, recipients, out, auth)
    raise Finish(NOCONN)


def body(argv):
    """qmail-remote host sender recip...: write the recipient reports and the message report; exit 0."""
    argv = [os.fsencode(a) for a in argv]
    out = []
    if len(argv) < 3:
        report = USAGE
    else:
        try:
            deliver(argv[0], argv[1], argv[2:], out)
        except Finish as f:
            report = f.report
    try:
        write_all(1, b"".join(out) + report + b"\0")
    except OSError:
        pass  # fd 1 failed: there is nobody to tell
    return 0


def run():
    """Console-script entry point."""
    main("qmail-remote", body, crash_code=TEMP_FAILURE)
