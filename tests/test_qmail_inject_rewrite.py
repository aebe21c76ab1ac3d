"""qmail-inject -n on real input: header rewriting by qmail-header(5)'s rules, the fields it adds, drops and
keeps, Resent- mode, From styles and the QMAILINJECT letters. Expected outputs are derived from the rules in
qmail-inject(8) and qmail-header(5) (default host silverton, default and plus domain berkeley.edu, as there)."""

import re
import subprocess
import time

import pytest

from conftest import program, qenv

PERSONAL = ("USER", "LOGNAME", "MAILUSER", "QMAILUSER", "NAME", "MAILNAME", "QMAILNAME", "MAILHOST", "QMAILHOST",
            "QMAILSUSER", "QMAILSHOST", "QMAILINJECT", "QMAILMFTFILE", "QMAILDEFAULTHOST", "QMAILDEFAULTDOMAIN",
            "QMAILPLUSDOMAIN", "QMAILIDHOST")
BERKELEY = {"QMAILDEFAULTHOST": "silverton", "QMAILDEFAULTDOMAIN": "berkeley.edu", "QMAILPLUSDOMAIN": "berkeley.edu",
            "QMAILUSER": "u"}
BASE = b"Date: 1 Jan 2000 00:00:00 -0000\nMessage-ID: <m@x.y>\nFrom: f@x.y\nTo: t@x.y\n"
RETURN_PATH = b"Return-Path: <u@silverton.berkeley.edu>\n"
DATE = rb"(\d{1,2}) ([A-Z][a-z]{2}) (\d{4}) (\d\d):(\d\d):(\d\d) -0000"


def inject_env(tree, **extra):
    """The environment for qmail-inject: the tree, none of the user's own mail variables, then extra."""
    env = qenv(tree)
    for name in PERSONAL:
        env.pop(name, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def show(tree, message, *args, **env):
    """Run qmail-inject -n; return (exit code, stdout, stderr)."""
    p = subprocess.run([program("qmail-inject"), "-n", *args], input=message, env=inject_env(tree, **env),
                       capture_output=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


REWRITES = [
    (b"To: djb\n", b"To: djb@silverton.berkeley.edu\n"),
    (b"Cc: djb@silverton, eric@mammoth.cs+\n", b"Cc: djb@silverton.berkeley.edu, eric@mammoth.cs.berkeley.edu\n"),
    (b"To: djb fred\n", b"To: djb@silverton.berkeley.edu, fred@silverton.berkeley.edu\n"),
    (b"To: a@b, c@d (Somebody), A Person <e@f>,\n   random group: g@h, i@j;, k@l\n",
     b"To: a@b.berkeley.edu, c@d.berkeley.edu (Somebody),\n  A Person <e@f.berkeley.edu>, random group:"
     b" g@h.berkeley.edu,\n  i@j.berkeley.edu;, k@l.berkeley.edu\n"),
    (b"To: <@a.b,@c.d:joe@e.f>\n", b"To: <joe@e.f>\n"),
    (b'To: "Joe Q. Public" <jqp@[1.2.3.4]>\n', b'To: "Joe Q. Public" <jqp@[1.2.3.4]>\n'),
    (b'To: "john doe"@a.b\n', b'To: "john doe"@a.b\n'),
    (b"TO : djb\n", b"TO: djb@silverton.berkeley.edu\n"),
    (b"To:djb,,\n", b"To: djb@silverton.berkeley.edu, ,\n"),
    (b"Apparently-To: djb\n", b"Apparently-To: djb@silverton.berkeley.edu\n"),
    (b"Reply-To: x@y\n", b"Reply-To: x@y.berkeley.edu\n"),
    (b"Sender: djb@silverton.\n", b"Sender: djb@silverton.berkeley.edu\n"),
    (b"Errors-To: <>\n", b"Errors-To: <>\n"),
    (b"Return-Receipt-To: djb\n", b"Return-Receipt-To: djb@silverton.berkeley.edu\n"),
    (b"X-Mailer: djb, fred\n", b"X-Mailer: djb, fred\n"),
    (b"Subject: a@b, c\n", b"Subject: a@b, c\n"),
    (b"Content-Length: 5\n", b""),
    (b"Bcc: secret\n", b""),
    (b"Content-length: 5\n", b""),
]


@pytest.mark.parametrize("field, rewritten", REWRITES)
def test_header_field_rewriting(tree, field, rewritten):
    code, out, err = show(tree, BASE + field + b"\nbody\n", **BERKELEY)
    assert (code, err) == (0, b"")
    assert out == RETURN_PATH + BASE + rewritten + b"\nbody\n"


def test_added_fields_when_missing(tree):
    before = int(time.time())
    code, out, err = show(tree, b"Subject: s\n\nb\n", QMAILIDHOST="id.example", QMAILUSER="joe")
    after = int(time.time())
    assert code == 0, err
    m = re.fullmatch(rb"Return-Path: <joe@test\.example>\nDate: " + DATE + rb"\n"
                     rb"Message-ID: <(\d{14})\.(\d+)\.qmail@id\.example>\nFrom: joe@test\.example\n"
                     rb"Cc: recipient list not shown: ;\nSubject: s\n\nb\n", out)
    assert m, out
    stamp = time.strptime(m.group(7).decode(), "%Y%m%d%H%M%S")
    assert time.strftime("%d %b %Y %H:%M:%S", stamp).lstrip("0") == "%s %s %s %s:%s:%s" % tuple(
        g.decode() for g in m.groups()[:6])
    import calendar
    assert before <= calendar.timegm(stamp) <= after


@pytest.mark.parametrize("env, from_field", [
    ({"NAME": "Dan Bernstein"}, b'From: "Dan Bernstein" <djb@silverton.berkeley.edu>\n'),
    ({"MAILNAME": "D. J.", "NAME": "no"}, b'From: "D. J." <djb@silverton.berkeley.edu>\n'),
    ({"QMAILNAME": "Q", "MAILNAME": "no"}, b'From: "Q" <djb@silverton.berkeley.edu>\n'),
    ({"NAME": "Dan (B)", "QMAILINJECT": "c"}, b"From: djb@silverton.berkeley.edu (Dan \\(B\\))\n"),
    ({"QMAILHOST": "mammoth+"}, b"From: djb@mammoth.berkeley.edu\n"),
    ({"MAILHOST": "a.b.c"}, b"From: djb@a.b.c\n"),
    ({"QMAILUSER": "d j b"}, b'From: "d j b"@silverton.berkeley.edu\n'),
])
def test_default_from(tree, env, from_field):
    user = {"USER": "djb"} if "QMAILUSER" not in env else {}
    settings = dict(BERKELEY, **user, **env)
    settings.pop("QMAILUSER") if "QMAILUSER" not in env else None
    code, out, err = show(tree, b"To: t@x.y\n\nb\n", **settings)
    assert code == 0, err
    assert from_field in out.split(b"\n\n")[0] + b"\n"


def test_user_comes_from_qmailuser_mailuser_user_logname_then_anonymous(tree):
    chain = [("QMAILUSER", "q"), ("MAILUSER", "m"), ("USER", "s"), ("LOGNAME", "l")]
    for i in range(len(chain) + 1):
        env = dict(chain[i:])
        expected = chain[i][1].encode() if i < len(chain) else b"anonymous"
        code, out, _ = show(tree, BASE, QMAILDEFAULTHOST="h.example", **env)
        assert out.startswith(b"Return-Path: <" + expected + b"@h.example>\n"), (env, out)


def test_resent_messages_get_resent_fields_only(tree):
    message = b"Resent-To: djb\nSubject: fwd\n\nb\n"
    code, out, err = show(tree, message, **BERKELEY)
    assert code == 0, err
    assert re.fullmatch(RETURN_PATH + rb"Resent-Date: " + DATE + rb"\nResent-Message-ID: <\d{14}\.\d+\.qmail@test\.example>\n"
                        rb"Resent-From: u@silverton\.berkeley\.edu\nResent-To: djb@silverton\.berkeley\.edu\n"
                        rb"Subject: fwd\n\nb\n", out), out


def test_resent_without_resent_to_or_cc_gets_resent_cc(tree):
    code, out, _ = show(tree, b"Resent-From: a@b.c\nResent-Bcc: x@y.z\n\nb\n", **BERKELEY)
    assert b"Resent-Cc: recipient list not shown: ;\n" in out
    assert b"Resent-From: a@b.c\n" in out and b"Resent-From: u@" not in out
    assert b"x@y.z" not in out and b"\nCc:" not in out and b"\nDate:" not in out


@pytest.mark.parametrize("letters, present, absent", [
    ("f", [b"From: u@silverton.berkeley.edu\n"], [b"From: f@x.y"]),
    ("i", [b".qmail@test.example>"], [b"<m@x.y>"]),
    ("", [b"Return-Path: <r@s.example>\n"], []),
    ("s", [RETURN_PATH], [b"r@s.example"]),
])
def test_qmailinject_letters_delete_fields(tree, letters, present, absent):
    code, out, err = show(tree, b"Return-Path: <r@s.example>\n" + BASE + b"\nb\n", QMAILINJECT=letters, **BERKELEY)
    assert code == 0, err
    for text in present:
        assert text in out
    for text in absent:
        assert text not in out
    assert out.count(b"Return-Path:") == 1


def test_mbox_from_line_and_body_start(tree):
    code, out, _ = show(tree, b"From joe Thu Jan  1 00:00:00 1970\n" + BASE + b"no field here\nsecond", **BERKELEY)
    assert code == 0
    assert out == RETURN_PATH + b"MBOX-Line: From joe Thu Jan  1 00:00:00 1970\n" + BASE + b"\nno field here\nsecond\n"


def test_message_without_body_gets_no_blank_line(tree):
    code, out, _ = show(tree, BASE.rstrip(b"\n"), **BERKELEY)
    assert out == RETURN_PATH + BASE


def test_mail_followup_to_for_known_lists(tree, world_tmp):
    lists = world_tmp / "lists"
    lists.write_bytes(b"# my lists\nList@Lists.example\n")
    message = b"To: a@b.example, list@lists.example\nCc: c@d.example\n\nb\n"
    code, out, _ = show(tree, message, QMAILMFTFILE=str(lists), **BERKELEY)
    # qmail's order: each field's addresses in order, the fields last to first
    assert b"Mail-Followup-To: c@d.example,\n  a@b.example,\n  list@lists.example\n" in out
    code, out, _ = show(tree, b"To: a@b.example\n\nb\n", QMAILMFTFILE=str(lists), **BERKELEY)
    assert b"Mail-Followup-To" not in out


def test_control_files_and_their_overrides(tree):
    (tree / "control" / "defaulthost").write_text("box\n")
    (tree / "control" / "defaultdomain").write_text("dom.example\n")
    (tree / "control" / "plusdomain").write_text("plus.example\n")
    (tree / "control" / "idhost").write_text("ids.example\n")
    code, out, _ = show(tree, b"To: a, b@c+\n\nb\n", QMAILUSER="u")
    assert b"To: a@box.dom.example, b@c.plus.example\n" in out
    assert b".qmail@ids.example>\n" in out
    code, out, _ = show(tree, b"To: a\n\nb\n", QMAILUSER="u", QMAILDEFAULTHOST="h.example")
    assert b"To: a@h.example\n" in out


def test_me_is_the_default_for_every_control(world_tmp):
    from conftest import make_tree
    t = make_tree(world_tmp / "q2", "--single-user", "--me", "mail.example")
    for name in ("defaulthost", "defaultdomain", "plusdomain", "idhost"):
        (t / "control" / name).unlink(missing_ok=True)
    code, out, _ = show(t, b"To: a, b@c, d@e+\n\nb\n", QMAILUSER="u")
    assert b"To: a@mail.example, b@c.mail.example, d@e.mail.example\n" in out
    assert b".qmail@mail.example>\n" in out
    (t / "control" / "me").unlink()
    code, out, _ = show(t, b"To: a\n\nb\n", QMAILUSER="u")
    assert b"To: a@defaulthost.defaultdomain\n" in out and b".qmail@idhost>\n" in out
