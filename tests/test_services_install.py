"""`qmail-setup --services=KIND`: what it installs where, with the tree's values, and that it never overwrites
or follows what is already there (qmail-setup(8))."""

import os
import pwd
import subprocess

from hypothesis import given, strategies as st

from conftest import make_tree, program
from servicetree import SERVERS, setup_services

from pyqmail.lib.config import services


def test_runit_scripts_have_the_trees_values(tree, world_tmp):
    r = setup_services(tree, "runit", world_tmp / "root")
    assert r.returncode == 0, r.stderr
    base = world_tmp / "root" / "etc" / "sv"
    me = pwd.getpwuid(os.stat(tree / "queue").st_uid).pw_name  # a single-user tree: its owner for everything
    for name in ("qmail-send",) + SERVERS:
        run, log = base / name / "run", base / name / "log" / "run"
        assert os.stat(run).st_mode & 0o777 == 0o755 and os.stat(log).st_mode & 0o777 == 0o755
        assert "@" not in run.read_text().replace("@example", "")  # every placeholder substituted
        assert log.read_text().endswith("exec chpst -u %s multilog t %s/log/%s\n" % (me, tree, name))
        assert (tree / "log" / name).is_dir()
        assert subprocess.run(["sh", "-n", str(run)]).returncode == 0
    smtpd = (base / "qmail-smtpd" / "run").read_text()
    assert "QMAILHOME=%s\n" % tree in smtpd and "-u \"`id -u %s`\"" % me in smtpd and "-l test.example " in smtpd
    assert r.stdout.count("qmail-setup: installed ") == 10


def test_daemontools_goes_under_the_tree_with_setuidgid(tree, world_tmp):
    r = setup_services(tree, "daemontools", world_tmp / "root")
    assert r.returncode == 0, r.stderr
    base = world_tmp / "root" / str(tree).lstrip("/") / "supervise"
    assert sorted(p.name for p in base.iterdir()) == sorted(("qmail-send",) + SERVERS)
    assert "exec setuidgid " in (base / "qmail-send" / "log" / "run").read_text()


def test_never_overwrites_and_says_so(tree, world_tmp):
    prefix = world_tmp / "root"
    assert setup_services(tree, "xinetd", prefix).returncode == 0
    again = setup_services(tree, "xinetd", prefix)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")  # all there, the same: nothing to say
    entries = prefix / "etc" / "xinetd.d"
    (entries / "qmail-smtpd").write_text("# the admin's own\n")
    victim = world_tmp / "victim"
    victim.write_text("untouched\n")
    (entries / "qmail-qmqpd").unlink()
    (entries / "qmail-qmqpd").symlink_to(victim)  # planted: must not be followed
    (entries / "qmail-pop3d").unlink()  # missing: installed again
    r = setup_services(tree, "xinetd", prefix)
    assert r.returncode == 100
    assert "kept %s: it exists and differs" % (entries / "qmail-smtpd") in r.stderr
    assert "kept %s: it exists and differs" % (entries / "qmail-qmqpd") in r.stderr
    assert r.stdout == "qmail-setup: installed %s\n" % (entries / "qmail-pop3d")
    assert (entries / "qmail-smtpd").read_text() == "# the admin's own\n"
    assert victim.read_text() == "untouched\n" and (entries / "qmail-qmqpd").is_symlink()
    assert sorted(p.name for p in entries.iterdir()) == sorted(SERVERS)  # no temporary files left


def test_refusals(tree, world_tmp):
    setup = program("qmail-setup")
    r = subprocess.run([setup, "--services=upstart", str(tree)], capture_output=True, text=True)
    assert r.returncode == 100 and "unknown service kind upstart" in r.stderr
    mini = make_tree(world_tmp / "mini", "--single-user", "--mini", "127.0.0.1")
    r = subprocess.run([setup, "--services=runit", "--destdir", str(world_tmp / "r"), str(mini)],
                       capture_output=True, text=True)
    assert r.returncode == 111 and "is not a full qmail tree" in r.stderr
    odd = make_tree(world_tmp / "a b", "--single-user", "--me", "test.example")
    r = subprocess.run([setup, "--services=runit", "--destdir", str(world_tmp / "r"), str(odd)],
                       capture_output=True, text=True)
    assert r.returncode == 100 and "cannot write" in r.stderr
    assert not (world_tmp / "r" / "etc").exists()


@given(st.text(max_size=30))
def test_safe_values_are_plain_words(value):
    if services.safe(value):
        assert value.strip() == value and not value.startswith("-")
        assert not set(value) & set(" \t\n'\"`$\\;&|<>()*?[]#~=%{}!,:")


def test_planted_directory_links_are_not_followed(tree, world_tmp):
    """A tree's owner may plant links in supervise/ or log/: root's qmail-setup writes nothing through them."""
    elsewhere = world_tmp / "elsewhere"
    elsewhere.mkdir()
    (tree / "supervise").symlink_to(elsewhere)
    (tree / "log" / "qmail-smtpd").symlink_to(elsewhere)
    r = setup_services(tree, "daemontools", "/")  # the tree's own supervise/, as on a real host
    assert r.returncode == 100
    assert "skipped %s/supervise/qmail-send/run: a directory on its way is a symbolic link" % tree in r.stderr
    assert "skipped %s: a symbolic link" % (tree / "log" / "qmail-smtpd") in r.stderr
    assert list(elsewhere.iterdir()) == [] and os.stat(elsewhere).st_mode & 0o777 == 0o755
    os.chmod(elsewhere, 0o700)
    (tree / "supervise").unlink()
    r = setup_services(tree, "daemontools", "/")
    assert r.returncode == 100 and r.stderr.count("skipped") == 1  # only the log link is left
    assert os.stat(elsewhere).st_mode & 0o777 == 0o700 and (tree / "supervise" / "qmail-smtpd" / "log" / "run").is_file()
