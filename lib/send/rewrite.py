"""qmail-send's recipient rewriting at todo preprocessing (qmail-send(8), controls; qmail-send.c rewrite)."""

from __future__ import annotations

from pyqmail.lib.send.channel import LOCAL, REMOTE
from pyqmail.lib.config.control import parse_list

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterable, Iterator


def lookup_key(key: bytes) -> bytes:
    """Return the form under which qmail's constmap compares keys: ASCII case folded."""
    return key.lower()  # bytes.lower() folds A-Z only, exactly as constmap's hash and case_diffb


def key_set(lines: Iterable[bytes]) -> frozenset[bytes]:
    """Return the lookup keys of a list control (locals, percenthack): each whole line is a key."""
    return frozenset(lookup_key(line) for line in lines)


def virtualdomain_map(lines: Iterable[bytes]) -> dict[bytes, bytes]:
    """Return {key: prepend} of virtualdomains lines; lines without `:` are ignored, as constmap does."""
    table = {}
    for line in lines:
        key, colon, prepend = line.partition(b":")
        if colon:
            # constmap chains later entries in front of earlier ones: the last duplicate wins
            table[lookup_key(key)] = prepend
    return table


def locals_lines(locals_data: bytes | None, me: bytes | None) -> list[bytes]:
    """Return the locals list: control/locals, or control/me when locals is absent (None)."""
    if locals_data is not None:
        return parse_list(locals_data)
    if me is None:
        raise ValueError("neither control/locals nor control/me")
    return [me]


class Rewriter:
    """Recipient classification built from control contents; rebuild it on HUP."""

    def __init__(self, envnoathost: bytes, locals_list: Iterable[bytes], percenthack_list: Iterable[bytes] = (),
                 virtualdomain_lines: Iterable[bytes] = ()) -> None:
        self.envnoathost = envnoathost
        self.locals = key_set(locals_list)
        self.percenthack = key_set(percenthack_list)
        self.virtualdomains = virtualdomain_map(virtualdomain_lines)
        self.me: bytes | None = None  # control/me as read at start: what an absent locals means on HUP too

    @classmethod
    def from_controls(cls, envnoathost: bytes, locals_data: bytes | None, me: bytes | None,
                      percenthack_data: bytes | None = None, virtualdomains_data: bytes | None = None) -> Rewriter:
        """Build from control files' bytes (None = file absent); locals falls back to me."""
        built = cls(envnoathost, locals_lines(locals_data, me),
                    parse_list(percenthack_data or b""), parse_list(virtualdomains_data or b""))
        built.me = me
        return built

    def reloaded(self, locals_data: bytes | None, virtualdomains_data: bytes | None) -> Rewriter:
        """Return the Rewriter after HUP: new locals (absent: control/me as read at start) and virtualdomains,
        same envnoathost and percenthack."""
        fresh = Rewriter(self.envnoathost, locals_lines(locals_data, self.me))
        fresh.percenthack = self.percenthack
        fresh.me = self.me
        fresh.virtualdomains = virtualdomain_map(parse_list(virtualdomains_data or b""))
        return fresh

    def percent_hacked(self, addr: bytes) -> bytes:
        """Return addr with envnoathost added if it has no `@`, and percenthack applied."""
        at = addr.rfind(b"@")
        if at < 0:
            at = len(addr)
            addr = addr + b"@" + self.envnoathost
        while lookup_key(addr[at + 1:]) in self.percenthack:
            pct = addr.rfind(b"%", 0, at)
            if pct < 0:
                break
            addr = addr[:pct] + b"@" + addr[pct + 1:at]
            at = pct
        return addr

    def virtualdomain_keys(self, addr: bytes, at: int) -> Iterator[bytes]:
        """Yield virtualdomains keys in qmail's order: address, domain, `.suffix`es longest first, ``."""
        for i in range(len(addr) + 1):
            if i == 0 or i == at + 1 or i == len(addr) or (i > at and addr[i:i + 1] == b"."):
                yield addr[i:]

    def rewrite(self, recip: bytes) -> tuple[str, bytes]:
        """Return (channel, rewritten address) for a T record's address."""
        addr = self.percent_hacked(recip)
        at = addr.rfind(b"@")
        if lookup_key(addr[at + 1:]) in self.locals:
            return LOCAL, addr
        for key in self.virtualdomain_keys(addr, at):
            prepend = self.virtualdomains.get(lookup_key(key))
            if prepend is None:
                continue
            if not prepend:
                break  # an exception entry: this address is not virtual
            return LOCAL, prepend + b"-" + addr
        return REMOTE, addr

    def strip_vdom_prepend(self, recip: bytes) -> bytes:
        """Return recip without the `prepend-` its domain's virtualdomains entry added (for bounces)."""
        at = recip.rfind(b"@")
        if at < 0:
            return recip
        domain = recip[at + 1:]
        for i in range(len(domain) + 1):
            if i == 0 or i == len(domain) or domain[i:i + 1] == b".":
                prepend = self.virtualdomains.get(lookup_key(domain[i:]))
                if prepend is None:
                    continue
                # only the first entry found decides, as in qmail's stripvdomprepend
                if prepend and recip.startswith(prepend) and recip[len(prepend):len(prepend) + 1] == b"-":
                    return recip[len(prepend) + 1:]
                return recip
        return recip
