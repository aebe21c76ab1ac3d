"""qmail-inject's header work (qmail-header(5)): rewrite address fields, collect recipients and the
envelope sender, drop Bcc/Return-Path/Content-Length, and make the Date, Message-ID, From and Cc it adds."""

from __future__ import annotations

import os
import time

from pyqmail.lib.rfc822 import token822, token822list
from pyqmail.lib.util.exits import Exit
from pyqmail.lib.rfc822.headerbody import is_field_start
from pyqmail.lib.inject.injectrw import known
from pyqmail.lib.rfc822.quote import has_control, quote2, quote_need
from pyqmail.lib.queue.queue import date822
from pyqmail.lib.rfc822.token822 import AT, ATOM, COLON, COMMENT, LEFT, QUOTE, RIGHT

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Container

    from pyqmail.lib.inject.injectrw import Rewriter
    from pyqmail.lib.rfc822.token822 import Token

    Rewrite = Callable[[list[Token]], list[Token]]  # one address's tokens -> its rewritten tokens

LINELEN = 80
TOKENS_MAX = 1000000  # tokens of one address field: 100,000 plain addresses take 600,000
RESENT = frozenset((b"resent-sender", b"resent-from", b"resent-reply-to", b"resent-to", b"resent-cc",
                    b"resent-bcc", b"resent-date", b"resent-message-id"))
SENDER_FIELDS = frozenset((b"sender", b"from", b"reply-to", b"return-receipt-to", b"errors-to",
                           b"resent-sender", b"resent-from", b"resent-reply-to"))
# recipient fields and the lists their addresses go to
RECIPIENT_FIELDS = {b"to": ("hr", "tocc"), b"cc": ("hr", "tocc"), b"bcc": ("hr",), b"apparently-to": ("hr",),
                    b"resent-to": ("hrr",), b"resent-cc": ("hrr",), b"resent-bcc": ("hrr",)}
DROPPED = frozenset((b"bcc", b"resent-bcc", b"return-path", b"content-length"))
_DELETE_FLAG = {"f": b"from", "i": b"message-id", "s": b"return-path"}


def die(code: int, text: bytes) -> Exit:
    """Return Exit(code) after writing `qmail-inject: fatal: <text>` (bytes, no newline added) to fd 2."""
    try:
        os.write(2, b"qmail-inject: fatal: " + text)
    except OSError:
        pass
    return Exit(code)


SHOWN_MAX = 1000  # bytes of an unparsable line repeated on fd 2: a header field may have megabytes


def unparsable(line: bytes) -> Exit:
    """Return the Exit for a line qmail-inject cannot parse (shown as it is, cut to SHOWN_MAX bytes)."""
    if len(line) > SHOWN_MAX:
        line = line[:SHOWN_MAX] + b"...\n"
    return die(100, b"unable to parse this line:\n" + line)


def visible(address: bytes) -> bytes:
    """Return address with CR, LF and NUL shown as \\r, \\n and \\0, for a message on fd 2."""
    return address.replace(b"\r", b"\\r").replace(b"\n", b"\\n").replace(b"\0", b"\\0")


def refuse_controls(sender: bytes, recipients: list[bytes]) -> None:
    """Exit 100 if an envelope address holds CR, LF or NUL: qmail-local would write it into a header line."""
    for address in [sender] + recipients:
        if has_control(address):
            raise die(100, b"address contains a control character: " + visible(address) + b"\n")


class Header:
    """The state of one message's header while its fields go by."""

    def __init__(self, rewriter: Rewriter, flags: str = "", sender: bytes | None = None,
                 header_recipients: bool = True) -> None:
        self.rw = rewriter
        self.deleted = frozenset(_DELETE_FLAG[f] for f in flags if f in _DELETE_FLAG)
        self.verp_recipient = "r" in flags
        self.sender = sender
        self.header_recipients = header_recipients
        self.seen: set[bytes] = set()
        self.saved = bytearray()  # one buffer, not one object per field: millions of tiny fields stay small
        self.lists: dict[str, list[bytes]] = {"hr": [], "hrr": [], "tocc": []}

    def field(self, field: bytes) -> None:
        """Take one header field (with its newline and continuation lines)."""
        name = known(field)
        if name in self.deleted:
            return
        if name:
            self.seen.add(name)
        elif not is_field_start(field):
            raise die(100, b"invalid header field: " + field)
        if name in RECIPIENT_FIELDS:
            field = self._recipients(field, RECIPIENT_FIELDS[name])
        elif name == b"return-path":
            self._rewrite(field, self._return_path)
        elif name in SENDER_FIELDS:
            field = self._rewrite(field, self.rw.address)
        if name not in DROPPED:
            self.saved += field

    def _rewrite(self, field: bytes, rewrite: Rewrite) -> bytes:
        """Return the field with every address rewritten; a field that does not parse is fatal."""
        out = rewritten(field, rewrite)
        if out is None:
            raise unparsable(field)
        return out

    def _recipients(self, field: bytes, lists: tuple[str, ...]) -> bytes:
        """Rewrite a recipient field, collecting its addresses into lists (right to left, as qmail)."""
        before = {k: len(v) for k, v in self.lists.items()}

        def rewrite(tokens: list[Token]) -> list[Token]:
            tokens = self.rw.address(tokens)
            address = token822.unquote(tokens)
            for name in lists:
                self.lists[name].append(address)
            return tokens
        out = rewritten(field, rewrite)
        if out is not None:
            return out
        if self.header_recipients:
            raise unparsable(field)
        for k, n in before.items():  # recipients come from the arguments: keep the field as it was
            del self.lists[k][n:]
        return field

    def _return_path(self, tokens: list[Token]) -> list[Token]:
        """Rewrite a Return-Path address; the first one seen becomes the envelope sender."""
        tokens = self.rw.address(tokens)
        if self.sender is None:
            self.sender = token822.unquote(tokens) + (b"-@[]" if self.verp_recipient else b"")
        return tokens

    def resent(self) -> bool:
        """True if any Resent- field was seen (the message is being forwarded)."""
        return bool(self.seen & RESENT)

    def recipients(self) -> list[bytes]:
        """Return the header recipients for the envelope: Resent-To/Cc/Bcc if resent, else To/Cc/Bcc/Apparently-To."""
        return self.lists["hrr"] if self.resent() else self.lists["hr"]

    def added(self, now: float, pid: int, idhost: bytes, make_from: Callable[[], bytes],
              followup: Container[bytes] | None = None) -> bytes:
        """Return the fields qmail-inject puts above the saved header, then the saved header."""
        prefix, seen = (b"Resent-", lambda n: b"resent-" + n in self.seen) if self.resent() else \
            (b"", lambda n: n in self.seen)
        out = []
        if not seen(b"date"):
            out.append(prefix + b"Date: " + date822(now).encode() + b"\n")
        if not seen(b"message-id"):
            out.append(prefix + message_id(now, pid, idhost))
        if not seen(b"from"):
            out.append(prefix + make_from())
        if not seen(b"to") and not seen(b"cc"):
            out.append(prefix + b"Cc: recipient list not shown: ;\n")
        if not prefix and followup and b"mail-followup-to" not in self.seen:
            out.append(self.followup(followup))
        return b"".join(out) + self.saved

    def followup(self, lists: Container[bytes]) -> bytes:
        """Return Mail-Followup-To listing the To/Cc addresses if one of them is a known mailing list, else b""."""
        tocc = self.lists["tocc"]
        if not any(a.lower() in lists for a in tocc):
            return b""
        return b"Mail-Followup-To: " + b",\n  ".join(quote2(a) for a in reversed(tocc)) + b"\n"


def rewritten(field: bytes, rewrite: Rewrite) -> bytes | None:
    """Return the field printed again with each address rewritten, or None if it does not parse; a field of
    more than TOKENS_MAX tokens is fatal (exit 100)."""
    try:
        tokens = token822.parse(field, TOKENS_MAX)
    except token822.TooManyTokens:
        name = field.split(b":", 1)[0].rstrip(b" \t")
        raise die(100, b"header field has more than %d address tokens: %s\n" % (TOKENS_MAX, name))
    out = None if tokens is None else token822list.addrlist(tokens, rewrite)
    return None if out is None else token822.unparse(out, LINELEN)


def message_id(now: float, pid: int, idhost: bytes) -> bytes:
    """Return qmail's `Message-ID: <YYYYMMDDHHMMSS.pid.qmail@idhost>` field."""
    t = time.gmtime(now)
    stamp = b"%d%02d%02d%02d%02d%02d" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
    return b"Message-ID: <%s.%d.qmail@%s>\n" % (stamp, pid, idhost)


def _reparse(tokens: list[Token], rewrite: Rewrite) -> list[Token]:
    """Print tokens as a field, parse that again and rewrite its addresses (as qmail does); return the tokens."""
    line = token822.unparse(tokens, LINELEN)
    parsed = token822.parse(line)
    out = None if parsed is None else token822list.addrlist(parsed, rewrite)
    if out is None:
        raise unparsable(line)
    return out


def default_from(rw: Rewriter, user: bytes, host: bytes | None, name: bytes | None, comment_style: bool) -> bytes:
    """Return the From field qmail-inject adds: `"name" <user@host>` or, comment style, `user@host (name)`."""
    tokens: list[Token] = [(ATOM, b"From"), (COLON, b"")]
    angle = name is not None and not comment_style
    if name is not None and angle:
        tokens += [(QUOTE, name), (LEFT, b"")]
    tokens.append((QUOTE if quote_need(user) else ATOM, user))
    if host is not None:
        tokens += [(AT, b""), (ATOM, host)]
    if angle:
        tokens.append((RIGHT, b""))
    if name is not None and comment_style:
        tokens.append((COMMENT, name))
    return token822.unparse(_reparse(tokens, rw.address), LINELEN)


def default_sender(rw: Rewriter, user: bytes, host: bytes | None, flags: str, now: float, pid: int) -> bytes:
    """Return the envelope sender made from QMAILSUSER/QMAILSHOST (or the From user/host) and the m, r VERPs."""
    if "m" in flags:
        user += b"-%d.%d" % (int(now), pid)
    if "r" in flags:
        user += b"-"
    tokens: list[Token] = [(ATOM, b"Return-Path"), (COLON, b""), (QUOTE, user)]
    if host is not None:
        tokens += [(AT, b""), (ATOM, host)]
    found: list[list[Token]] = []

    def rewrite(address: list[Token]) -> list[Token]:
        found.append(rw.address(address))
        return found[-1]
    _reparse(tokens, rewrite)
    if not found:
        return b""
    return token822.unquote(found[0]) + (b"-@[]" if "r" in flags else b"")
