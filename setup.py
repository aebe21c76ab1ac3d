"""The build step pyproject.toml cannot state: docs/NAME.N.md rendered to roff man pages (scripts/manpage.py).

Everything else is in pyproject.toml. `build_man` runs as part of `build` and writes build/man/manN/NAME.N;
the wheel installs them as data files into PREFIX/share/man/manN, where man-db finds them for PREFIX/bin
on PATH (docs/README.md). The roff is never committed: the Markdown pages are the one source.
"""

import glob
import os
import re
import sys

from setuptools import Command, setup
from setuptools.command.build import build

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = re.compile(r"^(?P<name>.+)\.(?P<section>[1-8])\.md$")
OUT = os.path.join("build", "man")


def pages():
    """Return [(Markdown page, roff page)] for every docs/NAME.N.md, paths relative to this directory."""
    out = []
    for md in sorted(glob.glob(os.path.join(HERE, "docs", "*.md"))):
        m = PAGE.match(os.path.basename(md))
        if m:
            roff = os.path.join(OUT, "man" + m.group("section"), "%s.%s" % (m.group("name"), m.group("section")))
            out.append((os.path.relpath(md, HERE), roff))
    return out


class build_man(Command):
    """Render the man pages (docs/NAME.N.md → build/man/manN/NAME.N)."""

    description = "render docs/*.N.md as roff man pages"
    user_options = []

    def initialize_options(self):
        """No options."""

    def finalize_options(self):
        """No options."""

    def run(self):
        """Render every page whose roff is missing or older than its Markdown or the converter."""
        sys.path.insert(0, os.path.join(HERE, "scripts"))
        try:
            import manpage
        finally:
            sys.path.pop(0)
        converter = os.path.join(HERE, "scripts", "manpage.py")
        for md, roff in pages():
            src, dst = os.path.join(HERE, md), os.path.join(HERE, roff)
            newest = max(os.path.getmtime(src), os.path.getmtime(converter))
            if os.path.exists(dst) and os.path.getmtime(dst) >= newest:
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(src, encoding="utf-8") as f:
                text = manpage.render(f.read())
            with open(dst + ".tmp", "w", encoding="ascii") as f:
                f.write(text)
            os.replace(dst + ".tmp", dst)


class build_with_man(build):
    """setuptools' build, with the man pages rendered too."""

    sub_commands = build.sub_commands + [("build_man", None)]


def data_files():
    """The rendered pages, installed under share/man/manN."""
    sections = {}
    for _, roff in pages():
        sections.setdefault(os.path.join("share", "man", os.path.basename(os.path.dirname(roff))), []).append(roff)
    return sorted(sections.items())


setup(cmdclass={"build": build_with_man, "build_man": build_man}, data_files=data_files())
