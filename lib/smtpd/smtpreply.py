"""qmail-smtpd's replies, byte for byte (see qmail-smtpd(8)), and the session's way out."""

from __future__ import annotations

STRAY_NEWLINE = b"451 See https://cr.yp.to/docs/smtplf.html.\r\n"
REPLY = {
    "syntax": b"555 syntax error (#5.5.4)\r\n",
    "wantmail": b"503 MAIL first (#5.5.1)\r\n",
    "wantrcpt": b"503 RCPT first (#5.5.1)\r\n",
    "bmf": b"553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)\r\n",
    "nogateway": b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n",
    "unimpl": b"502 unimplemented (#5.5.1)\r\n",
    "ok": b"250 ok\r\n",
    "size": b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n",
    "hops": b"554 too many hops, this message is looping (#5.4.6)\r\n",
    "qqt": b"451 qqt failure (#4.3.0)\r\n",
    "toomany": b"452 sorry, too many recipients (#4.5.3)\r\n",
    "nomailbox": b"550 sorry, no mailbox here by that name (#5.1.1)\r\n",
    "controls": b"421 unable to read controls (#4.3.0)\r\n",
    "ipme": b"421 unable to figure out my IP addresses (#4.3.0)\r\n",
    "longline": b"500 command line too long (#5.5.2)\r\n",
    "ctlmail": b"553 sorry, that sender address contains a control character (#5.1.7)\r\n",
    "ctlrcpt": b"553 sorry, that recipient address contains a control character (#5.1.3)\r\n",
}


class Quit(Exception):
    """End the session with this exit code (replies already queued)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
