"""Replace a cdb atomically, as qmail's qmail-newu and qmail-newmrh do: write name.tmp, fsync, rename.

Unlike qmail, name.tmp is removed and created afresh (O_EXCL, O_NOFOLLOW): a symlink or hard link planted
there never makes a root-run builder write or truncate another file."""

from __future__ import annotations

import os

from pyqmail.lib.util.exits import TEMP_FAILURE, Exit
from pyqmail.lib.util.regularfile import create_afresh

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable


def is_ours(fd: int, temp: str) -> bool:
    """True if temp still names the file open on fd (a second builder run at once unlinks and recreates it)."""
    try:
        st = os.lstat(temp)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def replace(temp: str, target: str, records: Iterable[tuple[bytes, bytes]], open_text: str, write_text: str) -> None:
    """Write (key, value) records to temp, fsync and close it, rename it over target; Exit 111 on failure.

    open_text and write_text are the program's own `fatal:` texts for creating and for writing temp."""
    import cdbx
    try:
        fd = create_afresh(temp, 0o644)
    except OSError:
        raise Exit(TEMP_FAILURE, "fatal: " + open_text)
    try:
        maker = cdbx.CDB.make(fd, close=False)
        for key, value in records:
            maker.add(key, value)
        maker.commit().close()
        os.fsync(fd)
    except (OSError, ValueError):
        os.close(fd)
        raise Exit(TEMP_FAILURE, "fatal: " + write_text)
    ours = is_ours(fd, temp)
    try:
        os.close(fd)  # NFS reports write errors at close
    except OSError:
        raise Exit(TEMP_FAILURE, "fatal: " + write_text)
    try:
        if not ours:  # another run removed ours and is writing its own there: leave the table to it
            raise OSError("%s was replaced meanwhile" % temp)
        os.rename(temp, target)
    except OSError:
        raise Exit(TEMP_FAILURE, "fatal: unable to move %s to %s" % (temp, target))
