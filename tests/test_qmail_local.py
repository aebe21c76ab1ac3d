"""qmail-local run as a real process on a temporary home: every .qmail line type, reports and exit codes."""

import mailbox
import os
import pwd
import re
import subprocess

import pytest

from conftest import need, program, qenv, queued

ROOT = os.getuid() == 0
MSG = b"Subject: test\nMessage-ID: <1@x>\n\nFrom the start\n>From quoted\n>>From twice\nFromage\nlast line"
DT = b"Delivered-To: joe@test.example\n"
RP = b"Return-Path: <s@example.org>\n"
FROM_RE = rb"From s@example\.org (Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d \d{4}\n"


def ids():
    """Return the (uid, gid) deliveries run as: ours, or nobody's when the tests run as root."""
    if not ROOT:
        return os.getuid(), os.getgid()
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


def own(path):
    """Give path to the delivery user."""
    os.chown(path, *ids())


@pytest.fixture
def home(world_tmp):
    """A home directory (0755) owned by the delivery user."""
    h = world_tmp / "home"
    h.mkdir(mode=0o755)
    os.chmod(h, 0o755)
    own(h)
    return h


@pytest.fixture
def dtree(tree):
    """The qmail tree, owned by the delivery user so that forwards reach its queue directly."""
    if ROOT:
        for dirpath, dirnames, filenames in os.walk(tree):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), *ids())
        os.lchown(tree, *ids())
    return tree


def dotqmail(home, name, text, mode=0o644):
    """Write a .qmail file owned by the delivery user."""
    path = home / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    own(path)
    os.chmod(path, mode)
    return path


def make_maildir(path):
    """Create a maildir owned by the delivery user."""
    for sub in ("", "tmp", "new", "cur"):
        (path / sub).mkdir(mode=0o700, exist_ok=True)
        own(path / sub)
    return path


def local(home, tmp_path, ext="", dash=None, sender="s@example.org", dd="./Mailbox", msg=MSG,
          opts=(), tree=None, as_user=True, localpart=None, extra_env=None):
    """Run qmail-local for joe[-ext]@test.example; return the CompletedProcess."""
    dash = ("-" if ext else "") if dash is None else dash
    localpart = localpart or ("joe" + dash + ext)
    f = tmp_path / "message"
    f.write_bytes(msg)
    kw = {}
    if ROOT and as_user:
        kw = dict(user=ids()[0], group=ids()[1], extra_groups=[])
    env = qenv(tree, **(extra_env or {})) if tree else dict(os.environ)
    with open(f, "rb") as stdin:
        return subprocess.run(
            [program("qmail-local"), *opts, "--", "joe", str(home), localpart, dash, ext, "test.example",
             sender, dd], stdin=stdin, capture_output=True, env=env,
            timeout=60, **kw)


def test_maildir_delivery_read_back(home, tmp_path):
    md = make_maildir(home / "Maildir")
    dotqmail(home, ".qmail", "./Maildir/\n")
    r = local(home, tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"did 1+0+0\n", b"")
    names = os.listdir(md / "new")
    assert len(names) == 1 and os.listdir(md / "tmp") == []
    assert re.fullmatch(r"\d+\.M\d+P\d+R[0-9a-f]{8}\.[^/:]+", names[0])
    assert (md / "new" / names[0]).read_bytes() == RP + DT + MSG
    assert oct(os.stat(md / "new" / names[0]).st_mode & 0o777) == oct(0o600)
    box = mailbox.Maildir(str(md), factory=None, create=False)
    [message] = list(box)
    assert message["Delivered-To"] == "joe@test.example" and message["Subject"] == "test"
    assert message.get_payload().startswith("From the start\n")


def test_a_dot_qmail_saved_with_crlf_delivers_where_its_lines_say(home, tmp_path):
    # qmail kept the CR: an mbox named CR inside the Maildir got the message, logged as a success
    md = make_maildir(home / "Maildir")
    dotqmail(home, ".qmail", "./Maildir/\r\n")
    r = local(home, tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"did 1+0+0\n", b"")
    assert len(os.listdir(md / "new")) == 1 and sorted(os.listdir(md)) == ["cur", "new", "tmp"]


def test_maildir_delivery_never_names_a_file_in_tmp(home, tmp_path):
    """The message is written into an unnamed file (O_TMPFILE) and linked straight into new/: tmp/ is not
    touched at all (its mtime stays where the test put it), so its fsync is not paid for."""
    md = make_maildir(home / "Maildir")
    dotqmail(home, ".qmail", "./Maildir/\n")
    os.utime(md / "tmp", ns=(0, 0))
    r = local(home, tmp_path)
    assert (r.returncode, r.stdout) == (0, b"did 1+0+0\n")
    assert os.stat(md / "tmp").st_mtime_ns == 0 and os.listdir(md / "tmp") == []
    [name] = os.listdir(md / "new")
    assert (md / "new" / name).read_bytes() == RP + DT + MSG
    assert os.stat(md / "new" / name).st_nlink == 1


def test_maildir_without_o_tmpfile_uses_a_named_tmp_file(tmp_path, monkeypatch):
    """Where O_TMPFILE or /proc is missing, the delivery goes through tmp/<unique> as in qmail."""
    from pyqmail.lib.local import maildir
    md = tmp_path / "Maildir"
    for sub in ("", "tmp", "new", "cur"):
        (md / sub).mkdir()
    os.utime(md / "tmp", ns=(0, 0))
    monkeypatch.setattr(maildir, "_proc_fd", [False])
    f = tmp_path / "message"
    f.write_bytes(MSG)
    with open(f, "rb") as message:
        maildir.deliver(str(md), RP + DT, message.fileno())
    assert os.stat(md / "tmp").st_mtime_ns != 0 and os.listdir(md / "tmp") == []
    [name] = os.listdir(md / "new")
    assert (md / "new" / name).read_bytes() == RP + DT + MSG


def test_maildir_read_by_mutt(home, tmp_path):
    """Debian's mutt (under `script` for a terminal) opens the maildir and lists our message."""
    need("mutt", "script")
    md = make_maildir(home / "Maildir")
    dotqmail(home, ".qmail", "./Maildir/\n")
    assert local(home, tmp_path, msg=b"Subject: seen-by-mutt\n\nhello\n").returncode == 0
    (tmp_path / "Mail").mkdir()
    cmd = "mutt -n -F /dev/null -R -f %s -e 'push q'" % md
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL, env=dict(os.environ, TERM="vt100", HOME=str(tmp_path)))
    assert b"Msgs:1 New:1" in r.stdout and b"seen-by-mutt" in r.stdout, r.stdout


def test_mbox_byte_exact_and_appends(home, tmp_path):
    dotqmail(home, ".qmail", "./Mailbox\n")
    assert local(home, tmp_path).stdout == b"did 1+0+0\n"
    r = local(home, tmp_path, sender="", msg=b"one line\n")
    assert r.returncode == 0
    data = (home / "Mailbox").read_bytes()
    first = (rb"(?P<uf>" + FROM_RE + rb")" + re.escape(
        RP + DT + b"Subject: test\nMessage-ID: <1@x>\n\n>From the start\n>>From quoted\n>>>From twice\n"
        b"Fromage\nlast line\n\n"))
    second = rb"From MAILER-DAEMON .*\n" + re.escape(b"Return-Path: <>\n" + DT + b"one line\n\n")
    assert re.fullmatch(first + second, data), data
    assert len(mailbox.mbox(str(home / "Mailbox"), create=False)) == 2


def test_dash_and_tab_in_sender_of_from_line(home, tmp_path):
    dotqmail(home, ".qmail", "./Mailbox\n")
    assert local(home, tmp_path, sender="a b\tc@x").returncode == 0
    data = (home / "Mailbox").read_bytes()
    assert data.startswith(b"From a-b-c@x ") and b'Return-Path: <"a b\tc"@x>\n' in data


ENV_VARS = ("SENDER NEWSENDER RECIPIENT USER HOME HOST HOST2 HOST3 HOST4 LOCAL EXT EXT2 EXT3 EXT4 "
            "DEFAULT DTLINE RPLINE UFLINE").split()


def test_program_environment_and_stdin(home, tmp_path):
    script = "".join('printf "%s=[%%s]\\n" "${%s-unset}"; ' % (v, v) for v in ENV_VARS)
    dotqmail(home, ".qmail-lists-default", "|%s cat; exit 0\n" % script)
    r = local(home, tmp_path, ext="Lists-A.b-c", sender="x@y.z")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    expect = {"SENDER": "x@y.z", "NEWSENDER": "x@y.z", "RECIPIENT": "joe-Lists-A.b-c@test.example",
              "USER": "joe", "HOME": str(home), "HOST": "test.example", "HOST2": "test", "HOST3": "test",
              "HOST4": "test", "LOCAL": "joe-Lists-A.b-c", "EXT": "Lists-A.b-c", "EXT2": "A.b-c",
              "EXT3": "c", "EXT4": "", "DEFAULT": "A.b-c",
              "DTLINE": "Delivered-To: joe-Lists-A.b-c@test.example\n", "RPLINE": "Return-Path: <x@y.z>\n"}
    for k, v in expect.items():
        assert "%s=[%s]\n" % (k, v) in out
    assert re.search(r"UFLINE=\[From x@y\.z \w{3} \w{3} \d\d \d\d:\d\d:\d\d \d{4}\n\]", out)
    assert out.endswith(MSG.decode() + "did 0+0+1\n")  # the message on stdin has no added lines


def test_default_is_unset_without_default_file(home, tmp_path):
    dotqmail(home, ".qmail-x", '|echo "D=${DEFAULT-unset}"\n')
    r = local(home, tmp_path, ext="x")
    assert r.stdout == b"D=unset\ndid 0+0+1\n"


@pytest.mark.parametrize("code,expect", [(0, 0), (99, 0), (100, 100), (64, 100), (65, 100), (70, 100),
                                         (76, 100), (77, 100), (78, 100), (112, 100), (111, 111), (1, 111),
                                         (2, 111), (75, 111)])
def test_program_exit_codes(home, tmp_path, code, expect):
    dotqmail(home, ".qmail", "|echo first; exit %d\n|echo second\n" % code)
    r = local(home, tmp_path)
    assert r.returncode == expect
    if code == 0:
        assert r.stdout == b"first\nsecond\ndid 0+0+2\n"
    elif code == 99:
        assert r.stdout == b"first\ndid 0+0+1\n"  # 99: success, stop processing
    else:
        assert r.stdout == b"first\n" and r.stderr == b""


def test_program_crash(home, tmp_path):
    dotqmail(home, ".qmail", "|kill -9 $$\n")
    r = local(home, tmp_path)
    assert (r.returncode, r.stderr) == (111, b"Aack, child crashed. (#4.3.0)\n")


def test_failure_stops_before_forwards_are_sent(home, tmp_path, dtree):
    dotqmail(home, ".qmail", "&a@example.net\n|exit 100\n")
    assert local(home, tmp_path, tree=dtree).returncode == 100
    assert queued(dtree) == {}


def test_forward_queued_with_dtline_and_envelope(home, tmp_path, dtree):
    dotqmail(home, ".qmail", "&a@example.net\nb@example.com\n|exit 99\n&never@example.org\n")
    r = local(home, tmp_path, tree=dtree)
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(rb"did 0\+2\+1\nqp (\d+)\n", r.stdout)
    assert m
    [(mess, todo)] = queued(dtree).values()
    assert re.fullmatch(rb"Received: \(qmail \d+ invoked by uid \d+\); .*\n" + re.escape(DT + MSG), mess)
    assert todo.endswith(b"\0Fs@example.org\0Ta@example.net\0Tb@example.com\0")
    assert b"p" + m.group(1) + b"\0" in todo  # the qp is qmail-queue's pid


@pytest.mark.parametrize("qq,code,text", [("/bin/false", 111, b"qq temporary problem (#4.3.0)"),
                                          ("/nonexistent", 111, b"unable to exec qq (#4.3.0)")])
def test_forward_failure_reported(home, tmp_path, dtree, qq, code, text):
    dotqmail(home, ".qmail", "&a@example.net\n")
    r = local(home, tmp_path, tree=dtree, extra_env={"QMAILQUEUE": qq})
    assert (r.returncode, r.stdout, r.stderr) == (code, b"", b"Unable to forward message: " + text + b".\n")


@pytest.mark.parametrize("files,sender", [((".qmail-owner",), b"joe-owner@test.example"),
                                          ((".qmail-owner", ".qmail-owner-default"), b"joe-owner-@test.example-@[]"),
                                          ((), b"s@example.org")])
def test_newsender_owner_files(home, tmp_path, dtree, files, sender):
    for name in files:
        dotqmail(home, name, "./Owner\n")
    dotqmail(home, ".qmail", "&a@example.net\n")
    assert local(home, tmp_path, tree=dtree).returncode == 0
    [(_, todo)] = queued(dtree).values()
    assert b"\0F" + sender + b"\0Ta@example.net\0" in todo


def test_bounce_sender_keeps_empty_newsender(home, tmp_path):
    dotqmail(home, ".qmail-owner", "./Owner\n")
    dotqmail(home, ".qmail", '|echo "[$NEWSENDER]"\n')
    assert local(home, tmp_path, sender="").stdout == b"[]\ndid 0+0+1\n"


def test_loop_detection(home, tmp_path):
    dotqmail(home, ".qmail", "./Mailbox\n")
    r = local(home, tmp_path, msg=b"X: y\n" + DT + b"\nbody\n")
    assert (r.returncode, r.stdout) == (100, b"")
    assert r.stderr == b"This message is looping: it already has my Delivered-To line. (#5.4.6)\n"
    assert not (home / "Mailbox").exists()
    assert local(home, tmp_path, msg=b"X: y\n\n" + DT).returncode == 0  # in the body: no loop
    assert local(home, tmp_path, msg=b"Delivered-To: joe@test.example \n\n").returncode == 0


def test_newline_in_address_is_sanitised(home, tmp_path):
    dotqmail(home, ".qmail", '|printf "%s%s" "$DTLINE" "$RPLINE"\n')
    r = local(home, tmp_path, sender="a\nb@x", localpart="joe\nX-Evil: 1")
    assert r.stdout.startswith(b'Delivered-To: joe_X-Evil: 1@test.example\nReturn-Path: <"a\\_b"@x>\n')


@pytest.mark.parametrize("mode,text", [(0o757, b"Uh-oh: home directory is writable. (#4.7.0)\n"),
                                       (0o1755, b"Home directory is sticky: user is editing his .qmail file. (#4.2.1)\n")])
def test_home_refused(home, tmp_path, mode, text):
    dotqmail(home, ".qmail", "./Mailbox\n")
    os.chmod(home, mode)
    r = local(home, tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (111, b"", text)
    assert not (home / "Mailbox").exists()


def test_sticky_home_only_warns_with_n(home, tmp_path):
    dotqmail(home, ".qmail", "./Mailbox\n")
    os.chmod(home, 0o1755)
    r = local(home, tmp_path, opts=("-n",))
    assert (r.returncode, r.stdout, r.stderr) == (0, b"mbox ./Mailbox\ndid 1+0+0\n",
                                                  b"Warning: home directory is sticky.\n")


def test_group_writable_home_is_accepted(home, tmp_path):
    dotqmail(home, ".qmail", "./Mailbox\n")
    os.chmod(home, 0o775)  # conf-patrn 002 refuses only world-writable homes
    assert local(home, tmp_path).returncode == 0


def test_writable_dotqmail_refused(home, tmp_path):
    dotqmail(home, ".qmail", "./Mailbox\n", mode=0o646)
    r = local(home, tmp_path)
    assert (r.returncode, r.stderr) == (111, b"Uh-oh: .qmail file is writable. (#4.7.0)\n")


@pytest.mark.parametrize("ext,chosen,default", [
    ("a-b-c", ".qmail-a-b-c", "unset"), ("a-b-x", ".qmail-a-b-default", "x"),
    ("a-z", ".qmail-a-default", "z"), ("zz-top", ".qmail-default", "zz-top"),
    ("A-B-Q", ".qmail-a-b-default", "Q"), ("a-", ".qmail-a-default", "")])
def test_lookup_order(home, tmp_path, ext, chosen, default):
    for name in (".qmail-a-b-c", ".qmail-a-b-default", ".qmail-a-default", ".qmail-default"):
        dotqmail(home, name, '|echo "%s ${DEFAULT-unset}"\n' % name)
    r = local(home, tmp_path, ext=ext)
    assert r.stdout == ("%s %s\ndid 0+0+1\n" % (chosen, default)).encode()


def test_safe_extension_in_file_name(home, tmp_path):
    dotqmail(home, ".qmail-foo:bar", "|echo colon\n")
    assert local(home, tmp_path, ext="Foo.Bar").stdout == b"colon\ndid 0+0+1\n"
    assert local(home, tmp_path, ext="..-..-default").returncode == 100  # no climbing out of home


def test_no_mailbox_here(home, tmp_path):
    r = local(home, tmp_path, ext="nobody")
    assert (r.returncode, r.stderr) == (100, b"Sorry, no mailbox here by that name. (#5.1.1)\n")


@pytest.mark.parametrize("content", [None, ""])
def test_default_delivery_without_or_with_empty_dotqmail(home, tmp_path, content):
    if content is not None:
        dotqmail(home, ".qmail", content, mode=0o744)  # x bit ignored for the default delivery
    r = local(home, tmp_path, dd="./Mailbox\n|echo prog\n")
    assert (r.returncode, r.stdout) == (0, b"prog\ndid 1+0+1\n")
    assert (home / "Mailbox").read_bytes().count(b"Subject: test") == 1


def test_show_plan_with_n(home, tmp_path):
    dotqmail(home, ".qmail", "# c\n./Maildir/\n./Mailbox  \t\n|prog arg\n&a@b\nc@d\n+junk\n")
    r = local(home, tmp_path, opts=("-n",))
    assert r.stdout == (b"maildir ./Maildir/\nmbox ./Mailbox\nprogram prog arg\nforward a@b\nforward c@d\n"
                        b"did 2+2+1\n")
    assert not (home / "Mailbox").exists()


@pytest.mark.parametrize("line,what", [("./Maildir/", "file"), ("./Mailbox", "file"), ("|true", "prog")])
def test_x_bit_means_forward_only(home, tmp_path, line, what):
    dotqmail(home, ".qmail", line + "\n", mode=0o744)
    r = local(home, tmp_path)
    assert (r.returncode, r.stderr) == (
        111, b"Uh-oh: .qmail has %s delivery but has x bit set. (#4.7.0)\n" % what.encode())


def test_plus_list_makes_forward_only(home, tmp_path, dtree):
    dotqmail(home, ".qmail", "|echo before\n+list\n|echo after\n")
    r = local(home, tmp_path, tree=dtree)
    assert (r.returncode, r.stdout) == (111, b"before\n")
    assert r.stderr == b"Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)\n"


def test_first_line_blank(home, tmp_path):
    dotqmail(home, ".qmail", "\n./Mailbox\n")
    r = local(home, tmp_path)
    assert (r.returncode, r.stderr) == (111, b"Uh-oh: first line of .qmail file is blank. (#4.2.1)\n")
    dotqmail(home, ".qmail", "./Mailbox\n\n\n")
    assert local(home, tmp_path).returncode == 0


def test_unusable_maildir_and_mbox(home, tmp_path):
    dotqmail(home, ".qmail", "./nothere/\n")
    r = local(home, tmp_path)
    assert (r.returncode, r.stderr) == (111, b"Unable to chdir to maildir. (#4.2.1)\n")
    dotqmail(home, ".qmail", "./no/such/Mailbox\n")
    r = local(home, tmp_path)
    assert (r.returncode, r.stderr) == (111, b"Unable to open ./no/such/Mailbox: file does not exist. (#4.2.1)\n")


def test_message_must_be_seekable(home):
    dotqmail(home, ".qmail", "./Mailbox\n")
    kw = dict(user=ids()[0], group=ids()[1], extra_groups=[]) if ROOT else {}
    r = subprocess.run([program("qmail-local"), "--", "joe", str(home), "joe", "", "", "test.example", "s@x",
                        "./Mailbox"], input=b"Subject: x\n\n", capture_output=True, **kw)
    assert (r.returncode, r.stderr) == (111, b"Unable to rewind message. (#4.3.0)\n")


@pytest.mark.parametrize("argv", [[], ["-x", "u", "/h", "l", "", "", "d", "s", "dd"],
                                  ["u", "relative", "l", "", "", "d", "s", "dd"], ["u", "/h", "l", "", "", "d", "s"]])
def test_usage(argv):
    r = subprocess.run([program("qmail-local"), *argv], capture_output=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 100
    assert r.stderr == (b"qmail-local: usage: qmail-local [ -nN ] user homedir local dash ext domain sender "
                        b"aliasempty\n")


@pytest.mark.skipif(not ROOT, reason="needs root")
def test_refuses_to_deliver_as_root(home, tmp_path):
    dotqmail(home, ".qmail", "|touch /tmp/should-not-exist-pyqmail\n")
    r = local(home, tmp_path, as_user=False)
    assert (r.returncode, r.stderr) == (111, b"Not allowed to perform deliveries as root. (#4.3.0)\n")
