"""QMQP client access: address patterns, their cdb form, and lookups that cost a few cdb gets.

The cdb (control/qmqpclients.cdb) holds one key per pattern, the network in canonical text with
its prefix length (`10.1.0.0/16`, `::1/128`), valued `+` (allow) or `-` (deny), plus three
meta keys: `#format` (FORMAT), `#lengths4` and `#lengths6` (the prefix lengths in use, longest
first, comma separated). A lookup tries only those lengths, longest first: the most specific
pattern wins, whatever the order of the source lines.
"""

from __future__ import annotations

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Callable, Iterable
    from typing import Protocol

    class Cdb(Protocol):
        """What callers use of an open cdbx.CDB."""

        def get(self, key: bytes, /) -> bytes | None: ...

        def close(self) -> None: ...

    Get = Callable[[bytes], bytes | None]  # a table's lookup: key -> value, None when absent
    Pattern = tuple[bytes, int, int, int]  # (verdict, family, network, prefix length)

FORMAT = b"pyqmail-qmqpclients 1"
ALLOW, DENY = b"+", b"-"
LOOPBACK = ((4, 127 << 24, 8), (6, 1, 128))
BITS = {4: 32, 6: 128}


class PatternError(ValueError):
    """A pattern line is not an address, a network or a tcprules prefix."""


class TableError(Exception):
    """The compiled table is unreadable or not ours: callers fail closed."""


def _show(text: bytes) -> str:
    """Return a pattern as printable text for an error message."""
    return text.decode("latin-1").encode("ascii", "backslashreplace").decode("ascii")


def _ipv4(text: bytes) -> int | None:
    """Return the 32-bit value of a strict dotted quad (no leading zeros), or None."""
    parts = text.split(b".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not part or len(part) > 3 or not part.isdigit() or not part.isascii():
            return None
        if len(part) > 1 and part[:1] == b"0" or int(part) > 255:
            return None
        value = value << 8 | int(part)
    return value


def parse_address(text: bytes) -> tuple[int, int]:
    """Return (family, value) for an IPv4 or IPv6 address; IPv4-mapped IPv6 counts as IPv4."""
    text = text.strip()
    value = _ipv4(text)
    if value is not None:
        return 4, value
    if b":" not in text or len(text) > 64:
        raise PatternError("not an IP address: %s" % _show(text))
    text = text.split(b"%", 1)[0]  # a link-local scope is not part of the address
    import _socket  # here, not at the top: an IPv4 client's per-connection program does without it
    try:
        packed = _socket.inet_pton(_socket.AF_INET6, text.decode("ascii"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise PatternError("not an IP address: %s" % _show(text))
    value = int.from_bytes(packed, "big")
    if value >> 32 == 0xFFFF:
        return 4, value & 0xFFFFFFFF
    return 6, value


def _prefix(text: bytes) -> tuple[int, int, int] | None:
    """Return (4, value, bits) for a tcprules prefix like `10.` or `10.1.2.`, or None."""
    if not text.endswith(b".") or b":" in text:
        return None
    parts = text[:-1].split(b".")
    if not 1 <= len(parts) <= 3:
        return None
    value = _ipv4(b".".join(parts + [b"0"] * (4 - len(parts))))
    if value is None:
        return None
    return 4, value, 8 * len(parts)


def parse_pattern(line: bytes) -> Pattern:
    """Return (verdict, family, network, bits) for one pattern line (`!` denies)."""
    text = line.strip()
    verdict = ALLOW
    if text.startswith(b"!"):
        verdict, text = DENY, text[1:].strip()
    prefix = _prefix(text)
    if prefix is not None:
        return (verdict,) + prefix
    address, slash, length = text.partition(b"/")
    family, value = parse_address(address)
    bits = BITS[family]
    if slash:
        if b":" in address and family == 4:
            raise PatternError("use the IPv4 form for IPv4-mapped networks: %s" % _show(text))
        if not length.isdigit() or not length.isascii() or len(length) > 3 or int(length) > bits:
            raise PatternError("bad prefix length: %s" % _show(text))
        bits = int(length)
        if value & ((1 << (BITS[family] - bits)) - 1):
            raise PatternError("host bits set in network: %s" % _show(text))
    return verdict, family, value, bits


def network_key(family: int, value: int, bits: int) -> bytes:
    """Return the canonical cdb key of a network: `a.b.c.d/n` or `<inet_ntop form>/n`."""
    value &= ~((1 << (BITS[family] - bits)) - 1)
    if family == 4:
        text = "%d.%d.%d.%d" % (value >> 24, value >> 16 & 255, value >> 8 & 255, value & 255)
    else:
        import _socket
        text = _socket.inet_ntop(_socket.AF_INET6, value.to_bytes(16, "big"))
    return b"%s/%d" % (text.encode("ascii"), bits)


def compile_patterns(lines: Iterable[tuple[int, bytes]]) -> list[tuple[bytes, bytes]]:
    """Return the cdb records (key, value) for pattern lines; raise PatternError with the line number."""
    table: dict[bytes, bytes] = {}
    lengths: dict[int, set[int]] = {4: set(), 6: set()}
    for number, line in lines:
        try:
            verdict, family, value, bits = parse_pattern(line)
        except PatternError as e:
            raise PatternError("line %d: %s" % (number, e))
        key = network_key(family, value, bits)
        if table.get(key, verdict) != verdict:
            raise PatternError("line %d: %s is both allowed and denied" % (number, key.decode()))
        table[key] = verdict
        lengths[family].add(bits)
    records = [(b"#format", FORMAT)]
    for family in (4, 6):
        records.append((b"#lengths%d" % family, b",".join(b"%d" % n for n in sorted(lengths[family], reverse=True))))
    return records + sorted(table.items())


def _lengths(get: Get, family: int) -> list[int]:
    """Return the prefix lengths the table uses for a family, longest first."""
    raw = get(b"#lengths%d" % family)
    if raw is None:
        raise TableError("table has no prefix-length record")
    if not raw:
        return []
    try:
        lengths = [int(n) for n in raw.split(b",")]
    except ValueError:
        raise TableError("table has a bad prefix-length record")
    if any(not 0 <= n <= BITS[family] for n in lengths):
        raise TableError("table has a bad prefix-length record")
    return lengths


def lookup(get: Get, address: bytes) -> bytes | None:
    """Return ALLOW, DENY or None (no pattern matches) for an address, using get(key) -> bytes|None."""
    if get(b"#format") != FORMAT:
        raise TableError("not a qmqpclients table (no #format %s)" % FORMAT.decode())
    try:
        family, value = parse_address(address)
    except PatternError:
        return None
    for bits in _lengths(get, family):
        verdict = get(network_key(family, value, bits))
        if verdict is not None:
            if verdict not in (ALLOW, DENY):
                raise TableError("table has a bad verdict")
            return verdict
    return None


_loopback: dict[bytes, bool] = {}  # address -> is_loopback's answer, for a reused worker's next connections


def is_loopback(address: bytes) -> bool:
    """Return True for 127.0.0.0/8 and ::1 (IPv4-mapped forms included)."""
    if address in _loopback:
        return _loopback[address]
    try:
        family, value = parse_address(address)
        answer = any(family == f and value >> (BITS[f] - bits) == net >> (BITS[f] - bits)
                     for f, net, bits in LOOPBACK)
    except PatternError:
        answer = False
    if len(_loopback) >= 256:
        _loopback.clear()
    _loopback[address] = answer
    return answer


class NotCdb(Exception):
    """The file opened but is not a cdb."""


def open_cdb(filename: str) -> Cdb:
    """Return an open cdbx.CDB; OSError if the file cannot be opened or is not a regular file (a FIFO would
    hold the connection for ever), NotCdb if it is no cdb."""
    import posix  # not os: a client without a table must not pay its import (start-up cost, lib/config/control)
    from pyqmail.lib.util.regularfile import open_regular
    fd = open_regular(filename, follow=True)
    try:
        import cdbx
        return cdbx.CDB(fd, close=True)
    except Exception as e:  # cdbx reports a corrupt file as OSError("Format Error")
        posix.close(fd)
        raise NotCdb(str(e))


def open_table(filename: str) -> Cdb | None:
    """Return an open cdb, or None if the file does not exist; other trouble raises TableError."""
    try:
        return open_cdb(filename)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise TableError("cannot open %s: %s" % (filename, e.strerror))
    except NotCdb as e:
        raise TableError("cannot read %s: %s" % (filename, e))


def authorize(address: bytes, marked: bool, filename: str) -> tuple[bool, str]:
    """Decide whether a client may use the service: (allowed, why); TableError means fail closed."""
    if marked:
        return True, "QMQPCLIENT set"
    table = open_table(filename)
    if table is None:
        return is_loopback(address), "loopback default"
    try:
        verdict = lookup(table.get, address)
    except OSError as e:
        raise TableError("cannot read %s: %s" % (filename, e))
    finally:
        table.close()
    return verdict == ALLOW, "qmqpclients"


def in_list(address: bytes, lines: Iterable[bytes]) -> bool:
    """Return True when the most specific of a small pattern list (debug peers) allows address."""
    valid = []
    for line in lines:
        try:
            parse_pattern(line)
        except PatternError:
            continue  # a typo in a logging list must not break the service
        valid.append((0, line))
    try:
        table = dict(compile_patterns(valid))
    except PatternError:
        return False
    return lookup(table.get, address) == ALLOW
