"""lib/util/regularfile: the one open of a name that must be a regular file (never through a symbolic link, never
waiting on a FIFO, never a file of several links where one is required), and errstr's wording of its refusal."""

import os
import threading

import pytest

from pyqmail.lib.util.errstr import oserror_str
from pyqmail.lib.util.regularfile import NotRegularFile, create_afresh, is_regular, open_regular


def opened(path, *args, **kw):
    """Open with open_regular in a thread that must end within 10 s (a FIFO must not hang it); return the fd."""
    box = []

    def run():
        try:
            box.append(open_regular(path, *args, **kw))
        except BaseException as e:  # noqa: B036 (handed back to the test)
            box.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert box, "open_regular hung"
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def test_a_regular_file_opens_blocking_and_readable(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    fd = opened(tmp_path / "f")
    try:
        assert os.get_blocking(fd) and os.read(fd, 10) == b"data"
    finally:
        os.close(fd)


def test_o_nonblock_asked_for_is_kept(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    fd = opened(tmp_path / "f", os.O_RDONLY | os.O_NONBLOCK)
    assert not os.get_blocking(fd)
    os.close(fd)


@pytest.mark.parametrize("kind,why", [("symlink", "is a symbolic link"), ("dangling", "is a symbolic link"),
                                      ("fifo", "is not a regular file"), ("dir", "is not a regular file")])
def test_anything_but_a_regular_file_is_refused_with_a_sentence(tmp_path, kind, why):
    (tmp_path / "target").write_bytes(b"secret")
    path = tmp_path / "x"
    {"symlink": lambda: path.symlink_to(tmp_path / "target"), "dangling": lambda: path.symlink_to(tmp_path / "no"),
     "fifo": lambda: os.mkfifo(path), "dir": path.mkdir}[kind]()
    for flags in (os.O_RDONLY, os.O_WRONLY | os.O_CREAT):
        if kind == "dir" and flags != os.O_RDONLY:
            continue  # open(2) itself refuses to write a directory (EISDIR)
        with pytest.raises(NotRegularFile) as e:
            opened(path, flags)
        assert str(e.value) == "%s %s" % (path, why) and oserror_str(e.value) == str(e.value)
    assert (tmp_path / "target").read_bytes() == b"secret" and not (tmp_path / "no").exists()


def test_follow_takes_a_symlink_to_a_regular_file_but_not_to_a_fifo(tmp_path):
    (tmp_path / "target").write_bytes(b"mine")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "tofifo").symlink_to(tmp_path / "fifo")
    fd = opened(tmp_path / "link", follow=True)
    assert os.read(fd, 10) == b"mine"
    os.close(fd)
    with pytest.raises(NotRegularFile, match="is not a regular file"):
        opened(tmp_path / "tofifo", follow=True)


def test_one_link_refuses_a_hard_linked_file_and_leaves_it_untouched(tmp_path):
    (tmp_path / "victim").write_bytes(b"precious")
    os.link(tmp_path / "victim", tmp_path / "planted")
    with pytest.raises(NotRegularFile) as e:
        opened(tmp_path / "planted", os.O_WRONLY | os.O_APPEND, one_link=True)
    assert str(e.value) == "%s has more than one link" % (tmp_path / "planted")
    assert (tmp_path / "victim").read_bytes() == b"precious"
    os.close(opened(tmp_path / "planted", os.O_RDONLY))  # without one_link it is a regular file like any other


def test_dir_fd_and_creation(tmp_path):
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = opened("new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640, dir_fd=dfd, one_link=True)
        os.close(fd)
        assert (tmp_path / "new").stat().st_mode & 0o777 == 0o640 & ~os.umask(os.umask(0))
    finally:
        os.close(dfd)


def test_o_trunc_is_refused_before_anything_is_opened(tmp_path):
    (tmp_path / "victim").write_bytes(b"precious")
    (tmp_path / "link").symlink_to(tmp_path / "victim")
    with pytest.raises(ValueError):
        open_regular(tmp_path / "link", os.O_WRONLY | os.O_TRUNC)
    assert (tmp_path / "victim").read_bytes() == b"precious"


def test_a_missing_file_is_the_ordinary_error_and_errno_is_kept(tmp_path):
    with pytest.raises(FileNotFoundError):
        opened(tmp_path / "none")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotRegularFile) as e:
        opened(tmp_path / "fifo")
    assert e.value.errno == 22 and isinstance(e.value, OSError)


def test_is_regular():
    assert is_regular(0o100644) and not is_regular(0o040755) and not is_regular(0o010600) and not is_regular(0o120777)


def test_oserror_str_words_ordinary_errors_as_qmail_does():
    assert oserror_str(FileNotFoundError(2, "x")) == "file does not exist"
    assert oserror_str(OSError("our own text")) == "our own text"


@pytest.mark.parametrize("planted", ["symlink", "hardlink", "dangling"])
def test_create_afresh_removes_a_planted_link_and_never_writes_through_it(tmp_path, planted):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    tmp = tmp_path / "name.tmp"
    {"symlink": lambda: tmp.symlink_to(victim), "hardlink": lambda: os.link(victim, tmp),
     "dangling": lambda: tmp.symlink_to(tmp_path / "made")}[planted]()
    fd = create_afresh(str(tmp), 0o640)
    try:
        os.write(fd, b"new")
    finally:
        os.close(fd)
    assert victim.read_bytes() == b"precious" and not (tmp_path / "made").exists()
    assert not tmp.is_symlink() and tmp.read_bytes() == b"new" and os.stat(tmp).st_nlink == 1
