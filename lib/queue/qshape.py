"""qmail-qctl's queue shape: recipients per destination domain by age, as Postfix's qshape (qmail-qctl(8)).

Pure functions: the caller reads the queue and passes (domain, age in seconds) pairs."""

from __future__ import annotations

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable

BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)  # upper limits in minutes; the last column is 1280+
LABELS = tuple(str(m) for m in BUCKETS) + ("%d+" % BUCKETS[-1],)
TOTAL = b"TOTAL"
NO_DOMAIN = b"(none)"


def bucket(age: float) -> int:
    """Return the age column of a recipient age seconds old: the first limit it is younger than, else 1280+.

    A negative age (a clock set back) counts as new."""
    minutes = age / 60.0
    for i, limit in enumerate(BUCKETS):
        if minutes < limit:
            return i
    return len(BUCKETS)


def domain_of(address: bytes) -> bytes:
    """Return the lower-cased domain of an address (after its last @), or NO_DOMAIN (`(none)`) without one."""
    at = address.rfind(b"@")
    domain = address[at + 1:].lower() if at >= 0 else b""
    return domain or NO_DOMAIN


def shape(entries: Iterable[tuple[bytes, float]]) -> dict[bytes, list[int]]:
    """Count (domain, age) entries into {domain: [count per age column]}."""
    rows: dict[bytes, list[int]] = {}
    for domain, age in entries:
        row = rows.setdefault(domain, [0] * len(LABELS))
        row[bucket(age)] += 1
    return rows


def table_rows(rows: dict[bytes, list[int]]) -> list[tuple[bytes, int, list[int]]]:
    """Return [(name, total, columns)]: TOTAL first, then the domains by total descending, then by name."""
    total = [sum(column) for column in zip(*rows.values())] if rows else [0] * len(LABELS)
    out = [(TOTAL, sum(total), total)]
    for domain in sorted(rows, key=lambda d: (-sum(rows[d]), d)):
        out.append((domain, sum(rows[domain]), rows[domain]))
    return out


def printable(data: bytes) -> bytes:
    """Replace bytes outside 33..126 with `_` (a domain is one word in the table)."""
    return bytes(b if 33 <= b <= 126 else 95 for b in data)


def format_table(rows: dict[bytes, list[int]]) -> bytes:
    """Return qshape's table: a header line (`T` and the age columns), then one line per table_rows entry."""
    lines = table_rows(rows)
    width = max([len(printable(name)) for name, _, _ in lines] + [len(TOTAL)])
    cells = [max(len(str(n)) for n in [total] + columns) for _, total, columns in lines]
    col = max([5] + cells)
    header = b"%s %*s" % (b" " * width, col, b"T") + b"".join(b" %*s" % (col, label.encode()) for label in LABELS)
    out = [header.rstrip() + b"\n"]
    for name, total, columns in lines:
        line = b"%*s %*d" % (width, printable(name), col, total)
        line += b"".join(b" %*d" % (col, n) for n in columns)
        out.append(line + b"\n")
    return b"".join(out)
