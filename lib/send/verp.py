"""qmail's VERP senders `pre-@host-@[]` (qmail-send(8), passes and done; qmail-send.c senderadd, injectbounce)."""

from __future__ import annotations

VERP_SUFFIX = b"-@[]"


def delivery_sender(sender: bytes, recip: bytes) -> bytes:
    """Return the sender handed to a spawner: `pre-@host-@[]` + `box@rhost` → `pre-box=rhost@host`."""
    if not sender.endswith(VERP_SUFFIX):
        return sender
    at = sender.rfind(b"@", 0, len(sender) - 4)
    rat = recip.rfind(b"@")
    if at < 0 or rat < 0:
        return sender
    return sender[:at] + recip[:rat] + b"=" + recip[rat + 1:] + b"@" + sender[at + 1:len(sender) - 4]


def bounce_recipient(sender: bytes) -> bytes:
    """Return the sender a bounce goes to: a VERP sender loses its `-@[]` (`pre-@host`)."""
    if sender.endswith(VERP_SUFFIX):
        return sender[:-4]
    return sender
