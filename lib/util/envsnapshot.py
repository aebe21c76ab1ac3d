"""The environment of a reused worker, put back after each connection or delivery with few putenv calls;
and the environment as the process was given it, before the interpreter's locale coercion changed it."""

from __future__ import annotations

import os

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Set


def _raw() -> dict[bytes, bytes] | None:
    """Return os.environ's own dict of bytes (CPython's POSIX _Environ), or None where it has none."""
    data = getattr(os.environ, "_data", None)
    return data if isinstance(data, dict) and hasattr(os, "environb") else None


def take() -> dict[bytes, bytes]:
    """Return a copy of the environment as it is now (names and values as bytes), for restore()."""
    data = _raw()
    if data is not None:
        return dict(data)
    return {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}


def restore(saved: dict[bytes, bytes], keep: Set[bytes] = frozenset()) -> None:
    """Make the environment equal to saved again, setting or unsetting only the variables that differ:
    a whole clear() and update() costs a putenv or unsetenv per variable and Python-level mapping code
    on every connection. The variables named in keep (bytes) are left as they are: the caller sets or
    unsets every one of them before the next use."""
    data = _raw()
    if data is None:
        wanted = {os.fsdecode(k): os.fsdecode(v) for k, v in saved.items()}
        wanted.update((k, v) for k, v in os.environ.items() if os.fsencode(k) in keep)
        if os.environ != wanted:
            os.environ.clear()
            os.environ.update(wanted)
        return
    if data == saved:
        return
    env = os.environb
    for key in [k for k in data if k not in saved and k not in keep]:
        del env[key]
    for key, value in saved.items():
        if key not in keep and data.get(key) != value:
            env[key] = value


# what CPython's locale coercion (PEP 538) puts into LC_CTYPE when it finds the C locale at start-up
COERCED = frozenset((b"C.UTF-8", b"C.utf8", b"UTF-8"))
EXEC_ENVIRON = "/proc/self/environ"  # Linux: the block execve gave this process, untouched by setenv()
ENVIRON_MAX = 1 << 22  # bytes read from it at most (the kernel bounds it near ARG_MAX; more: give up)


def block_value(block: bytes, name: bytes) -> bytes | None:
    """Return name's value in an environment block (NUL-separated NAME=value, the first one counts), None if unset."""
    prefix = name + b"="
    for entry in block.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):]
    return None


def read_exec_environ(path: str = EXEC_ENVIRON) -> bytes | None:
    """Return the environment block this process was exec'd with, or None if it cannot be read in full."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        parts: list[bytes] = []
        size = 0
        while size <= ENVIRON_MAX:
            data = os.read(fd, 65536)
            if not data:
                return b"".join(parts)
            parts.append(data)
            size += len(data)
        return None
    except OSError:
        return None
    finally:
        os.close(fd)


def undo_locale_coercion(path: str = EXEC_ENVIRON) -> None:
    """Put LC_CTYPE back as this process was given it, if the interpreter set it (PEP 538 coercion):
    children must get the administrator's environment, not one Python invented."""
    env = os.environb
    value = env.get(b"LC_CTYPE")
    if value not in COERCED or env.get(b"LC_ALL"):
        return  # CPython coerces only to these values, and never when LC_ALL is set
    block = read_exec_environ(path)
    if block is None:
        return  # no /proc: nothing tells what was given, so it is left as it is
    given = block_value(block, b"LC_CTYPE")
    if given is None:
        del env[b"LC_CTYPE"]
    elif given != value:
        env[b"LC_CTYPE"] = given
