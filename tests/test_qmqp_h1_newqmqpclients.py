"""qmail-newqmqpclients through cdbmake.replace, the one routine that writes a cdb afresh and renames it into place:
its output name, modes, exit codes and messages, with links and FIFOs planted at control/qmqpclients.tmp."""

import os
import resource
import stat
import subprocess

import pytest

from conftest import program, qenv

SOURCE = b"# clients\n10.1.\n!10.1.2.3\n::1\n"


def run(tree, source=SOURCE, timeout=60, **kw):
    """Write control/qmqpclients (unless source is None) and run the real qmail-newqmqpclients."""
    if source is not None:
        (tree / "control" / "qmqpclients").write_bytes(source)
    return subprocess.run([program("qmail-newqmqpclients")], env=qenv(tree), capture_output=True, timeout=timeout, **kw)


def table(tree):
    """The records of control/qmqpclients.cdb."""
    import cdbx
    return dict(cdbx.CDB(str(tree / "control" / "qmqpclients.cdb")).items())


def test_builds_the_table_with_its_mode_and_leaves_no_tmp(tree):
    p = run(tree, umask=0o022)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"", b"")
    made = tree / "control" / "qmqpclients.cdb"
    assert stat.S_IMODE(made.stat().st_mode) == 0o644 and made.stat().st_nlink == 1
    assert not (tree / "control" / "qmqpclients.tmp").exists()
    records = table(tree)
    assert records[b"#format"] == b"pyqmail-qmqpclients 1"
    assert records[b"10.1.0.0/16"] == b"+" and records[b"10.1.2.3/32"] == b"-" and records[b"::1/128"] == b"+"
    assert run(tree, umask=0o077).returncode == 0  # the process's umask applies, as open(2)'s
    assert stat.S_IMODE(made.stat().st_mode) == 0o600


@pytest.mark.parametrize("plant", ["symlink", "fifo", "file"])
def test_anything_planted_at_the_tmp_name_is_replaced_never_written_through(tree, world_tmp, plant):
    victim = world_tmp / "victim"
    victim.write_bytes(b"precious\n")
    temp = tree / "control" / "qmqpclients.tmp"
    if plant == "symlink":
        temp.symlink_to(victim)
    elif plant == "fifo":
        os.mkfifo(temp)  # opened to write, it would wait for a reader
    else:
        temp.write_bytes(b"a half-written table from a crashed run")
    p = run(tree)
    assert (p.returncode, p.stderr) == (0, b""), p.stderr
    assert victim.read_bytes() == b"precious\n"
    made = tree / "control" / "qmqpclients.cdb"
    assert not made.is_symlink() and stat.S_ISREG(made.stat().st_mode) and made.stat().st_nlink == 1
    assert not os.path.lexists(temp)
    assert table(tree)[b"10.1.0.0/16"] == b"+"


def test_tmp_that_cannot_be_removed_exits_111_and_keeps_the_old_table(tree):
    assert run(tree).returncode == 0
    before = (tree / "control" / "qmqpclients.cdb").read_bytes()
    (tree / "control" / "qmqpclients.tmp").mkdir()  # unlink(2) fails for root too
    p = run(tree, b"10.2.\n")
    assert p.returncode == 111
    assert p.stderr == b"qmail-newqmqpclients: fatal: unable to write control/qmqpclients.tmp: Is a directory\n"
    assert (tree / "control" / "qmqpclients.cdb").read_bytes() == before


def test_write_error_exits_111_names_the_tmp_and_keeps_the_old_table(tree):
    assert run(tree).returncode == 0
    before = (tree / "control" / "qmqpclients.cdb").read_bytes()

    def small_files():
        """A file size limit the table's 2048-byte header exceeds (Python ignores SIGXFSZ: EFBIG)."""
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
    p = run(tree, b"10.2.\n", preexec_fn=small_files)
    assert p.returncode == 111
    assert p.stderr == b"qmail-newqmqpclients: fatal: unable to write control/qmqpclients.tmp: File too large\n"
    assert (tree / "control" / "qmqpclients.cdb").read_bytes() == before


def test_rename_failure_exits_111_with_qmails_move_message(tree):
    (tree / "control" / "qmqpclients.cdb").mkdir()
    (tree / "control" / "qmqpclients.cdb" / "in-the-way").write_bytes(b"")  # rename(2) over it: EISDIR
    p = run(tree)
    assert p.returncode == 111
    assert p.stderr == (b"qmail-newqmqpclients: fatal: unable to move control/qmqpclients.tmp to "
                        b"control/qmqpclients.cdb: Is a directory\n")
    assert (tree / "control" / "qmqpclients.cdb" / "in-the-way").exists()


@pytest.mark.parametrize("unreadable", ["directory", "fifo", "mode 000"])
def test_unreadable_source_exits_111_and_keeps_the_old_table(tree, unreadable):
    assert run(tree).returncode == 0
    before = (tree / "control" / "qmqpclients.cdb").read_bytes()
    source = tree / "control" / "qmqpclients"
    source.unlink()
    if unreadable == "directory":
        source.mkdir()
        why = b"is not a regular file"
    elif unreadable == "fifo":
        os.mkfifo(source)  # opened as a file, it waits for a writer that never comes
        why = b"is not a regular file"
    else:
        source.write_bytes(b"10.2.\n")
        source.chmod(0)
        why = b"Permission denied"
    # root reads a file of mode 000: as root, the program runs as nobody
    as_user = {"user": 65534} if os.geteuid() == 0 and unreadable == "mode 000" else {}
    p = run(tree, None, timeout=20, **as_user)
    assert p.returncode == 111
    assert p.stderr == b"qmail-newqmqpclients: fatal: unable to read control/qmqpclients: " + why + b"\n"
    assert (tree / "control" / "qmqpclients.cdb").read_bytes() == before
    assert not (tree / "control" / "qmqpclients.tmp").exists()


def test_arguments_exit_100(tree):
    (tree / "control" / "qmqpclients").write_bytes(SOURCE)
    p = subprocess.run([program("qmail-newqmqpclients"), "x"], env=qenv(tree), capture_output=True, timeout=60)
    assert (p.returncode, p.stderr) == (100, b"qmail-newqmqpclients: usage: qmail-newqmqpclients\n")
    assert not (tree / "control" / "qmqpclients.cdb").exists()


def test_replaced_meanwhile_names_both_files_and_says_why_when_asked(world_tmp):
    from pyqmail.lib.config import cdbmake
    from pyqmail.lib.util.exits import Exit
    temp, target = str(world_tmp / "t.tmp"), str(world_tmp / "t.cdb")

    def records():
        """One record; then a second run removes our t.tmp and starts its own."""
        yield b"a", b"1"
        os.unlink(temp)
        with open(temp, "wb") as f:
            f.write(b"the other run's")
    with pytest.raises(Exit) as e:
        cdbmake.replace(temp, target, records(), "unable to write t.tmp", "unable to write t.tmp",
                        move_text="unable to move t.tmp to t.cdb", reasons=True)
    assert (e.value.code, e.value.message) == (111, "fatal: unable to move t.tmp to t.cdb: replaced meanwhile")
    assert not os.path.exists(target) and open(temp, "rb").read() == b"the other run's"
