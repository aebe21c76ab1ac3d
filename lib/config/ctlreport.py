"""qmail-showctl's descriptions of control files (qmail-showctl(8)), as pure functions over the files' bytes.

Each function takes the file's bytes, or None when it does not exist, and returns the entry's text,
starting with the blank line and `<name>: ` that precede every entry.
"""

from __future__ import annotations

from pyqmail.lib.config.control import first_line, parse_list as lines, scan_ulong

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable

# (kind, name, default, pre, post): qmail-showctl's order and texts; "str-me" defaults to control/me
ENTRIES: tuple[tuple[str, str, str | None, str | None, str | None], ...] = (
    ("list", "badmailfrom", "Any MAIL FROM is allowed.", "", " not accepted in MAIL FROM."),
    ("str", "bouncefrom", "MAILER-DAEMON", "Bounce user name is ", ""),
    ("str-me", "bouncehost", "bouncehost", "Bounce host name is ", ""),
    ("int", "concurrencylocal", "10", "Local concurrency is ", ""),
    ("int", "concurrencyremote", "20", "Remote concurrency is ", ""),
    ("int", "databytes", "0", "SMTP DATA limit is ", " bytes"),
    ("str-me", "defaultdomain", "defaultdomain", "Default domain name is ", ""),
    ("str-me", "defaulthost", "defaulthost", "Default host name is ", ""),
    ("str-me", "doublebouncehost", "doublebouncehost", "2B recipient host: ", ""),
    ("str", "doublebounceto", "postmaster", "2B recipient user: ", ""),
    ("str-me", "envnoathost", "envnoathost", "Presumed domain name is ", ""),
    ("str-me", "helohost", "helohost", "SMTP client HELO host name is ", ""),
    ("str-me", "idhost", "idhost", "Message-ID host name is ", ""),
    ("str-me", "localiphost", "localiphost", "Local IP address becomes ", ""),
    ("list", "locals", "Messages for me are delivered locally.", "Messages for ", " are delivered locally."),
    ("str", "me", "undefined! Uh-oh", "My name is ", ""),
    ("list", "percenthack", "The percent hack is not allowed.", "The percent hack is allowed for user%host@", "."),
    ("str-me", "plusdomain", "plusdomain", "Plus domain name is ", ""),
    ("list", "qmqpservers", "No QMQP servers.", "QMQP server: ", "."),
    ("int", "queuelifetime", "604800", "Message lifetime in the queue is ", " seconds"),
    ("list", "rcpthosts", "SMTP clients may send messages to any recipient.",
     "SMTP clients may send messages to recipients at ", "."),
    ("more", "morercpthosts", None, None, None),
    ("cdb", "morercpthosts.cdb", None, None, None),
    ("str-me", "smtpgreeting", "smtpgreeting", "SMTP greeting: 220 ", ""),
    ("list", "smtproutes", "No artificial SMTP routes.", "SMTP route: ", ""),
    ("int", "timeoutconnect", "60", "SMTP client connection timeout is ", " seconds"),
    ("int", "timeoutremote", "1200", "SMTP client data timeout is ", " seconds"),
    ("int", "timeoutsmtpd", "1200", "SMTP server data timeout is ", " seconds"),
    ("list", "virtualdomains", "No virtual domains.", "Virtual domain: ", ""),
)
KNOWN = frozenset(entry[1] for entry in ENTRIES)
MORE_WITH_RCPTHOSTS = ("No effect.", "SMTP clients may send messages to recipients at ", ".")
MORE_WITHOUT_RCPTHOSTS = ("No rcpthosts; morercpthosts is irrelevant.",
                          "No rcpthosts; doesn't matter that morercpthosts has ", ".")


def safe(data: bytes) -> bytes:
    """Replace bytes outside 32..126 with `?`."""
    return bytes(b if 32 <= b <= 126 else 63 for b in data)


def scan_uint(line: bytes) -> int | None:
    """Return control_readint's value (leading digits, as a C int clamped at 0), or None to use the default."""
    value = scan_ulong(line, None)
    if value is None:
        return None
    value &= 0xFFFFFFFF
    return 0 if value >= 1 << 31 else value


def start(name: str) -> bytes:
    """Return the blank line and `<name>: ` that open every entry."""
    return b"\n" + name.encode() + b": "


def int_entry(name: str, data: bytes | None, default: str, pre: str, post: str) -> bytes:
    """Describe an integer control."""
    value = None if data is None else scan_uint(first_line(data))
    text = ("(Default.) " + pre + default if value is None else pre + str(value)) + post + ".\n"
    return start(name) + text.encode()


def str_entry(name: str, data: bytes | None, default: str, pre: str, me: bytes | None = None) -> bytes:
    """Describe a one-line control; me replaces the default for controls that default to control/me."""
    if data is None:
        value = me if me is not None else default.encode()
        return start(name) + b"(Default.) " + pre.encode() + safe(value) + b".\n"
    return start(name) + pre.encode() + safe(first_line(data)) + b".\n"


def list_entry(name: str, data: bytes | None, default: str, pre: str, post: str) -> bytes:
    """Describe a list control: one line per entry, or the default text."""
    if data is None:
        return start(name) + b"(Default.) " + default.encode() + b"\n"
    body = b"".join(pre.encode() + safe(line) + post.encode() + b"\n" for line in lines(data))
    return start(name) + b"\n" + body


def cdb_entry(mrh_mtime: float | None, cdb_mtime: float | None) -> bytes:
    """Describe morercpthosts.cdb from the two files' mtimes (None when a file is absent)."""
    if mrh_mtime is None:
        text = "(Default.) No effect." if cdb_mtime is None else "Oops! morercpthosts.cdb exists but morercpthosts doesn't."
    elif cdb_mtime is None:
        text = "Oops! morercpthosts exists but morercpthosts.cdb doesn't."
    elif int(mrh_mtime) > int(cdb_mtime):
        text = "Oops! morercpthosts.cdb is older than morercpthosts."
    else:
        text = "Modified recently enough; hopefully up to date."
    return start("morercpthosts.cdb") + text.encode() + b"\n"


def unknown_entry(name: str) -> bytes:
    """Describe a file qmail does not use."""
    return start(name) + b"I have no idea what this file does.\n"


def header(home: str, brk: str, patrn: int, spawn: int, split: int, uids: Iterable[int], gids: Iterable[int]) -> bytes:
    """Return the lines before the control files: compile-time settings and the qmail ids."""
    return ("qmail home directory: %s.\nuser-ext delimiter: %s.\npaternalism (in decimal): %d.\n"
            "silent concurrency limit: %d.\nsubdirectory split: %d.\nuser ids: %s.\ngroup ids: %s.\n" % (
                home, brk, patrn, spawn, split, ", ".join(map(str, uids)), ", ".join(map(str, gids)))
            ).encode("utf-8", "surrogateescape")
