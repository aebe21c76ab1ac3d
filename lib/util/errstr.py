"""qmail's texts for errno values (error_str) and its temporary-error test (error_temp)."""

from __future__ import annotations

import errno as _e
import os

_TEXT = {
    _e.EINTR: "interrupted system call", _e.ENOMEM: "out of memory", _e.ENOENT: "file does not exist",
    _e.ETXTBSY: "text busy", _e.EIO: "input/output error", _e.EEXIST: "file already exists",
    _e.ETIMEDOUT: "timed out", _e.EINPROGRESS: "operation in progress", _e.EAGAIN: "temporary failure",
    _e.EPIPE: "broken pipe", _e.EPERM: "permission denied", _e.EACCES: "access denied",
    _e.ENXIO: "device not configured", _e.E2BIG: "argument list too long", _e.ENOEXEC: "exec format error",
    _e.EBADF: "file descriptor not open", _e.ECHILD: "no child processes", _e.EBUSY: "device busy",
    _e.EXDEV: "cross-device link", _e.ENOTDIR: "not a directory", _e.EISDIR: "is a directory",
    _e.EINVAL: "invalid argument", _e.ENFILE: "system cannot open more files",
    _e.EMFILE: "process cannot open more files", _e.ENOTTY: "not a tty", _e.EFBIG: "file too big",
    _e.ENOSPC: "out of disk space", _e.ESPIPE: "unseekable descriptor", _e.EROFS: "read-only file system",
    _e.EMLINK: "too many links", _e.ELOOP: "symbolic link loop", _e.ENAMETOOLONG: "file name too long",
    _e.ENOTEMPTY: "directory not empty", _e.EDQUOT: "disk quota exceeded", _e.ESTALE: "stale NFS file handle",
    _e.ENOLCK: "no locks available", _e.ENOSYS: "system call not available",
    _e.ECONNREFUSED: "connection refused", _e.EHOSTUNREACH: "host unreachable",
}

_TEMP = {
    _e.EINTR, _e.ENOMEM, _e.ETXTBSY, _e.EIO, _e.ETIMEDOUT, _e.EAGAIN, _e.EDEADLK, _e.EBUSY, _e.ENFILE,
    _e.EMFILE, _e.EFBIG, _e.ENOSPC, _e.ENETDOWN, _e.ENETUNREACH, _e.ENETRESET, _e.ECONNABORTED,
    _e.ECONNRESET, _e.ENOBUFS, _e.ETOOMANYREFS, _e.ECONNREFUSED, _e.EHOSTDOWN, _e.EHOSTUNREACH,
    _e.EUSERS, _e.EDQUOT, _e.ESTALE, _e.ENOLCK,
}


def error_str(code: int | None) -> str:
    """Return qmail's wording for an errno value."""
    if code in _TEXT:
        return _TEXT[code]
    return "unknown error" if code is None else os.strerror(code).lower()


def oserror_str(e: OSError) -> str:
    """qmail's wording for an OSError's errno; an OSError of our own that carries a sentence
    (regularfile.NotRegularFile) or has no errno says its own text instead."""
    sentence = getattr(e, "sentence", None)
    if isinstance(sentence, str):
        return sentence
    return error_str(e.errno) if e.errno else str(e)


def is_temp(code: int | None) -> bool:
    """Return True for the errno values qmail treats as temporary (error_temp.c, the one set every program uses)."""
    return code in _TEMP
