"""qmail-showctl: every control file in qmail's order and words, byte for byte (qmail-showctl(8))."""

import grp
import os
import pwd
import subprocess

from hypothesis import given, strategies as st

from conftest import program, qenv
from pyqmail.lib.config import ctlreport


def showctl(tree):
    """Run the installed qmail-showctl; return (exit code, stdout)."""
    p = subprocess.run([program("qmail-showctl")], env=qenv(tree), capture_output=True)
    assert p.stderr == b""
    return p.returncode, p.stdout


def expected_header(tree):
    """The header lines: compile-time constants, then qmail's uids and gids (the tree's owner if absent)."""
    st_ = os.stat(tree / "queue") if (tree / "queue").exists() else os.stat(tree)

    def uid(name):
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            return st_.st_uid

    def gid(name):
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return st_.st_gid

    users = ", ".join(str(uid(n)) for n in ("alias", "qmaild", "qmaill", "root", "qmailp", "qmailq", "qmailr", "qmails"))
    return ("qmail home directory: %s.\nuser-ext delimiter: -.\npaternalism (in decimal): 2.\n"
            "silent concurrency limit: 120.\nsubdirectory split: 23.\nuser ids: %s.\ngroup ids: %d, %d.\n"
            % (tree, users, gid("nofiles"), gid("qmail"))).encode()


ALL_DEFAULTS = b"""
badmailfrom: (Default.) Any MAIL FROM is allowed.

bouncefrom: (Default.) Bounce user name is MAILER-DAEMON.

bouncehost: (Default.) Bounce host name is bouncehost.

concurrencylocal: (Default.) Local concurrency is 10.

concurrencyremote: (Default.) Remote concurrency is 20.

databytes: (Default.) SMTP DATA limit is 0 bytes.

defaultdomain: (Default.) Default domain name is defaultdomain.

defaulthost: (Default.) Default host name is defaulthost.

doublebouncehost: (Default.) 2B recipient host: doublebouncehost.

doublebounceto: (Default.) 2B recipient user: postmaster.

envnoathost: (Default.) Presumed domain name is envnoathost.

helohost: (Default.) SMTP client HELO host name is helohost.

idhost: (Default.) Message-ID host name is idhost.

localiphost: (Default.) Local IP address becomes localiphost.

locals: (Default.) Messages for me are delivered locally.

me: (Default.) My name is undefined! Uh-oh.

percenthack: (Default.) The percent hack is not allowed.

plusdomain: (Default.) Plus domain name is plusdomain.

qmqpservers: (Default.) No QMQP servers.

queuelifetime: (Default.) Message lifetime in the queue is 604800 seconds.

rcpthosts: (Default.) SMTP clients may send messages to any recipient.

morercpthosts: (Default.) No rcpthosts; morercpthosts is irrelevant.

morercpthosts.cdb: (Default.) No effect.

smtpgreeting: (Default.) SMTP greeting: 220 smtpgreeting.

smtproutes: (Default.) No artificial SMTP routes.

timeoutconnect: (Default.) SMTP client connection timeout is 60 seconds.

timeoutremote: (Default.) SMTP client data timeout is 1200 seconds.

timeoutsmtpd: (Default.) SMTP server data timeout is 1200 seconds.

virtualdomains: (Default.) No virtual domains.
"""


def empty_control(tree):
    """Remove every control file qmail-setup installed."""
    control = tree / "control"
    for f in control.iterdir():
        f.unlink()
    return control


def test_every_default(tree):
    empty_control(tree)
    assert showctl(tree) == (0, expected_header(tree) + ALL_DEFAULTS)


def test_me_replaces_the_me_defaults_but_not_the_others(tree):
    control = empty_control(tree)
    (control / "me").write_bytes(b"mx.example \t\nsecond line\n")
    out = showctl(tree)[1]
    assert b"\nbouncehost: (Default.) Bounce host name is mx.example.\n" in out
    assert b"\nsmtpgreeting: (Default.) SMTP greeting: 220 mx.example.\n" in out
    assert b"\nme: My name is mx.example.\n" in out
    assert b"\nbouncefrom: (Default.) Bounce user name is MAILER-DAEMON.\n" in out
    assert b"\ndoublebounceto: (Default.) 2B recipient user: postmaster.\n" in out


def test_values_lists_and_unknown_files(tree):
    control = empty_control(tree)
    files = {
        "databytes": b"12abc\n",              # leading digits count, as scan_ulong
        "timeoutsmtpd": b"soon\n",            # unparsable: the default
        "queuelifetime": b"4294967296\n",     # wraps to 0 in qmail's int
        "concurrencyremote": b"3000000000\n", # negative as an int: clamped to 0
        "bouncefrom": b"bounce\x01r\n",       # unprintable shown as ?
        "locals": b"# comment\n\nA.example  \nb.example\n",
        "rcpthosts": b"",                     # present but empty: still "rcpthosts exists"
        "morercpthosts": b"m.example\n",
        "smtproutes": b":relay.example\n",
        "zeta": b"x", "alpha": b"y",
    }
    for name, data in files.items():
        (control / name).write_bytes(data)
    (control / "badmailfrom").mkdir()  # reading fails
    out = showctl(tree)[1]
    assert out.startswith(expected_header(tree) + b"\nbadmailfrom: Oops! Trouble reading this file.\n")
    for entry in (b"\ndatabytes: SMTP DATA limit is 12 bytes.\n",
                  b"\ntimeoutsmtpd: (Default.) SMTP server data timeout is 1200 seconds.\n",
                  b"\nqueuelifetime: Message lifetime in the queue is 0 seconds.\n",
                  b"\nconcurrencyremote: Remote concurrency is 0.\n",
                  b"\nbouncefrom: Bounce user name is bounce?r.\n",
                  b"\nlocals: \nMessages for A.example are delivered locally.\n"
                  b"Messages for b.example are delivered locally.\n",
                  b"\nrcpthosts: \n\nmorercpthosts: \nSMTP clients may send messages to recipients at m.example.\n"
                  b"\nmorercpthosts.cdb: Oops! morercpthosts exists but morercpthosts.cdb doesn't.\n",
                  b"\nsmtproutes: \nSMTP route: :relay.example\n"):
        assert entry in out
    assert out.endswith(b"\nvirtualdomains: (Default.) No virtual domains.\n"
                        b"\nalpha: I have no idea what this file does.\n"
                        b"\nzeta: I have no idea what this file does.\n")


def test_morercpthosts_cdb_states(tree):
    control = empty_control(tree)

    def cdb_line():
        out = showctl(tree)[1]
        return out.split(b"\nmorercpthosts.cdb: ", 1)[1].split(b"\n", 1)[0]

    (control / "morercpthosts.cdb").write_bytes(b"")
    assert cdb_line() == b"Oops! morercpthosts.cdb exists but morercpthosts doesn't."
    (control / "morercpthosts").write_bytes(b"a.example\n")
    os.utime(control / "morercpthosts", (2000, 2000))
    os.utime(control / "morercpthosts.cdb", (1000, 1000))
    assert cdb_line() == b"Oops! morercpthosts.cdb is older than morercpthosts."
    os.utime(control / "morercpthosts.cdb", (2000, 2000))
    assert cdb_line() == b"Modified recently enough; hopefully up to date."
    out = showctl(tree)[1]
    assert b"\nmorercpthosts: \nNo rcpthosts; doesn't matter that morercpthosts has a.example.\n" in out


def test_missing_home_and_control(world_tmp):
    code, out = showctl(world_tmp / "absent")
    assert code == 111 and out.endswith(b".\nOops! Unable to chdir to %s.\n" % str(world_tmp / "absent").encode())
    code, out = showctl(world_tmp)
    assert code == 111 and out.endswith(b".\nOops! Unable to chdir to control.\n")


# --- property tests of the pure control-file readers ---------------------------------------------

# without NULs: a NUL inside a line separates entries, which may then be empty or start with `#`, as in qmail's
# control_readfile (tests/test_hardening_send_control.py)
@given(st.binary(max_size=40).filter(lambda b: b"\0" not in b))
def test_lines_never_blank_or_comments(data):
    for line in ctlreport.lines(data):
        assert line and not line.startswith(b"#") and b"\n" not in line and not line.endswith((b" ", b"\t"))


@given(st.integers(0, 2 ** 40), st.binary(max_size=5).filter(lambda b: not b[:1].isdigit()))
def test_scan_uint(value, rest):
    low = value & 0xFFFFFFFF
    assert ctlreport.scan_uint(b"%d" % value + rest) == (0 if low >= 2 ** 31 else low)
    assert ctlreport.scan_uint(rest) is None


@given(st.binary(max_size=30))
def test_str_entry_is_one_safe_line(data):
    out = ctlreport.str_entry("x", data, "d", "P ")
    assert out.startswith(b"\nx: P ") and out.endswith(b".\n")
    assert all(32 <= c <= 126 for c in out[1:-1])
