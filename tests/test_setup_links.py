"""`qmail-setup --links` under a private prefix (qmail-setup(8)): sendmail, mailq and newaliases linked to the
tree's bin/sendmail as qmail's INSTALL does, another MTA's files refused unless --force, and the links work."""

import os
import subprocess

from conftest import program, qenv, queued

LINKS = ("usr/sbin/sendmail", "usr/lib/sendmail", "usr/bin/mailq", "usr/bin/newaliases")


def links(tree, prefix, *options):
    """Run qmail-setup --links for tree under prefix; return the finished process."""
    return subprocess.run([program("qmail-setup"), "--links", *options, "--destdir", str(prefix), str(tree)],
                          capture_output=True, text=True)


def test_links_are_made_once(tree, world_tmp):
    prefix = world_tmp / "root"
    r = links(tree, prefix)
    assert r.returncode == 0, r.stderr
    for name in LINKS:
        assert os.readlink(prefix / name) == str(tree / "bin" / "sendmail")
        assert "linked %s -> %s" % (prefix / name, tree / "bin" / "sendmail") in r.stdout
    assert "set QMAILHOME=%s" % tree in r.stderr  # not /var/qmail: callers need QMAILHOME
    again = links(tree, prefix)
    assert again.returncode == 0 and again.stdout == ""


def test_another_mtas_file_is_refused_then_replaced_with_force(tree, world_tmp):
    prefix = world_tmp / "root"
    (prefix / "usr" / "sbin").mkdir(parents=True)
    (prefix / "usr" / "bin").mkdir(parents=True)
    theirs = prefix / "usr" / "sbin" / "sendmail"
    theirs.write_text("#!/bin/sh\n# postfix's sendmail\n")
    (prefix / "usr" / "bin" / "mailq").symlink_to("../sbin/sendmail")  # Postfix's relative link
    r = links(tree, prefix)
    assert r.returncode == 100
    assert "refused to replace %s" % theirs in r.stderr and "refused to replace %s" % (prefix / "usr/bin/mailq") in r.stderr
    assert theirs.read_text() == "#!/bin/sh\n# postfix's sendmail\n" and not theirs.is_symlink()
    assert os.readlink(prefix / "usr" / "bin" / "mailq") == "../sbin/sendmail"
    assert os.readlink(prefix / "usr" / "lib" / "sendmail") == str(tree / "bin" / "sendmail")  # the free ones made
    r = links(tree, prefix, "--force")
    assert r.returncode == 0, r.stderr
    assert "replaced (old one kept as sendmail.before-pyqmail) %s" % theirs in r.stdout
    for name in LINKS:
        assert os.readlink(prefix / name) == str(tree / "bin" / "sendmail")
    assert (prefix / "usr" / "sbin" / "sendmail.before-pyqmail").read_text() == "#!/bin/sh\n# postfix's sendmail\n"
    assert os.readlink(prefix / "usr" / "bin" / "mailq.before-pyqmail") == "../sbin/sendmail"
    # another MTA again: the first saved copy is not overwritten
    (prefix / "usr" / "sbin" / "sendmail").unlink()
    (prefix / "usr" / "sbin" / "sendmail").write_text("exim\n")
    assert links(tree, prefix).returncode == 100
    r = links(tree, prefix, "--force")
    assert r.returncode == 0 and "(sendmail.before-pyqmail was taken)" in r.stdout
    assert (prefix / "usr" / "sbin" / "sendmail.before-pyqmail").read_text() == "#!/bin/sh\n# postfix's sendmail\n"
    assert os.readlink(prefix / "usr" / "sbin" / "sendmail") == str(tree / "bin" / "sendmail")


def test_sendmail_mailq_newaliases_through_the_links(tree, world_tmp):
    prefix = world_tmp / "root"
    assert links(tree, prefix).returncode == 0
    r = subprocess.run([str(prefix / "usr/sbin/sendmail"), "-f", "cron@test.example", "root@test.example"],
                       input=b"Subject: from cron\n\nhello\n", capture_output=True, env=qenv(tree))
    assert r.returncode == 0, r.stderr
    (n, (mess, todo)), = queued(tree).items()
    assert b"Subject: from cron\n" in mess and b"Fcron@test.example\0" in todo and b"Troot@test.example\0" in todo
    # as qmail-send would preprocess it (qmail-qread lists info/ and remote/, not todo/)
    (tree / "queue" / "info" / str(n % 23) / str(n)).write_bytes(b"Fcron@test.example\0")
    (tree / "queue" / "remote" / str(n % 23) / str(n)).write_bytes(b"Troot@elsewhere.example\0")
    r = subprocess.run([str(prefix / "usr/bin/mailq")], capture_output=True, env=qenv(tree))
    assert r.returncode == 0 and b"<cron@test.example>" in r.stdout and b"root@elsewhere.example" in r.stdout
    r = subprocess.run([str(prefix / "usr/bin/newaliases")], capture_output=True, env=qenv(tree))
    assert r.returncode == 100 and r.stderr == b"sendmail: fatal: please use fastforward/newaliases instead\n"
