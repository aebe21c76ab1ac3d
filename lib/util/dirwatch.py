"""Waiting for a directory to change: inotify through pyinotify (imported lazily: only long-running watchers
use it), else a plain sleep; either way the wait ends after its timeout."""

from __future__ import annotations

import time


class DirWatch:
    """Wakes a loop when one of the named inotify events happens in a directory, or after a timeout."""

    def __init__(self, directory: str | bytes, events: tuple[str, ...]) -> None:
        try:
            import pyinotify
        except ImportError:
            self.notifier = None
            return
        mask = 0
        for name in events:
            mask |= getattr(pyinotify, name)
        manager = pyinotify.WatchManager()
        self.notifier = pyinotify.Notifier(manager, pyinotify.ProcessEvent())
        path = directory.decode("utf-8", "surrogateescape") if isinstance(directory, bytes) else directory
        manager.add_watch(path, mask)

    def wait(self, timeout: float) -> None:
        """Sleep until an event arrives or timeout seconds pass."""
        if self.notifier is None:
            time.sleep(timeout)
        elif self.notifier.check_events(int(timeout * 1000)):
            self.notifier.read_events()
            self.notifier.process_events()
