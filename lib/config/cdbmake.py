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


def _fatal(text: str, why: object, reasons: bool) -> Exit:
    """Return the Exit 111 for `fatal: text`, followed by why's text when reasons (qmail's strerr_die*sys form)."""
    if reasons:
        text = "%s: %s" % (text, getattr(why, "strerror", None) or why)
    return Exit(TEMP_FAILURE, "fatal: " + text)


def replace(temp: str, target: str, records: Iterable[tuple[bytes, bytes]], open_text: str, write_text: str, *,
            move_text: str | None = None, reasons: bool = False) -> None:
    """Write (key, value) records to temp, fsync and close it, rename it over target; Exit 111 on failure.

    open_text, write_text and move_text (default `unable to move <temp> to <target>`) are the program's own `fatal:`
    texts for creating, writing and renaming temp; with reasons each is followed by `: ` and the error's text."""
    import cdbx
    if move_text is None:
        move_text = "unable to move %s to %s" % (temp, target)
    try:
        fd = create_afresh(temp, 0o644)
    except OSError as e:
        raise _fatal(open_text, e, reasons)
    try:
        maker = cdbx.CDB.make(fd, close=False)
        for key, value in records:
            maker.add(key, value)
        maker.commit().close()
        os.fsync(fd)
    except (OSError, ValueError) as e:
        os.close(fd)
        raise _fatal(write_text, e, reasons)
    ours = is_ours(fd, temp)
    try:
        os.close(fd)  # NFS reports write errors at close
    except OSError as e:
        raise _fatal(write_text, e, reasons)
    if not ours:  # another run removed ours and is writing its own there: leave the table to it
        raise _fatal(move_text, "replaced meanwhile", reasons)
    try:
        os.rename(temp, target)
    except OSError as e:
        raise _fatal(move_text, e, reasons)
