"""qmail-send's bounces: bounce/N entries, the bounce message and its envelope (qmail-send(8), reports and done;
qmail-send.c addbounce, injectbounce)."""

from __future__ import annotations

from typing import NamedTuple  # qmail-send only, started once: not a per-message program

from pyqmail.lib.send import verp
from pyqmail.lib.queue.queue import date822
from pyqmail.lib.rfc822.quote import line_safe, quote, quote2

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable

DOUBLE_BOUNCE_SENDER = b"#@[]"
SINGLE, DOUBLE, TRIPLE = "single", "double", "triple"


class BounceControls(NamedTuple):
    """bouncefrom, bouncehost and doublebounceto as qmail-send holds them."""
    bouncefrom: bytes
    bouncehost: bytes
    doublebounceto: bytes


class Bounce(NamedTuple):
    """What to inject: kind, envelope sender, envelope recipient, original sender (VERP-reduced); a TRIPLE
    bounce is discarded: it has neither sender nor recipient."""
    kind: str
    sender: bytes | None
    recipient: bytes | None
    original: bytes


def controls_from(readline: Callable[[str], bytes | None], me: bytes | None) -> BounceControls:
    """Build BounceControls with qmail-send's defaults from a readline(name) → bytes-or-None."""
    def rldef(name: str, flagme: bool, default: bytes) -> bytes:
        value = readline(name)
        if value is None and flagme and me is not None:
            return me
        return default if value is None else value
    doublebouncehost = rldef("doublebouncehost", True, b"doublebouncehost")
    doublebounceto = rldef("doublebounceto", False, b"postmaster") + b"@" + doublebouncehost
    return BounceControls(rldef("bouncefrom", False, b"MAILER-DAEMON"),
                          rldef("bouncehost", True, b"bouncehost"), doublebounceto)


def entry(recip: bytes, report: bytes, strip_prepend: Callable[[bytes], bytes] = lambda r: r) -> bytes:
    """Return the bounce/N text for one permanently failed recipient."""
    text = bytearray(b"<" + strip_prepend(recip).replace(b"\n", b"_") + b">:\n" + report)
    if report and not report.endswith(b"\n"):
        text += b"\n"
    # qmail scans backwards and turns the second newline of each pair into `/`
    for pos in range(len(text) - 2, 0, -1):
        if text[pos] == 0x0A and text[pos - 1] == 0x0A:
            text[pos] = ord("/")
    return bytes(text + b"\n")


def plan(sender: bytes, controls: BounceControls) -> Bounce:
    """Return the Bounce for a message whose info/N holds sender (TRIPLE: discard, queue nothing)."""
    original = verp.bounce_recipient(sender)
    if original == DOUBLE_BOUNCE_SENDER:
        return Bounce(TRIPLE, None, None, original)
    if original:
        return Bounce(SINGLE, b"", original, original)
    return Bounce(DOUBLE, DOUBLE_BOUNCE_SENDER, controls.doublebounceto, original)


def header(bounce: Bounce, controls: BounceControls, now: float) -> bytes:
    """Return the bounce's header, blank line and opening paragraph."""
    assert bounce.recipient is not None  # a TRIPLE bounce is never written
    head = (b"Date: " + date822(now).encode() + b"\n"
            b"From: " + quote(controls.bouncefrom) + b"@" + controls.bouncehost + b"\n"
            b"To: " + line_safe(quote2(bounce.recipient)) + b"\n"
            b"Subject: failure notice\n"
            b"\n"
            b"Hi. This is the qmail-send program at " + controls.bouncehost + b".\n")
    if bounce.kind == SINGLE:
        return head + (b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
                       b"This is a permanent error; I've given up. Sorry it didn't work out.\n\n")
    return head + b"I tried to deliver a bounce message to this address, but the bounce bounced!\n\n"


def trailer(bounce: Bounce) -> bytes:
    """Return what follows the bounce/N text: the separator and the copy's Return-Path line."""
    separator = (b"--- Below this line is a copy of the message.\n\n" if bounce.kind == SINGLE
                 else b"--- Below this line is the original bounce.\n\n")
    return separator + b"Return-Path: <" + line_safe(quote2(bounce.original)) + b">\n"


def message(bounce: Bounce, controls: BounceControls, now: float, bounce_text: bytes, mess: bytes) -> bytes:
    """Return the whole bounce message handed to qmail-queue (which adds its Received line)."""
    return header(bounce, controls, now) + bounce_text + trailer(bounce) + mess
