"""qmail's getopt (sgetopt/subgetopt): `-abc` clusters, `-fARG` or `-f ARG`, `--` ends the options, `-` is an operand."""

from __future__ import annotations

MYPY = False
if MYPY:  # typing only: never imported at run time
    from collections.abc import Iterator


class BadOption(Exception):
    """An unknown option letter, or one missing its argument; str() is sgetopt's complaint."""

    def __init__(self, program: str, letter: str, missing: bool) -> None:
        self.why = "%s -- %s" % ("option requires an argument" if missing else "illegal option", letter)
        super().__init__("%s: %s" % (program, self.why))


def getopt(argv: list[str], spec: str, program: str,
           rest: str = "") -> Iterator[tuple[str, str | None] | tuple[None, list[str]]]:
    """Yield (letter, argument or None) for each option of argv (without its program name), then (None, operands).

    spec is getopt's string (`f:` takes an argument); letters in rest take the rest of their word, if any,
    as an optional argument (sendmail's -E and -J). Raises BadOption when it gets to a bad one."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word[:1] != "-" or word == "-":
            break
        i += 1
        if word[1] == "-":
            break
        pos = 1
        while pos < len(word):
            letter = word[pos]
            pos += 1
            at = spec.find(letter)
            if letter == ":" or at < 0:
                raise BadOption(program, letter, False)
            if letter in rest:
                yield letter, word[pos:]
                break
            if spec[at + 1:at + 2] != ":":
                yield letter, None
                continue
            if pos < len(word):
                yield letter, word[pos:]
            elif i < len(argv):
                yield letter, argv[i]
                i += 1
            else:
                raise BadOption(program, letter, True)
            break
    yield None, argv[i:]


def options(argv: list[str], spec: str, program: str,
            rest: str = "") -> tuple[list[tuple[str, str | None]], list[str]]:
    """Return ([(letter, argument or None)...], operands) for argv, as getopt yields them; raises BadOption."""
    pairs: list[tuple[str, str | None]] = []
    operands: list[str] = []
    for found in getopt(argv, spec, program, rest):
        if found[0] is None:
            operands = found[1]
        else:
            pairs.append(found)
    return pairs, operands
