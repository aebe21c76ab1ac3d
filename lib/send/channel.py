"""qmail-send's two delivery channels, in qmail's order (local first, as chanaddr[] in qmail-send.c)."""

LOCAL = "local"
REMOTE = "remote"
CHANNELS = (LOCAL, REMOTE)
