"""qreceipt: answer a Notice-Requested-Upon-Delivery-To header naming this address with a notice."""

import os

from pyqmail.lib.rfc822 import addrlist, headerbody
from pyqmail.lib.util.program import main
from pyqmail.lib.rfc822.quote import line_safe, quote2
from pyqmail.lib.local.runchild import queue_message, say_exit
from pyqmail.lib.util.exits import TEMP_FAILURE

USAGE = "qreceipt: usage: qreceipt deliveryaddress"
NOTICE_FIELD = b"notice-requested-upon-delivery-to"


def scan(target, fields):
    """Return (receipt wanted?, Message-ID field or None) from the header fields."""
    wanted, message_id = False, None
    for field in fields:
        name = headerbody.field_name(field)
        if name == b"message-id":
            message_id = field
        elif name == NOTICE_FIELD:
            value = field[headerbody.field_value_start(field):]
            wanted = wanted or target in addrlist.addresses(value)
    return wanted, message_id


def notice(target, sender, message_id):
    """Return the success notice qreceipt sends back to the sender (a CR, LF or NUL of it written as `_`, as
    qmail-local writes Return-Path: the address cannot add header fields)."""
    quoted = line_safe(quote2(sender))
    text = (b"From: DELIVERY NOTICE SYSTEM <" + quoted + b">\nTo: <" + quoted + b">\n"
            b"Subject: success notice\n\nHi! This is the qreceipt program. Your message was delivered to the\n"
            b"following address: " + target + b". Thanks for asking.\n")
    if message_id is not None:
        text += b"Your " + message_id
    return text


def header_fields(fd):
    """Yield the message's header fields."""
    for kind, data in headerbody.split(headerbody.lines(fd)):
        if kind != "field":
            return
        yield data


def body(argv):
    """Queue a notice if the message asks for one for this address; exit 0 when none is wanted."""
    if not argv:
        raise say_exit(100, USAGE)
    sender = os.environb.get(b"SENDER")
    if sender is None:
        raise say_exit(100, USAGE)
    target = os.fsencode(argv[0])
    try:
        wanted, message_id = scan(target, header_fields(0))
    except OSError:
        raise say_exit(111, "qreceipt: fatal: read error")
    if not wanted or sender in (b"", b"#@[]", b"<>"):  # `<>`: the null sender as a script may spell it
        return 0
    _, result = queue_message("qreceipt", notice(target, sender, message_id), b"", [sender], fd=None)
    if result[:1] == "D":
        raise say_exit(100, "qreceipt: fatal: permanent qmail-queue error")
    if result:
        raise say_exit(111, "qreceipt: fatal: temporary qmail-queue error")
    return 0


def run():
    """Console-script entry point."""
    main("qreceipt", body, crash_code=TEMP_FAILURE)
