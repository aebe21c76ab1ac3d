"""The rooms of lib/ (docs/ARCHITECTURE.md): every import flows downward, as each room's __init__ declares.

Each lib/<room>/__init__.py ends its docstring with `May import: a, b.` (or `the standard library only`); every
import statement in the room's modules, at module level or inside a function, is checked against that line,
and no lib module may import a program (pyqmail.commands).
"""

import ast
import re
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parent.parent / "lib"
ROOMS = sorted(p.name for p in LIB.iterdir() if (p / "__init__.py").exists())


def allowed(room):
    """Return the rooms room's __init__ docstring says it may import."""
    doc = ast.get_docstring(ast.parse((LIB / room / "__init__.py").read_text()))
    m = re.search(r"May import: (.*?)\.?\s*$", doc or "", re.S)
    assert m, "lib/%s/__init__.py does not say what it may import" % room
    text = m.group(1)
    return set() if text.startswith("the standard library") else {w.split()[0] for w in text.split(",")}  # "x (why)"


def imported_rooms(path):
    """Yield (line, target) for each pyqmail import in a module: a room name, or 'commands'."""
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["pyqmail", "commands"]:
                yield node.lineno, "commands"
            elif parts[:2] == ["pyqmail", "lib"] and len(parts) > 2:
                yield node.lineno, parts[2]


def test_every_room_declares_its_imports():
    assert "util" in ROOMS and len(ROOMS) >= 10
    for room in ROOMS:
        assert allowed(room) <= set(ROOMS), room


def test_no_module_is_left_outside_a_room():
    loose = sorted(p.name for p in LIB.glob("*.py") if p.name not in ("__init__.py", "_version.py"))
    assert loose == []


@pytest.mark.parametrize("room", ROOMS)
def test_imports_flow_downward(room):
    may = allowed(room) | {room}
    wrong = ["%s:%d imports %s" % (path.relative_to(LIB.parent), line, target)
             for path in sorted((LIB / room).glob("*.py"))
             for line, target in imported_rooms(path) if target not in may]
    assert wrong == [], "lib/%s may import only %s" % (room, ", ".join(sorted(may)))


def test_the_declared_order_has_no_cycle():
    seen, done = set(), set()

    def visit(room):
        assert room not in seen or room in done, "rooms import each other in a cycle through " + room
        if room in done:
            return
        seen.add(room)
        for other in allowed(room):
            visit(other)
        done.add(room)

    for room in ROOMS:
        visit(room)
