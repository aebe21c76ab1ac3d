"""The man pages: docs/NAME.N.md rendered to roff by scripts/manpage.py at build time (setup.py), installed
into the venv's share/man, found by man-db through PATH; the converter escapes whatever text it is given."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import need

TOP = Path(__file__).resolve().parent.parent
PAGES = sorted(p for p in (TOP / "docs").glob("*.md") if re.fullmatch(r".+\.[1-8]\.md", p.name))
VENV = Path(sys.executable).parent.parent

spec = importlib.util.spec_from_file_location("manpage", TOP / "scripts" / "manpage.py")
manpage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(manpage)


def groff(roff, device="utf8"):
    """Format roff as man-db would (tbl, the man macros) with every warning on; return (stdout, stderr)."""
    need("groff")
    p = subprocess.run(["groff", "-t", "-man", "-T" + device, "-ww"], input=roff.encode("ascii"),
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode("utf-8"), p.stderr.decode("utf-8", "replace")


def plain(out):
    """Remove the overstriking (bold, underline) of groff's terminal output and its justification's spaces."""
    return re.sub(r"(?<=\S)  +(?=\S)", " ", re.sub(r".\x08", "", out))


def test_every_page_is_found():
    assert len(PAGES) >= 40
    assert {"qmail-send.8.md", "dot-qmail.5.md", "except.1.md"} <= {p.name for p in PAGES}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_page_renders_without_warnings(page):
    roff = manpage.render(page.read_text(encoding="utf-8"))
    roff.encode("ascii")  # non-ASCII is escaped
    name, section = re.fullmatch(r"(.+)\.([1-8])\.md", page.name).groups()
    assert roff.splitlines()[1].startswith('.TH "%s" "%s"' % (name.upper().replace("-", "\\-"), section))
    for device in ("utf8", "ascii"):  # the C locale formats for ascii
        out, err = groff(roff, device)
        assert err == "", err
        text = plain(out)
        # the NAME line in the form man-db's whatis/apropos read
        assert re.search(r"NAME\n +%s - \S" % re.escape(name), text), text[:300]
        for heading in re.findall(r"^## (.+)$", page.read_text(encoding="utf-8"), re.M):
            assert re.search(r"^%s$" % re.escape(heading.strip()), text, re.M), heading


def test_markdown_constructs():
    md = ("# demo(1)\n\n## NAME\ndemo \u2014 a test\n\n## SYNOPSIS\n`demo -a`\n`demo -b`\n\n## DESCRIPTION\n"
          "Text with `code`, **bold**, *italic* and a [link](demo.1.md).\n.starts with a dot\n'and a quote\n"
          "a \\ backslash\n\n* one\n* two\n  * nested\n\n1. first\n2. second\n\n`-x`\n: the x option\n\n"
          "| a | b |\n|---|---|\n| `\\|cmd` | 1 \u2192 2 |\n\n```\n.code line\n  indented \\n\n```\n\n"
          "    indented code\n")
    roff = manpage.render(md)
    out = plain(groff(roff)[0])
    assert "demo - a test" in out
    assert re.search(r"demo -a\n +demo -b", out)
    flat = " ".join(out.split())
    assert "Text with code, bold, italic and a link. .starts with a dot 'and a quote a \\ backslash" in flat
    assert re.search(r"\u2022 one\n", out) and re.search(r"\u2022 nested", out)
    assert re.search(r"1\. +first", out) and re.search(r"2\. +second", out)
    assert re.search(r"-x +the x option", out)
    assert re.search(r"\|cmd +1 \u2192 2", out)
    assert ".code line\n" in out and "   indented \\n" in out and "indented code" in out
    ascii_out = plain(groff(roff, "ascii")[0])
    assert "1 -> 2" in ascii_out


KNOWN_MACRO = re.compile(r"^(\.(TH|SH|SS|PP|IP|TP|RS|RE|nf|fi|TS|TE|ad|br|if !c\\\[u[0-9A-F]+\] \.char)\b|'\\\" t$)")
ESCAPE = re.compile(r"\\(e|-|&|:|fB|fI|fR|\(bu|\(dq|\[u[0-9A-F]{4,6}\]|\" t$| )")

pieces = st.one_of(
    st.text(max_size=30),
    st.sampled_from([".", "'", "\\", "\\\\", "`", "``", "**", "*", "_", "|", "-", ": ", "# ", "## ", "### ", "* ",
                     "- ", "1. ", "    ", "  ", "```", "T{", "T}", "\t", ".TH x", "'\\\"", "\\fB", "[a](b)",
                     "|---|---|", "\u2014", "\u00a0", "\x00", "\r", "\n", "\n\n", ".\\\"", "\\(dq", "\\*"]))
documents = st.lists(pieces, max_size=40).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
@example("\x80(0)")  # a link's pattern took the escape \[u0080] and its (0) for a link, leaving \u0080
def test_converter_never_crashes_and_escapes_control_characters(md):
    roff = manpage.render(md)
    roff.encode("ascii")
    lines = roff.split("\n")
    assert lines[-1] == ""
    for line in lines[:-1]:
        if line.startswith((".", "'")):
            assert KNOWN_MACRO.match(line), line
        # every backslash starts one of the escapes the converter writes
        rest = line
        while "\\" in rest:
            rest = rest[rest.index("\\"):]
            m = ESCAPE.match(rest)
            assert m, (line, rest)
            rest = rest[m.end():]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_groff_accepts_whatever_the_converter_writes(md):
    out, err = groff(manpage.render(md))
    assert "error" not in err.lower() and "warning: macro" not in err, err


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
       .filter(lambda s: s.strip() and not re.search(r"[`*_\[\]|#>:\\-]|^\s*\d", s)))
@example("\U0002f800")  # a CJK compatibility ideograph: groff prints its canonical form
@settings(max_examples=30, deadline=None)
def test_plain_text_survives(text):
    md = "# t(1)\n\n## NAME\nt \u2014 x\n\n## DESCRIPTION\n.%s\n" % text
    out = plain(groff(manpage.render(md))[0])
    want = " ".join(("." + text).split())
    # groff writes canonical equivalents (U+2F800 comes out as U+4E3D): compare canonical forms
    got = unicodedata.normalize("NFC", "".join(out.split()).replace("\u2010", "-"))
    assert unicodedata.normalize("NFC", want.replace(" ", "")) in got


def test_installed_pages_and_man_finds_them():
    """setup.py's build step put every page into the venv's share/man/manN, and man-db finds them via PATH."""
    for page in PAGES:
        name, section = re.fullmatch(r"(.+)\.([1-8])\.md", page.name).groups()
        installed = VENV / "share" / "man" / ("man" + section) / ("%s.%s" % (name, section))
        assert installed.is_file(), installed
        assert installed.read_text(encoding="ascii").startswith("'\\\" t\n.TH ")
    assert not list((TOP / "docs").glob("*.[1-8]")), "generated roff committed beside its Markdown"
    need("man")
    env = {"PATH": "%s:/usr/bin:/bin" % (VENV / "bin"), "HOME": os.environ.get("HOME", "/"), "MANPAGER": "cat",
           "PAGER": "cat", "MANWIDTH": "80", "LANG": "C.UTF-8"}
    where = subprocess.run(["man", "-w", "qmail-send"], env=env, capture_output=True, timeout=60)
    assert where.stdout.decode().strip() == str(VENV / "share" / "man" / "man8" / "qmail-send.8")
    shown = subprocess.run(["man", "qmail-send"], env=env, capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    text = plain(shown.stdout.decode("utf-8"))
    assert re.search(r"NAME\n +qmail-send - deliver mail messages from the queue", text), text[:400]
    assert shown.stderr == b""
    if shutil.which("lexgrog"):  # what mandb/whatis/apropos would index
        w = subprocess.run(["lexgrog", str(VENV / "share" / "man" / "man1" / "except.1")], capture_output=True)
        assert b"except - reverse the exit code of a program" in w.stdout
