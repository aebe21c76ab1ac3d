"""The administrator's tools under a tired administrator and a hostile local user: qmail-setup re-run over a
tree whose user-writable parts hold planted symlinks, the cdb builders (qmail-newu, qmail-newmrh,
qmail-newqmqpclients) with planted .tmp files, and users/assign as administrators write it."""

import os
import stat
import subprocess

import pytest
from hypothesis import given, strategies as st

from conftest import make_tree, program, qenv
from pyqmail.lib.config import users as assign

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a link owned by another user")


def setup(tree):
    """Run the real qmail-setup again over tree (single-user); return the completed process."""
    return subprocess.run([program("qmail-setup"), "--single-user", "--me", "test.example", str(tree)],
                          capture_output=True)


def victim(world_tmp, data=b"precious\n", mode=0o600):
    """A file outside the tree that no step of ours may write, chmod or chown."""
    path = world_tmp / "victim"
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def untouched(path, data=b"precious\n", mode=0o600):
    """Assert the victim still holds data with mode."""
    st = os.stat(path)
    assert path.read_bytes() == data and stat.S_IMODE(st.st_mode) == mode and st.st_nlink == 1


# --- qmail-setup re-run: the alias account owns alias/, qmailq owns queue/ ------------------------------

def test_setup_never_writes_through_a_planted_tmp_symlink(tree, world_tmp):
    # the alias account (whose .qmail programs run as alias) removes .qmail-root and plants .qmail-root.tmp
    v = victim(world_tmp)
    (tree / "alias" / ".qmail-root").unlink()
    (tree / "alias" / ".qmail-root.tmp").symlink_to(v)
    p = setup(tree)
    assert p.returncode == 0, p.stderr
    untouched(v)
    made = tree / "alias" / ".qmail-root"
    assert not made.is_symlink() and made.read_bytes() == b"" and stat.S_IMODE(made.stat().st_mode) == 0o644


def test_setup_never_writes_through_a_planted_tmp_hard_link(tree, world_tmp):
    v = victim(world_tmp, mode=0o640)  # sendmutex is made 0600
    (tree / "queue" / "lock" / "sendmutex").unlink()
    os.link(v, tree / "queue" / "lock" / "sendmutex.tmp")
    assert setup(tree).returncode == 0
    assert v.read_bytes() == b"precious\n" and stat.S_IMODE(v.stat().st_mode) == 0o640
    assert (tree / "queue" / "lock" / "sendmutex").read_bytes() == b""


def test_setup_refuses_a_trigger_replaced_by_a_symlink(tree, world_tmp):
    v = victim(world_tmp)
    trigger = tree / "queue" / "lock" / "trigger"
    trigger.unlink()
    trigger.symlink_to(v)
    p = setup(tree)
    assert p.returncode == 111 and b"lock/trigger" in p.stderr and b"not a named pipe" in p.stderr, p.stderr
    assert b"Traceback" not in p.stderr and b"internal error" not in p.stderr
    untouched(v)  # qmail's install would make it 0622: world-writable
    trigger.unlink()
    assert setup(tree).returncode == 0 and stat.S_ISFIFO(os.lstat(trigger).st_mode)


@ROOT_ONLY
def test_setup_refuses_a_directory_replaced_by_another_users_symlink(tree, world_tmp):
    elsewhere = world_tmp / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    os.chmod(elsewhere, 0o755)
    tmp = tree / "alias" / "Maildir" / "tmp"
    tmp.rmdir()
    tmp.symlink_to(elsewhere)
    os.lchown(tmp, 65534, 65534)  # planted by another account (alias, in a qmail tree)
    p = setup(tree)
    assert p.returncode == 111 and b"alias/Maildir/tmp" in p.stderr and b"symbolic link" in p.stderr, p.stderr
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755 and elsewhere.stat().st_uid == 0


def test_setup_follows_the_administrators_own_queue_symlink(world_tmp):
    # a queue on another disk, linked by the administrator: kept, given qmail's modes, still a link after a re-run
    disk = world_tmp / "disk" / "queue"
    disk.mkdir(parents=True)
    os.chmod(disk, 0o777)
    root = world_tmp / "qmail"
    root.mkdir()
    (root / "queue").symlink_to(disk)
    for _ in range(2):
        make_tree(root, "--single-user", "--me", "test.example")
        assert (root / "queue").is_symlink() and os.lstat(root / "queue").st_uid == os.geteuid()
        assert stat.S_IMODE(disk.stat().st_mode) == 0o750 and (disk / "mess" / "22").is_dir()


def test_setup_reports_a_file_where_a_directory_belongs(tree):
    (tree / "queue" / "bounce").rmdir()
    (tree / "queue" / "bounce").write_bytes(b"")
    p = setup(tree)
    assert p.returncode == 111 and b"queue/bounce" in p.stderr and b"internal error" not in p.stderr, p.stderr


# --- the cdb builders: a planted .tmp never makes them write elsewhere ----------------------------------

BUILDERS = [  # program, source file, its content, the planted temporary, the table
    ("qmail-newu", "users/assign", b"=joe:joe:1000:1000:/home/joe:::\n.\n", "users/cdb.tmp", "users/cdb"),
    ("qmail-newmrh", "control/morercpthosts", b"example.com\n", "control/morercpthosts.tmp",
     "control/morercpthosts.cdb"),
    ("qmail-newqmqpclients", "control/qmqpclients", b"127.0.0.1\n", "control/qmqpclients.tmp",
     "control/qmqpclients.cdb"),
]


@pytest.mark.parametrize("plant", ["symlink", "hardlink", "dangling"])
@pytest.mark.parametrize("name,source,content,temp,table", BUILDERS)
def test_cdb_builders_never_write_through_a_planted_tmp(tree, world_tmp, plant, name, source, content, temp, table):
    import cdbx
    (tree / source).write_bytes(content)
    v = victim(world_tmp, mode=0o644)
    if plant == "symlink":
        (tree / temp).symlink_to(v)
    elif plant == "hardlink":
        os.link(v, tree / temp)
    else:
        (tree / temp).symlink_to(world_tmp / "absent")
    p = subprocess.run([program(name)], env=qenv(tree), capture_output=True)
    assert p.returncode == 0, p.stderr
    assert v.read_bytes() == b"precious\n" and stat.S_IMODE(v.stat().st_mode) == 0o644
    assert not (world_tmp / "absent").exists()
    made = tree / table
    assert not made.is_symlink() and os.stat(made).st_nlink == 1 and not (tree / temp).exists()
    assert len(list(cdbx.CDB(str(made)).keys())) >= 1


# --- control files saved with CRLF: morercpthosts as rcpthosts --------------------------------------

def test_newmrh_strips_a_crlf_files_cr_as_rcpthosts_does(tree):
    import cdbx
    (tree / "control" / "morercpthosts").write_bytes(b"Example.COM\r\n.sub.example.org \r\n#c\r\n\r\n")
    p = subprocess.run([program("qmail-newmrh")], env=qenv(tree), capture_output=True)
    assert p.returncode == 0, p.stderr
    keys = list(cdbx.CDB(str(tree / "control" / "morercpthosts.cdb")).keys())
    assert keys == [b"example.com", b".sub.example.org"]


# --- users/assign as administrators write it ---------------------------------------------------------

def newu(tree, assign):
    """Write users/assign and run the real qmail-newu."""
    (tree / "users" / "assign").write_bytes(assign)
    return subprocess.run([program("qmail-newu")], env=qenv(tree), capture_output=True)


@pytest.mark.parametrize("line,why", [
    (b"=joe:joe:abc:100:/home/joe:::", b"uid"),
    (b"=joe:joe:-5:100:/home/joe:::", b"uid"),
    (b"=joe:joe::100:/home/joe:::", b"uid"),
    (b"=joe:joe:4294967296:100:/home/joe:::", b"uid"),  # cut to 32 bits by setuid: root
    (b"=joe:joe:1000:x:/home/joe:::", b"gid"),
    (b"=joe:joe:1000:4294967296:/home/joe:::", b"gid"),
    (b"+joe-:joe:1000:100:home/joe:-::", b"home"),
    (b"=joe:joe:1000:100::::", b"home"),
])
def test_newu_refuses_assignments_no_delivery_could_use(tree, line, why):
    assert newu(tree, b"=old:old:1:1:/o:::\n.\n").returncode == 0
    before = (tree / "users" / "cdb").read_bytes()
    p = newu(tree, b"=ok:ok:1:1:/ok:::\r\n" + line + b"\n.\n")
    assert p.returncode == 111, p.stderr
    assert p.stderr.startswith(b"qmail-newu: fatal: bad format in users/assign: line 2: ") and why in p.stderr
    assert p.stderr.count(b"\n") == 1
    assert (tree / "users" / "cdb").read_bytes() == before and not (tree / "users" / "cdb.tmp").exists()


def test_newu_takes_what_qmail_takes(tree):
    import cdbx
    assign = (b"=joe:joe:1000:100:/home/joe:::\r\n"  # CRLF: the CR is after the sixth colon, ignored
              b"=max:max:4294967294:0:/home/max:::\n"
              b"=rootly:root:0:0:/root:::\n"  # written as 0: qmail-lspawn refuses it (test_e2e_delivery)
              b"+:alias:7790:2108:/var/qmail/alias:-::\n"
              b".\r\n"
              b"=after:the:dot:line:is:ignored\n")
    assert newu(tree, assign).returncode == 0
    db = cdbx.CDB(str(tree / "users" / "cdb"))
    assert db.get(b"!joe\0") == b"joe\x001000\x00100\x00/home/joe\0\0"
    assert db.get(b"!max\0") == b"max\x004294967294\x000\x00/home/max\0\0"


def test_newu_100000_lines_and_a_1mb_line(tree):
    lines = b"".join(b"=u%d:u%d:%d:100:/home/u%d:::\n" % (i, i, 1000 + i, i) for i in range(100000))
    assert newu(tree, lines + b".\n").returncode == 0
    from pyqmail.lib.config import users
    assert users.lookup(str(tree), b"u99999") == users.Assignment(b"u99999", 100999, 100, b"/home/u99999", b"", b"")
    p = newu(tree, b"=big:big:1000:100:/" + b"h" * (1 << 20) + b":::\n.\n")
    assert p.returncode == 0
    assert users.lookup(str(tree), b"big").homedir == b"/" + b"h" * (1 << 20)


def test_newu_write_error_keeps_the_old_table(tree):
    import resource
    assert newu(tree, b"=old:old:1:1:/o:::\n.\n").returncode == 0
    before = (tree / "users" / "cdb").read_bytes()
    (tree / "users" / "assign").write_bytes(b"".join(b"=u%d:u:1:1:/h:::\n" % i for i in range(5000)) + b".\n")

    def small_files():
        """A file size limit: writing users/cdb.tmp fails as on a full disk."""
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    p = subprocess.run([program("qmail-newu")], env=qenv(tree), capture_output=True, preexec_fn=small_files)
    assert (p.returncode, p.stderr) == (111, b"qmail-newu: fatal: unable to write users/cdb.tmp\n")
    assert (tree / "users" / "cdb").read_bytes() == before


# --- qmail-pw2u's users/ files as administrators write them --------------------------------------------

def test_pw2u_append_without_final_newline_still_ends_with_a_dot_line(tree, world_tmp):
    home = world_tmp / "alias-home"
    home.mkdir()
    (tree / "users" / "append").write_bytes(b"=extra:alias:7790:2108:/x:::")  # an editor that adds no newline
    passwd = b"alias:x:7790:2108::%s:/bin/false\n" % os.fsencode(home)
    p = subprocess.run([program("qmail-pw2u"), "-H"], input=passwd, env=qenv(tree), capture_output=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith(b"=extra:alias:7790:2108:/x:::\n.\n")
    (tree / "users" / "assign").write_bytes(p.stdout)
    assert subprocess.run([program("qmail-newu")], env=qenv(tree), capture_output=True).returncode == 0


# --- qmail-showctl on control files that are no files ------------------------------------------------

def test_showctl_reports_a_named_pipe_or_a_device_and_finishes(tree):
    control = tree / "control"
    os.mkfifo(control / "smtpgreeting")  # no writer: reading would wait forever
    (control / "helohost").symlink_to("/dev/zero")  # endless
    p = subprocess.run([program("qmail-showctl")], env=qenv(tree), capture_output=True, timeout=20)
    assert p.returncode == 0 and p.stderr == b""
    assert b"\nsmtpgreeting: Oops! Trouble reading this file.\n" in p.stdout
    assert b"\nhelohost: Oops! Trouble reading this file.\n" in p.stdout


def test_setup_gives_the_queue_lock_files_their_modes_back(tree):
    lock = tree / "queue" / "lock"
    (lock / "tcpto").write_bytes(b"\1" * 1024)
    for name in ("sendmutex", "tcpto", "trigger"):
        os.chmod(lock / name, 0o400)  # say a restore, or a `chmod -R` too many
    assert setup(tree).returncode == 0
    modes = {name: stat.S_IMODE(os.lstat(lock / name).st_mode) for name in ("sendmutex", "tcpto", "trigger")}
    assert modes == {"sendmutex": 0o600, "tcpto": 0o644, "trigger": 0o622}
    assert (lock / "tcpto").read_bytes() == b"\1" * 1024  # its contents are qmail-remote's memory: kept


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_setup_reset_never_follows_a_planted_lock_file_link(tree, world_tmp, how):
    v = victim(world_tmp, mode=0o640)  # the reset would make it 0600
    mutex = tree / "queue" / "lock" / "sendmutex"
    mutex.unlink()
    mutex.symlink_to(v) if how == "symlink" else os.link(v, mutex)
    p = setup(tree)
    assert p.returncode == 111 and b"lock/sendmutex" in p.stderr, p.stderr
    assert v.read_bytes() == b"precious\n" and stat.S_IMODE(v.stat().st_mode) == 0o640


@ROOT_ONLY
def test_setup_as_a_plain_user_over_roots_tree_says_why(tree):
    os.chmod(tree.parent, 0o755)
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", program("qmail-setup"),
                        "--me", "test.example", str(tree)], capture_output=True)
    assert p.returncode == 111 and b"internal error" not in p.stderr, p.stderr
    assert p.stderr == b"qmail-setup: fatal: %s cannot be given owner 65534:65534 and mode 0755: Operation not " \
                       b"permitted\n" % bytes(tree)


# --- qmail-setup --services on a tree whose control/me is missing or odd --------------------------------

@pytest.mark.parametrize("me,code,said", [
    (None, 111, b"unable to read "),
    (b"h\xffx\n", 100, b"cannot write 'h\\udcffx' into a service definition"),
    (b"mail.example\r\n", 0, b""),
])
def test_setup_services_with_an_odd_control_me(tree, world_tmp, me, code, said):
    if me is None:
        (tree / "control" / "me").unlink()
    else:
        (tree / "control" / "me").write_bytes(me)
    p = subprocess.run([program("qmail-setup"), "--services=runit", "--destdir", str(world_tmp / "dest"), str(tree)],
                       capture_output=True)
    assert p.returncode == code and said in p.stderr and b"internal error" not in p.stderr, p.stderr
    if code == 0:
        assert b"-l mail.example " in (world_tmp / "dest" / "etc" / "sv" / "qmail-smtpd" / "run").read_bytes()


@ROOT_ONLY
def test_newu_on_a_full_then_read_only_users_directory_keeps_the_old_table(tree):
    users_dir = tree / "users"
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(users_dir)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        assert newu(tree, b"=old:old:1:1:/o:::\n.\n").returncode == 0
        before = (users_dir / "cdb").read_bytes()
        big = b"".join(b"=user%04d:u:1000:100:/home/u:::\n" % i for i in range(1000)) + b".\n"  # 33 KB
        p = newu(tree, big)  # its cdb (about 60 KB) does not fit in what is left
        assert (p.returncode, p.stderr) == (111, b"qmail-newu: fatal: unable to write users/cdb.tmp\n")
        assert (users_dir / "cdb").read_bytes() == before
        (users_dir / "cdb.tmp").unlink()
        (users_dir / "assign").write_bytes(b"=new:new:1:1:/n:::\n.\n")
        subprocess.run(["mount", "-o", "remount,ro", str(users_dir)], check=True)
        p = subprocess.run([program("qmail-newu")], env=qenv(tree), capture_output=True)
        assert (p.returncode, p.stderr) == (111, b"qmail-newu: fatal: unable to open users/cdb.tmp\n")
        assert (users_dir / "cdb").read_bytes() == before
    finally:
        subprocess.run(["umount", str(users_dir)], check=True)


# --- qmail-setup over a tree qmail installed: qmail's programs are kept, not deleted ---------------------

def test_setup_over_qmails_tree_keeps_its_programs(world_tmp):
    root = world_tmp / "qmail"
    (root / "bin").mkdir(parents=True)
    elf = b"\x7fELF qmail-send as qmail's make setup built it"
    (root / "bin" / "qmail-send").write_bytes(elf)
    (root / "bin" / "qmail-queue").write_bytes(elf + b" (setuid qmailq)")
    p = setup(root)
    assert p.returncode == 0, p.stderr
    assert (root / "bin" / "qmail-send.before-pyqmail").read_bytes() == elf
    assert (root / "bin" / "qmail-queue.before-pyqmail").read_bytes() == elf + b" (setuid qmailq)"
    assert os.path.samefile(root / "bin" / "qmail-send", program("qmail-send"))
    assert b"pyqmail" in (root / "bin" / "qmail-queue").read_bytes()
    assert setup(root).returncode == 0  # pyqmail's own programs are never set aside
    assert sorted(p.name for p in (root / "bin").glob("*.before-pyqmail")) == [
        "qmail-queue.before-pyqmail", "qmail-send.before-pyqmail"]
    (root / "bin" / "qmail-send").unlink()
    (root / "bin" / "qmail-send").write_bytes(b"another one")
    p = setup(root)
    assert p.returncode == 100 and b"left %s alone" % bytes(root / "bin" / "qmail-send") in p.stderr
    assert (root / "bin" / "qmail-send").read_bytes() == b"another one"
    assert (root / "bin" / "qmail-send.before-pyqmail").read_bytes() == elf


# --- property: qmail-newu's check of an assignment never raises, and passes exactly the usable ones -------

number = st.one_of(st.integers(0, 2**40).map(lambda n: b"%d" % n), st.binary(max_size=12))
fieldbytes = st.binary(max_size=12).filter(lambda b: b":" not in b and b"\0" not in b and b"\n" not in b)


@given(number, number, st.one_of(fieldbytes, fieldbytes.map(lambda b: b"/" + b)))
def test_unusable_accepts_exactly_32_bit_ids_and_absolute_homes(uid, gid, home):
    entry = assign.Entry(False, b"joe", (b"joe", uid, gid, home, b"", b""))
    why = assign.unusable(entry)

    def good(n):
        """A decimal uid_t/gid_t other than (uid_t)-1."""
        return n.isdigit() and int(n) <= 0xFFFFFFFE
    assert (why is None) == (good(uid) and good(gid) and home[:1] == b"/")
    assert why is None or why.isprintable()


def test_unusable_reads_leading_zeros_as_scan_ulong_does():
    entry = assign.Entry(False, b"joe", (b"joe", b"0" * 5000 + b"1000", b"0100", b"/h", b"", b""))
    assert assign.unusable(entry) is None
    assert "uid" in assign.unusable(entry._replace(fields=(b"joe", b"0" * 20 + b"4294967295", b"1", b"/h", b"", b"")))


# --- control/defaultdelivery saved with CRLF: rc (and the run scripts) pass its CR to qmail-start -----------

def test_a_crlf_defaultdelivery_still_delivers_into_the_maildir(procs, world_tmp):
    import time
    from conftest import queue_message
    from mailsystem import ROOT as AS_ROOT, assign_users, children, make_home
    tree = make_tree(world_tmp / "qmail", *([] if AS_ROOT else ["--single-user"]), "--me", "test.example")
    home = make_home(world_tmp)
    assign_users(tree, [("=", "joe", home, "", "")])
    (tree / "control" / "defaultdelivery").write_bytes(b"./Maildir/\r\n")  # saved by a Windows editor
    out = tree / "rc.out"
    with open(out, "wb") as f:
        p = procs.start([str(tree / "rc"), "cat"], stdout=f, stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    assert queue_message(tree, b"Subject: crlf\n\nhello\n", b"Fsender@example.org\0Tjoe@test.example\0\0") == 0
    deadline = time.time() + 30
    while b"end msg" not in out.read_bytes() and time.time() < deadline:
        time.sleep(0.05)
    assert b"delivery 1: success: did_1+0+0/" in out.read_bytes(), out.read_bytes()
    assert len(list((home / "Maildir" / "new").iterdir())) == 1  # not an mbox named CR inside the Maildir
    assert not (home / "Maildir" / "\r").exists()
    lspawn = [pid for pid in children(p.pid) if open("/proc/%d/comm" % pid).read().strip() == "qmail-lspawn"]
    assert open("/proc/%d/cmdline" % lspawn[0], "rb").read().endswith(b"qmail-lspawn\0./Maildir/\0")


@ROOT_ONLY
def test_setup_gives_a_damaged_qmail_queue_its_owners_and_modes_back(world_tmp):
    import pwd
    root = make_tree(world_tmp / "qmail", "--me", "test.example")  # qmail's accounts
    q = root / "queue"
    for path in (q / "info" / "5", q / "mess" / "3", q / "lock" / "sendmutex", q / "todo"):
        os.chown(path, 0, 0)  # say a restore by a tool that kept no owners, and a chmod -R
        os.chmod(path, 0o777)
    make_tree(root, "--me", "test.example")

    def owner_mode(path):
        st = os.lstat(path)
        return pwd.getpwuid(st.st_uid).pw_name, stat.S_IMODE(st.st_mode)
    assert owner_mode(q / "info" / "5") == ("qmails", 0o700)
    assert owner_mode(q / "mess" / "3") == ("qmailq", 0o750)
    assert owner_mode(q / "todo") == ("qmailq", 0o750)
    assert owner_mode(q / "lock" / "sendmutex") == ("qmails", 0o600)


# --- two builders at once: the one whose .tmp was replaced never renames the other's half-written file -----

def test_a_builder_whose_tmp_was_replaced_meanwhile_leaves_the_table_alone(world_tmp):
    from pyqmail.lib.config import cdbmake
    from pyqmail.lib.util.exits import Exit
    temp, target = str(world_tmp / "cdb.tmp"), str(world_tmp / "cdb")
    with open(target, "wb") as f:
        f.write(b"the old table")

    def records():
        """Our records; midway a second run removes our cdb.tmp and starts writing its own."""
        yield b"a", b"1"
        os.unlink(temp)
        with open(temp, "wb") as f:
            f.write(b"the other run's first bytes")
        yield b"b", b"2"
    with pytest.raises(Exit) as e:
        cdbmake.replace(temp, target, records(), "unable to open cdb.tmp", "unable to write cdb.tmp")
    assert e.value.code == 111 and e.value.message == "fatal: unable to move %s to %s" % (temp, target)
    assert open(target, "rb").read() == b"the old table"
    assert open(temp, "rb").read() == b"the other run's first bytes"  # left for the other run to finish


def test_pw2u_skips_accounts_qmail_newu_would_refuse(tree):
    passwd = (b"alias:x:7790:2108::/var/qmail/alias:/bin/false\n"
              b"joe:x:1000:100:Joe:/home/joe:/bin/sh\n"
              b"nohome:x:1001:100:::/bin/sh\n"               # an empty home
              b"rel:x:1002:100::home/rel:/bin/sh\n"          # a relative one
              b"big:x:4294967296:100::/home/big:/bin/sh\n"   # cut to root by a C setuid
              b"badgid:x:1003:x::/home/badgid:/bin/sh\n")
    p = subprocess.run([program("qmail-pw2u"), "-H"], input=passwd, env=qenv(tree), capture_output=True)
    assert p.returncode == 0, p.stderr
    locals_ = [line.split(b":")[0] for line in p.stdout.split(b"\n")]
    assert locals_ == [b"+", b"=alias", b"+alias-", b"=joe", b"+joe-", b"."] + [b""]
    (tree / "users" / "assign").write_bytes(p.stdout)
    assert subprocess.run([program("qmail-newu")], env=qenv(tree), capture_output=True).returncode == 0


def test_setup_mini_says_when_it_keeps_other_hubs(world_tmp):
    root = world_tmp / "mini"
    args = [program("qmail-setup"), "--single-user", "--me", "leaf.example", "--mini"]
    assert subprocess.run(args + ["127.0.0.1:6001", str(root)], capture_output=True).stderr == b""
    assert subprocess.run(args + ["127.0.0.1:6001", str(root)], capture_output=True).stderr == b""
    p = subprocess.run(args + ["127.0.0.1:6002", str(root)], capture_output=True)  # say scripts/run on another port
    assert p.returncode == 0 and p.stderr == b"qmail-setup: kept %s: it exists and lists other hubs than " \
                                             b"--mini's (not overwritten)\n" % bytes(root / "control" / "qmqpservers")
    assert (root / "control" / "qmqpservers").read_text() == "127.0.0.1:6001\n"
