"""qmail-setup: the tree's layout, control defaults, idempotence, mini-qmail (qmail-setup(8))."""

import os
import pwd
import stat
import subprocess

import pytest

from conftest import make_tree, program, qenv, queued


def test_single_user_tree_layout(tree):
    q = tree / "queue"
    for d in ("pid", "intd", "todo", "bounce", "lock"):
        assert (q / d).is_dir()
    for d in ("mess", "info", "local", "remote"):
        assert sorted(int(p.name) for p in (q / d).iterdir()) == list(range(23))
    assert stat.S_ISFIFO(os.stat(q / "lock" / "trigger").st_mode)
    assert (q / "lock" / "tcpto").read_bytes() == bytes(1024)
    assert (q / "lock" / "sendmutex").read_bytes() == b""
    assert all(p.lstat().st_uid == os.geteuid() for p in tree.rglob("*"))
    for d in ("users", "alias", "maildrop", "control", "bin"):
        assert (tree / d).is_dir()


def test_control_defaults_like_config_fast(world_tmp):
    root = make_tree(world_tmp / "q", "--single-user", "--me", "mail.example.org")
    control = root / "control"
    assert (control / "me").read_text() == "mail.example.org\n"
    assert (control / "defaultdomain").read_text() == "example.org\n"
    assert (control / "plusdomain").read_text() == "example.org\n"
    assert (control / "rcpthosts").read_text() == "mail.example.org\n"
    assert "mail.example.org" in (control / "locals").read_text().split()
    assert not (control / "README").exists()


def test_bin_links_point_at_the_installed_programs(tree):
    link = tree / "bin" / "qmail-send"
    assert link.is_symlink() and os.path.samefile(link, program("qmail-send"))


def test_per_message_programs_get_launchers_without_site(tree):
    from pyqmail.lib.util import launcher
    for name in ("qmail-queue", "qmail-qmqpd", "qmail-smtpd", "qmail-local", "qmail-remote", "sendmail"):
        path = tree / "bin" / name
        assert path.is_file() and not path.is_symlink() and os.access(path, os.X_OK)
        first = path.read_text().splitlines()[0]
        assert first.startswith("#!") and first.endswith(" -S")
        assert launcher.runs(str(path), launcher.module_of(name))
        assert not launcher.runs(str(path), launcher.module_of("qmail-send"))
    # and it runs: site is not imported, the program is
    probe = tree / "bin" / "probe"
    probe.write_text((tree / "bin" / "qmail-queue").read_text().replace(
        "from pyqmail.commands.qmail_queue import run\nrun()\n",
        "import pyqmail.commands.qmail_queue\nprint('site' in sys.modules, sys.flags.no_site,"
        " type(sys.modules['pyqmail'].__path__).__name__)\n"))
    probe.chmod(0o755)
    # and pyqmail is a plain package there, not a namespace package found by listing every sys.path entry
    assert subprocess.run([str(probe)], capture_output=True, check=True).stdout == b"False 1 list\n"


def test_a_launcher_from_before_the_package_line_is_still_recognised(tree):
    from pyqmail.lib.util import launcher
    path = tree / "bin" / "qmail-queue"
    lines = path.read_text().split("\n")
    older = tree / "older-qmail-queue"
    older.write_text("\n".join(lines[:-5] + lines[-3:]))  # without the two pyqmail package lines
    assert "pyqmail.__path__" in path.read_text() and "pyqmail.__path__" not in older.read_text()
    assert launcher.runs(str(older), "pyqmail.commands.qmail_queue")
    moved = tree / "moved-qmail-queue"  # the package line names another install: not ours
    moved.write_text(path.read_text().replace("/pyqmail']", "/elsewhere/pyqmail']"))
    assert not launcher.runs(str(moved), "pyqmail.commands.qmail_queue")


def test_idempotent_and_never_clobbers(tree):
    (tree / "control" / "me").write_text("changed.example\n")
    r, w = os.pipe()
    os.write(w, b"Fa\0Tb\0\0")
    os.close(w)
    subprocess.run([str(tree / "bin" / "qmail-queue")], input=b"keep me\n", stdout=r, env=qenv(tree), check=True)
    os.close(r)
    before = queued(tree)
    make_tree(tree, "--single-user", "--me", "test.example")
    assert queued(tree) == before and len(before) == 1
    assert (tree / "control" / "me").read_text() == "changed.example\n"


def test_mini_qmail_tree(world_tmp):
    root = make_tree(world_tmp / "mini", "--single-user", "--me", "leaf.example",
                     "--mini", "127.0.0.1", "--mini", "[::1]:6628")
    from pyqmail.lib.util import launcher
    assert launcher.runs(str(root / "bin" / "qmail-queue"), "pyqmail.commands.qmail_qmqpc")  # qmail-qmqpc's
    assert (root / "control" / "qmqpservers").read_text() == "127.0.0.1\n[::1]:6628\n"
    assert not (root / "queue").exists()


def test_usage_errors_exit_nonzero(world_tmp):
    done = subprocess.run([program("qmail-setup")], capture_output=True)
    assert done.returncode != 0 and b"Usage" in done.stdout + done.stderr
    done = subprocess.run([program("qmail-setup"), "--user", "no-such-user-xyz", str(world_tmp / "x")],
                          capture_output=True)
    assert done.returncode == 100 and b"no such account" in done.stderr


def test_delivery_pieces_rc_defaultdelivery_log_and_aliases(tree):
    assert (tree / "control" / "defaultdelivery").read_text() == "./Maildir/\n"
    rc = (tree / "rc").read_text()
    assert rc.startswith("#!/bin/sh\n") and os.access(tree / "rc", os.X_OK)
    assert "QMAILHOME=%s\n" % tree in rc
    assert 'exec env - PATH="$QMAILHOME/bin:$PATH" QMAILHOME="$QMAILHOME" qmail-start "$dd" "$@"' in rc
    assert (tree / "log" / "qmail-send").is_dir()
    for name in (".qmail-postmaster", ".qmail-mailer-daemon", ".qmail-root"):
        path = tree / "alias" / name
        assert path.read_bytes() == b"" and stat.S_IMODE(path.stat().st_mode) == 0o644
    for d in ("", "new", "cur", "tmp"):
        assert stat.S_IMODE((tree / "alias" / "Maildir" / d).stat().st_mode) == 0o700


def test_delivery_pieces_are_never_overwritten(tree):
    (tree / "rc").write_text("#!/bin/sh\n# mine\n")
    (tree / "control" / "defaultdelivery").write_text("./Mailbox\n")
    (tree / "alias" / ".qmail-root").write_text("&someone@example.org\n")
    make_tree(tree, "--single-user", "--me", "test.example")
    assert (tree / "rc").read_text() == "#!/bin/sh\n# mine\n"
    assert (tree / "control" / "defaultdelivery").read_text() == "./Mailbox\n"
    assert (tree / "alias" / ".qmail-root").read_text() == "&someone@example.org\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for qmail's accounts")
def test_root_tree_delivery_pieces_belong_to_the_logger_and_alias(world_tmp):
    root = make_tree(world_tmp / "q", "--me", "test.example")
    owner = lambda p: pwd.getpwuid(p.stat().st_uid).pw_name  # noqa: E731
    assert owner(root / "log" / "qmail-send") == "qmaill"
    assert owner(root / "rc") == "root"
    assert {owner(p) for p in (root / "alias").iterdir()} == {"alias"}
