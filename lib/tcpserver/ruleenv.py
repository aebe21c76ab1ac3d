"""A connection's environment when its rule sets many variables: made, and put back, in one pass.

glibc's setenv and unsetenv each scan the whole environment, so a rule of 10,000 variables cost a quarter of a
second to set and as much again to take out of a reused worker. Past BULK changes the process's environment is
instead replaced at once: a new `environ` array (and os.environ's dict with it), as an exec would be given one.
Where ctypes or glibc's `environ` is missing, every variable is set one by one as before.
See qmail-tcpserver(8).
"""

from __future__ import annotations

import os

from pyqmail.lib.util import envsnapshot

MYPY = False
if MYPY:  # typing only: never imported at run time
    import ctypes
    from collections.abc import Iterable, Sequence, Set

    Change = tuple[bytes, bytes | None]  # (name, value); None unsets

BULK = 64  # changes past which the environment is replaced in one pass (below it setenv costs less)
STRING_MAX = 32 * 4096  # Linux's MAX_ARG_STRLEN: execve(2) refuses a longer argument or NAME=value (E2BIG)
POINTER = 8  # bytes execve counts for each argument's and variable's pointer (64-bit)

_held: list[object] = []  # the array and strings `environ` points to while they are ours (ctypes frees the rest)
_environ: list[ctypes.c_void_p | None] = []  # glibc's `environ` variable, once looked up (None: not available)


def environ_variable() -> ctypes.c_void_p | None:
    """Return the C library's `environ` as a ctypes variable, or None where it cannot be reached."""
    if not _environ:
        try:
            import ctypes
            _environ.append(ctypes.c_void_p.in_dll(ctypes.CDLL(None), "environ"))
        except (ImportError, OSError, ValueError, AttributeError):
            _environ.append(None)
    return _environ[0]


def install(wanted: dict[bytes, bytes], data: dict[bytes, bytes]) -> bool:
    """Make the process environment exactly wanted in one pass: a new `environ` array, and data (os.environ's
    dict) updated in place; False (nothing changed) if `environ` cannot be reached."""
    variable = environ_variable()
    if variable is None:
        return False
    import ctypes
    import itertools
    entries = [name + b"=" + value for name, value in wanted.items()]
    strings = ctypes.create_string_buffer(b"\0".join(entries) + b"\0")
    starts = itertools.accumulate((len(e) + 1 for e in entries[:-1]), initial=ctypes.addressof(strings))
    array = (ctypes.c_void_p * (len(entries) + 1))(*(starts if entries else ()))  # ends with NULL
    variable.value = ctypes.addressof(array)
    # the previous array may be dropped now: setenv copies the current array, never reads an abandoned one
    _held[:] = [strings, array]
    data.clear()
    data.update(wanted)
    return True


def applied(base: dict[bytes, bytes], changes: Iterable[Change]) -> dict[bytes, bytes]:
    """Return a copy of base with the changes made in order (the last value of a name counts)."""
    wanted = dict(base)
    for name, value in changes:
        if value is None:
            wanted.pop(name, None)
        else:
            wanted[name] = value
    return wanted


def put(changes: Sequence[Change]) -> None:
    """Apply the changes in order to the environment (os.environ and the C library's), as setenv and unsetenv
    would."""
    data = envsnapshot._raw()
    if data is not None and len(changes) > BULK and install(applied(data, changes), data):
        return
    environb = os.environb
    for name, value in changes:
        if value is None:
            environb.pop(name, None)
        elif environb.get(name) != value:
            environb[name] = value


def restore(saved: dict[bytes, bytes], keep: Set[bytes] = frozenset()) -> None:
    """envsnapshot.restore, in one pass when more than BULK variables are to go (a rule's many)."""
    data = envsnapshot._raw()
    if data is not None and len(data) > len(saved) + BULK:
        if install(applied(saved, [(name, data.get(name)) for name in keep]), data):
            return
    envsnapshot.restore(saved, keep)


def exec_refuses(argv: Iterable[str]) -> bool:
    """True if execve(2) would refuse argv with this environment (E2BIG: a string over STRING_MAX, or all of them
    and their pointers over ARG_MAX), as it refuses tcpserver's exec of the program."""
    data = envsnapshot._raw()
    if data is not None:
        sizes = [len(name) + len(value) + 2 for name, value in data.items()]
    else:
        sizes = [len(os.fsencode(name)) + len(os.fsencode(value)) + 2 for name, value in os.environ.items()]
    sizes += [len(os.fsencode(arg)) + 1 for arg in argv]
    try:
        limit = os.sysconf("SC_ARG_MAX")
    except (OSError, ValueError):
        limit = 1 << 17  # the kernel's smallest
    return max(sizes, default=0) > STRING_MAX or sum(sizes) + POINTER * len(sizes) > limit
