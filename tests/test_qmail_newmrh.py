"""qmail-newmrh: control/morercpthosts to morercpthosts.cdb, read back with tinycdb's cdb and used by qmail-smtpd."""

import os
import subprocess

from conftest import need, program, qenv


def test_keys_lowercased_comments_and_blanks_skipped_and_replaced_atomically(tree):
    need("cdb")
    (tree / "control" / "morercpthosts").write_bytes(b"Foo.Example \t\n# comment\n\n.bar.example\nfoo.example\n")
    old = tree / "control" / "morercpthosts.cdb"
    old.write_bytes(b"old")
    inode = old.stat().st_ino
    r = subprocess.run([program("qmail-newmrh")], env=qenv(tree), capture_output=True)
    assert (r.returncode, r.stderr) == (0, b"")
    dump = subprocess.run(["cdb", "-d", str(old)], capture_output=True, check=True).stdout
    assert dump == b"+11,0:foo.example->\n+12,0:.bar.example->\n+11,0:foo.example->\n\n"
    assert old.stat().st_ino != inode and not (tree / "control" / "morercpthosts.tmp").exists()
    assert oct(old.stat().st_mode & 0o777) == "0o644"


def test_missing_source_is_fatal_111_and_keeps_the_old_table(tree):
    (tree / "control" / "morercpthosts.cdb").write_bytes(b"keep")
    r = subprocess.run([program("qmail-newmrh")], env=qenv(tree), capture_output=True)
    assert r.returncode == 111
    assert r.stderr == b"qmail-newmrh: fatal: unable to read control/morercpthosts\n"
    assert (tree / "control" / "morercpthosts.cdb").read_bytes() == b"keep"


def test_unwritable_control_directory_is_fatal_111(tree):
    if os.geteuid() == 0:
        (tree / "control" / "morercpthosts.tmp").mkdir()  # root writes anywhere: make the temp file impossible
    else:
        os.chmod(tree / "control", 0o555)
    (tree / "control" / "morercpthosts").write_text("x.example\n") if os.geteuid() == 0 else None
    r = subprocess.run([program("qmail-newmrh")], env=qenv(tree), capture_output=True)
    os.chmod(tree / "control", 0o755)
    assert r.returncode == 111 and b"fatal: unable to" in r.stderr
