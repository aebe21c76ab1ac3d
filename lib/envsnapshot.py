"""The environment of a reused worker, put back after each connection or delivery with few putenv calls."""

import os


def _raw():
    """Return os.environ's own dict of bytes (CPython's POSIX _Environ), or None where it has none."""
    data = getattr(os.environ, "_data", None)
    return data if isinstance(data, dict) and hasattr(os, "environb") else None


def take():
    """Return a copy of the environment as it is now, for restore()."""
    data = _raw()
    return dict(data) if data is not None else dict(os.environ)


def restore(saved, keep=frozenset()):
    """Make the environment equal to saved again, setting or unsetting only the variables that differ:
    a whole clear() and update() costs a putenv or unsetenv per variable and Python-level mapping code
    on every connection. The variables named in keep (bytes) are left as they are: the caller sets or
    unsets every one of them before the next use."""
    data = _raw()
    if data is None:
        kept = {k: v for k, v in os.environ.items() if k.encode() in keep}
        if os.environ != dict(saved, **kept):
            os.environ.clear()
            os.environ.update(saved)
            os.environ.update(kept)
        return
    if data == saved:
        return
    env = os.environb
    for key in [k for k in data if k not in saved and k not in keep]:
        del env[key]
    for key, value in saved.items():
        if key not in keep and data.get(key) != value:
            env[key] = value
