"""qmail-send's bounces: bounce/N entries, the bounce message and its envelope (reference §2.6)."""

from collections import namedtuple

from pyqmail.lib.send import verp
from pyqmail.lib.queue.queue import date822
from pyqmail.lib.rfc822.quote import line_safe, quote, quote2

DOUBLE_BOUNCE_SENDER = b"#@[]"
SINGLE, DOUBLE, TRIPLE = "single", "double", "triple"

BounceControls = namedtuple("BounceControls", "bouncefrom bouncehost doublebounceto")
BounceControls.__doc__ = "bouncefrom, bouncehost and doublebounceto as qmail-send holds them."
Bounce = namedtuple("Bounce", "kind sender recipient original")
Bounce.__doc__ = "What to inject: kind, envelope sender, envelope recipient, original sender (VERP-reduced)."


def controls_from(readline, me):
    """Build BounceControls with qmail-send's defaults from a readline(name) → bytes-or-None."""
    def rldef(name, flagme, default):
        value = readline(name)
        if value is None and flagme and me is not None:
            return me
        return default if value is None else value
    doublebouncehost = rldef("doublebouncehost", True, b"doublebouncehost")
    doublebounceto = rldef("doublebounceto", False, b"postmaster") + b"@" + doublebouncehost
    return BounceControls(rldef("bouncefrom", False, b"MAILER-DAEMON"),
                          rldef("bouncehost", True, b"bouncehost"), doublebounceto)


def entry(recip, report, strip_prepend=lambda r: r):
    """Return the bounce/N text for one permanently failed recipient."""
    text = bytearray(b"<" + strip_prepend(recip).replace(b"\n", b"_") + b">:\n" + report)
    if report and not report.endswith(b"\n"):
        text += b"\n"
    # qmail scans backwards and turns the second newline of each pair into `/`
    for pos in range(len(text) - 2, 0, -1):
        if text[pos] == 0x0A and text[pos - 1] == 0x0A:
            text[pos] = ord("/")
    return bytes(text + b"\n")


def plan(sender, controls):
    """Return the Bounce for a message whose info/N holds sender (TRIPLE: discard, queue nothing)."""
    original = verp.bounce_recipient(sender)
    if original == DOUBLE_BOUNCE_SENDER:
        return Bounce(TRIPLE, None, None, original)
    if original:
        return Bounce(SINGLE, b"", original, original)
    return Bounce(DOUBLE, DOUBLE_BOUNCE_SENDER, controls.doublebounceto, original)


def header(bounce, controls, now):
    """Return the bounce's header, blank line and opening paragraph."""
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


def message(bounce, controls, now, bounce_text, mess):
    """Return the whole bounce message handed to qmail-queue (which adds its Received line)."""
    separator = (b"--- Below this line is a copy of the message.\n\n" if bounce.kind == SINGLE
                 else b"--- Below this line is the original bounce.\n\n")
    return (header(bounce, controls, now) + bounce_text + separator
            + b"Return-Path: <" + line_safe(quote2(bounce.original)) + b">\n" + mess)
