"""qmail-getpw against the real passwd database; qmail-pw2u on synthetic passwd files, piped into qmail-newu."""

import os
import pwd
import subprocess
import uuid

import pytest

from conftest import program, qenv
from pyqmail.lib.config import users

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create accounts")


def getpw(local, home="/nonexistent"):
    """Run the real qmail-getpw; return (exit code, NUL-separated fields)."""
    argv = [program("qmail-getpw")] + ([local] if local is not None else [])
    p = subprocess.run(argv, env=qenv(home), capture_output=True)
    return p.returncode, p.stdout


@pytest.fixture
def alias_account(world_tmp):
    """qmail's alias account (created as qmail-setup would, when missing)."""
    from pyqmail.lib.config import tree
    if os.geteuid() != 0:
        try:
            return pwd.getpwnam("alias")
        except KeyError:
            pytest.skip("no alias account and not root")
    tree.ensure_account("alias", "nofiles", world_tmp / "alias")
    return pwd.getpwnam("alias")


@pytest.fixture
def mail_user(world_tmp):
    """A fresh account whose home directory it owns; removed afterwards."""
    name = "pq" + uuid.uuid4().hex[:8]
    home = world_tmp / name
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/false", name], check=True)
    try:
        pw = pwd.getpwnam(name)
        home.mkdir()
        os.chown(home, pw.pw_uid, pw.pw_gid)
        yield pw
    finally:
        subprocess.run(["userdel", name], check=False)


def fields(pw, dash, ext):
    """Return qmail-getpw's expected output for an account."""
    return b"%s\0%d\0%d\0%s\0%s\0%s\0" % (pw.pw_name.encode(), pw.pw_uid, pw.pw_gid, pw.pw_dir.encode(), dash, ext)


def test_getpw_without_argument_exits_100():
    assert getpw(None) == (100, b"")


@root_only
def test_root_goes_to_alias(alias_account):
    assert getpw("root") == (0, fields(alias_account, b"-", b"root"))
    assert getpw("Root-Foo") == (0, fields(alias_account, b"-", b"Root-Foo"))
    assert getpw("no-such-user-here") == (0, fields(alias_account, b"-", b"no-such-user-here"))


@root_only
def test_user_with_own_home_is_found(mail_user, alias_account):
    name = mail_user.pw_name
    assert getpw(name) == (0, fields(mail_user, b"", b""))
    assert getpw(name.upper()) == (0, fields(mail_user, b"", b""))
    assert getpw(name + "-Lists-x") == (0, fields(mail_user, b"-", b"Lists-x"))
    assert getpw(name + "x") == (0, fields(alias_account, b"-", (name + "x").encode()))


@root_only
def test_user_whose_home_is_not_his_goes_to_alias(mail_user, alias_account):
    os.chown(mail_user.pw_dir, 0, 0)
    assert getpw(mail_user.pw_name) == (0, fields(alias_account, b"-", mail_user.pw_name.encode()))
    os.rmdir(mail_user.pw_dir)
    assert getpw(mail_user.pw_name) == (0, fields(alias_account, b"-", mail_user.pw_name.encode()))


# --- qmail-pw2u -----------------------------------------------------------------------------------

def pw2u(home, passwd, *options):
    """Run the real qmail-pw2u on passwd bytes."""
    return subprocess.run([program("qmail-pw2u"), *options], input=passwd, env=qenv(home), capture_output=True)


@pytest.fixture
def pwhome(world_tmp):
    """A QMAILHOME with users/, and homes owned by uids 1001 (joe) and 7790 (alias)."""
    (world_tmp / "users").mkdir()
    for name, uid in (("joe", 1001), ("alias", 7790)):
        (world_tmp / name).mkdir()
        if os.geteuid() == 0:
            os.chown(world_tmp / name, uid, 100)
    return world_tmp


def passwd_for(home):
    """A V7 passwd file: root, the alias user, joe, an uppercase name, a missing home, a short line."""
    return (b"root:x:0:0:root:/root:/bin/sh\n"
            b"alias:x:7790:2108::%s/alias:/bin/false\n"
            b"joe:x:1001:100:Joe:%s/joe:/bin/sh\n"
            b"Bob:x:1001:100::%s/joe:/bin/sh\n"
            b"gone:x:1003:1::%s/gone:/bin/sh\n"
            b"short:x:5:5::/x" % ((os.fsencode(str(home)),) * 4))


@root_only
def test_pw2u_default_output(pwhome):
    h = os.fsencode(str(pwhome))
    p = pw2u(pwhome, passwd_for(pwhome))
    assert (p.returncode, p.stderr) == (0, b"")
    assert p.stdout == (b"+:alias:7790:2108:%s/alias:-::\n"
                        b"=alias:alias:7790:2108:%s/alias:::\n"
                        b"+alias-:alias:7790:2108:%s/alias:-::\n"
                        b"=joe:joe:1001:100:%s/joe:::\n"
                        b"+joe-:joe:1001:100:%s/joe:-::\n"
                        b".\n" % ((h,) * 5))


@root_only
def test_pw2u_options_last_wins(pwhome):
    h = os.fsencode(str(pwhome))
    p = pw2u(pwhome, passwd_for(pwhome), "-/", "-u", "-o", "-H", "-C", "-c+")
    assert p.returncode == 0
    assert p.stdout == (b"+:alias:7790:2108:%s/alias:-/::\n"
                        b"=alias:alias:7790:2108:%s/alias:::\n"
                        b"+alias+:alias:7790:2108:%s/alias:-/::\n"
                        b"=joe:joe:1001:100:%s/joe:::\n"
                        b"+joe+:joe:1001:100:%s/joe:-/::\n"
                        b"=Bob:Bob:1001:100:%s/joe:::\n"
                        b"+Bob+:Bob:1001:100:%s/joe:-/::\n"
                        b"=gone:gone:1003:1:%s/gone:::\n"
                        b"+gone+:gone:1003:1:%s/gone:-/::\n"
                        b".\n" % ((h,) * 9))


def test_pw2u_missing_home_is_fatal_with_h(pwhome):
    p = pw2u(pwhome, passwd_for(pwhome), "-h")
    assert p.returncode == 111
    assert p.stderr == b"qmail-pw2u: fatal: unable to stat %s/gone\n" % os.fsencode(str(pwhome))


def test_pw2u_needs_alias_and_known_options(pwhome):
    p = pw2u(pwhome, b"joe:x:1001:100::/:/bin/sh\n", "-H")
    assert (p.returncode, p.stdout, p.stderr) == (111, b"", b"qmail-pw2u: fatal: unable to find alias user\n")
    assert pw2u(pwhome, b"", "-x").returncode == 100


def test_pw2u_users_files(pwhome):
    u = pwhome / "users"
    (u / "include").write_bytes(b"# comment\nalias\nJOE\n")
    (u / "exclude").write_bytes(b"bob\n")
    (u / "mailnames").write_bytes(b"joe:old\njoe:Joe.Smith::js\n")  # the last line for a user wins
    (u / "subusers").write_bytes(b"joe-list:joe:list:\nshort:joe\n")
    (u / "append").write_bytes(b"=x:y:1:1:/:::\n")
    passwd = b"alias:x:7790:2108::/a:/bin/false\njoe:x:1001:100::/j:/bin/sh\nbob:x:1002:1::/b:/bin/sh\n"
    p = pw2u(pwhome, passwd, "-H")
    assert (p.returncode, p.stderr) == (0, b"")
    assert p.stdout == (b"+:alias:7790:2108:/a:-::\n"
                        b"=alias:alias:7790:2108:/a:::\n"
                        b"+alias-:alias:7790:2108:/a:-::\n"
                        b"=Joe.Smith:joe:1001:100:/j:::\n"
                        b"+Joe.Smith-:joe:1001:100:/j:-::\n"
                        b"=js:joe:1001:100:/j:::\n"
                        b"+js-:joe:1001:100:/j:-::\n"
                        b"=joe-list:joe:1001:100:/j:-:list:\n"
                        b"+joe-list-:joe:1001:100:/j:-:list-:\n"
                        b"=x:y:1:1:/:::\n"
                        b".\n")
    (u / "subusers").write_bytes(b"sub:nobody:pre:\n")
    p = pw2u(pwhome, passwd, "-H")
    assert (p.returncode, p.stderr) == (111, b"qmail-pw2u: fatal: unable to find nobody user for subuser\n")


def test_pw2u_into_newu_into_lookup(pwhome):
    passwd = b"alias:x:7790:2108::/a:/bin/false\njoe:x:1001:100::/j:/bin/sh\n"
    p = pw2u(pwhome, passwd, "-H")
    (pwhome / "users" / "assign").write_bytes(p.stdout)
    assert subprocess.run([program("qmail-newu")], env=qenv(pwhome)).returncode == 0
    A = users.Assignment
    assert users.lookup(str(pwhome), b"Joe-x") == A(b"joe", 1001, 100, b"/j", b"-", b"x")
    assert users.lookup(str(pwhome), b"joe") == A(b"joe", 1001, 100, b"/j", b"", b"")
    assert users.lookup(str(pwhome), b"fred") == A(b"alias", 7790, 2108, b"/a", b"-", b"fred")


# --- property test of the passwd-line conversion, through qmail-users(5) and the lookup -----------

from hypothesis import given, strategies as st  # noqa: E402

from pyqmail.commands import qmail_pw2u  # noqa: E402

login = st.text("abcdefgh.", min_size=1, max_size=6).map(str.encode)
path = st.text("abc/", min_size=1, max_size=6).map(lambda s: b"/" + s.encode())


@given(login, st.integers(1, 60000), st.integers(0, 60000), path, st.text("abc-", max_size=5).map(str.encode))
def test_account_line_round_trips_to_lookup(user, uid, gid, home, ext):
    settings_ = qmail_pw2u.Settings(["-H"])
    line = b"%s:x:%d:%d:gecos:%s:/bin/sh" % (user, uid, gid, home)
    out = qmail_pw2u.account_lines(line, settings_, None, None, {}, {})
    assert out == [b"=%s:%s:%d:%d:%s:::\n" % (user, user, uid, gid, home),
                   b"+%s-:%s:%d:%d:%s:-::\n" % (user, user, uid, gid, home)]
    table = {}
    for key, value in users.cdb_records(users.parse_assign(b"".join(out) + b".\n")):
        table.setdefault(key, value)
    assert users.search(table.get, user.upper()) == users.Assignment(user, uid, gid, home, b"", b"")
    assert users.search(table.get, user + b"-" + ext) == users.Assignment(user, uid, gid, home, b"-", ext)


@given(st.binary(max_size=40))
def test_any_passwd_line_gives_parseable_assignments(line):
    out = qmail_pw2u.account_lines(line.replace(b"\n", b""), qmail_pw2u.Settings(["-H", "-u"]), None, None, {}, {})
    assert len(users.parse_assign(b"".join(out) + b".\n")) == len(out)  # AssignError would fail the test
