"""qmail-send's two delivery channels, in qmail's order (local first, as chanaddr[] in qmail-send.c)."""

from __future__ import annotations

LOCAL = "local"
REMOTE = "remote"
CHANNELS = (LOCAL, REMOTE)
