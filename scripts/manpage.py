#!/usr/bin/env python3
"""Render pyqmail's Markdown man pages (docs/NAME.N.md) as roff man(7) pages, for the build (setup.py).

The pages use a small Markdown subset, and this converter knows that subset only: a `# name(N)` title,
`##` sections and `###` subsections, paragraphs, code spans, **bold**, *italic* and _italic_, bullet
(`*`, `-`) and numbered lists (nested by indentation), definition lists (a line, then `: text`), GitHub
tables (rendered with tbl), fenced and indented code blocks, links (their text). Everything else is text.
All text is escaped: a backslash prints as one, a line never begins with a control character (`.` or `'`),
`-` is a minus sign (so options copy right) and other non-ASCII characters are \\[uXXXX] escapes.

Usage: scripts/manpage.py docs/qmail-send.8.md [OUT]   (OUT defaults to stdout)
"""

import re
import sys

BULLET = re.compile(r"^( {0,3})([*-])( {1,4}|$)")
ORDERED = re.compile(r"^( {0,3})(\d{1,9})([.)])( {1,4}|$)")
FENCE = re.compile(r"^ {0,3}(```+|~~~+)")
HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t#]*$")
DEFINITION = re.compile(r"^ {0,3}: ")
TABLE_RULE = re.compile(r"^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
TITLE = re.compile(r"^(\S+)\((\w+)\)$")


def indent_of(line):
    """Return the number of leading spaces of line (a tab counts as up to the next multiple of 4)."""
    n = 0
    for ch in line:
        if ch == " ":
            n += 1
        elif ch == "\t":
            n += 4 - n % 4
        else:
            break
    return n


def dedent(line, n):
    """Remove up to n columns of leading white space from line."""
    line = line.expandtabs(4) if line[:1] == "\t" or "\t" in line[:n] else line
    cut = 0
    while cut < n and cut < len(line) and line[cut] == " ":
        cut += 1
    return line[cut:]


def is_blank(line):
    """Return whether line holds only white space."""
    return not line.strip()


def starts_block(lines, i):
    """Return whether lines[i] starts a block that interrupts a paragraph."""
    line = lines[i]
    if HEADING.match(line) or FENCE.match(line):
        return True
    m = BULLET.match(line)
    if m and m.group(3):
        return True
    m = ORDERED.match(line)
    if m and m.group(2) == "1" and m.group(4):
        return True
    return is_table(lines, i)


def is_table(lines, i):
    """Return whether a GitHub table starts at lines[i] (a row, then a rule)."""
    return (lines[i].lstrip().startswith("|") and i + 1 < len(lines) and "-" in lines[i + 1]
            and bool(TABLE_RULE.match(lines[i + 1])))


def split_row(line):
    """Return the cells of a table row: split at unescaped |, with \\| becoming |."""
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", s)]


def parse(lines):
    """Parse Markdown lines into blocks: (kind, ...) tuples."""
    blocks = []
    i = 0
    after_blank = True
    while i < len(lines):
        line = lines[i]
        if is_blank(line):
            i += 1
            after_blank = True
            continue
        m = FENCE.match(line)
        if m:
            fence, body = m.group(1), []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence[0] * len(fence)):
                body.append(dedent(lines[i], indent_of(line)))
                i += 1
            blocks.append(("code", body))
            i += 1
            after_blank = False
            continue
        if indent_of(line) >= 4 and after_blank:
            body = []
            while i < len(lines) and (is_blank(lines[i]) or indent_of(lines[i]) >= 4):
                body.append(dedent(lines[i], 4))
                i += 1
            while body and is_blank(body[-1]):
                body.pop()
            blocks.append(("code", body))
            after_blank = True
            continue
        after_blank = False
        m = HEADING.match(line)
        if m:
            blocks.append(("heading", len(m.group(1)), (m.group(2) or "").strip()))
            i += 1
            continue
        if is_table(lines, i):
            header = split_row(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(split_row(lines[i]))
                i += 1
            blocks.append(("table", header, rows))
            continue
        bullet, ordered = BULLET.match(line), ORDERED.match(line)
        if bullet or ordered or (i + 1 < len(lines) and DEFINITION.match(lines[i + 1])):
            i = parse_list(lines, i, blocks)
            continue
        para = [line.strip()]
        i += 1
        while i < len(lines) and not is_blank(lines[i]) and not starts_block(lines, i):
            if DEFINITION.match(lines[i]):
                break
            para.append(lines[i].strip())
            i += 1
        blocks.append(("para", para))
    return blocks


def list_marker(lines, i):
    """Return (kind, tag, content indent, first line) for a list item starting at lines[i], or None."""
    line = lines[i]
    m = BULLET.match(line)
    if m:
        width = len(m.group(1)) + 1 + (len(m.group(3)) or 1)
        return "ul", "", width, line[len(m.group(0)):]
    m = ORDERED.match(line)
    if m:
        width = len(m.group(1)) + len(m.group(2)) + 1 + (len(m.group(4)) or 1)
        return "ol", m.group(2) + ".", width, line[len(m.group(0)):]
    if i + 1 < len(lines) and DEFINITION.match(lines[i + 1]):
        d = lines[i + 1]
        width = indent_of(d) + 2
        return "dl", line.strip(), width, d[width:]
    return None


def parse_list(lines, i, blocks):
    """Parse the list starting at lines[i] into a ("list", kind, items) block; return the next index."""
    kind = list_marker(lines, i)[0]
    items = []
    while i < len(lines):
        marker = list_marker(lines, i)
        if marker is None or marker[0] != kind:
            break
        _, tag, width, first = marker
        i += 2 if kind == "dl" else 1
        body = [first]
        while i < len(lines):
            line = lines[i]
            if is_blank(line):
                j = i
                while j < len(lines) and is_blank(lines[j]):
                    j += 1
                if j < len(lines) and indent_of(lines[j]) >= width:
                    body.extend([""] * (j - i))
                    i = j
                    continue
                break
            if indent_of(line) >= width:
                body.append(dedent(line, width))
            elif not is_blank(body[-1]) and not starts_block(lines, i) and not DEFINITION.match(line) \
                    and list_marker(lines, i) is None:
                body.append(line.strip())  # a lazy continuation line
            else:
                break
            i += 1
        items.append((tag, parse(body)))
        j = i
        while j < len(lines) and is_blank(lines[j]):
            j += 1
        if j < len(lines) and list_marker(lines, j) and list_marker(lines, j)[0] == kind:
            i = j
            continue
        break
    blocks.append(("list", kind, items))
    return i


def escape(text):
    """Escape plain text for roff: backslashes, minus signs, non-ASCII and control characters."""
    out = []
    for ch in text:
        o = ord(ch)
        if ch == "\\":
            out.append("\\e")
        elif ch == "-":
            out.append("\\-")
        elif ch == "\t":
            out.append(" ")
        elif ch == "\n":
            out.append(ch)
        elif o < 32 or o == 127:
            out.append("?")
        elif o < 127:
            out.append(ch)
        elif 0xD800 <= o <= 0xDFFF or o in (0xFFFE, 0xFFFF):
            out.append("?")
        else:
            out.append("\\[u%04X]" % o)
    return "".join(out)


ASCII = {"\u2014": "\\-\\-", "\u2013": "\\-", "\u2212": "\\-", "\u2192": "\\->", "\u2190": "<\\-", "\u2026": "...",
         "\u00b5": "u", "\u00d7": "x", "\u230a": "[", "\u230b": "]", "\u221a": "sqrt", "\u00b2": "^2", "\u00a7": "S",
         "\u00a0": "\\ ", "\u2018": "'", "\u2019": "'", "\u201c": "\\(dq", "\u201d": "\\(dq"}


def ascii_for(ch):
    """Return roff text in ASCII that stands for ch."""
    if ch in ASCII:
        return ASCII[ch]
    import unicodedata
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    plain = "".join(c for c in plain if 32 < ord(c) < 127 and c not in "\\.'\"")
    return escape(plain) or "?"


PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def inline(text):
    """Render one paragraph's Markdown inline text as roff text (code spans, emphasis, links)."""
    saved = []

    def keep(roff):
        saved.append(roff)
        return "\x00%d\x00" % (len(saved) - 1)

    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in PUNCT:
            out.append(keep(escape(text[i + 1])))
            i += 2
            continue
        if ch == "`":
            run = len(text[i:]) - len(text[i:].lstrip("`"))
            close = text.find("`" * run, i + run)
            while close != -1 and text[close + run:close + run + 1] == "`":
                close = text.find("`" * run, close + run + 1)
            if close != -1:
                code = text[i + run:close]
                if code.startswith(" ") and code.endswith(" ") and code.strip():
                    code = code[1:-1]
                out.append(keep("\\fB" + escape(code) + "\\fR"))
                i = close + run
                continue
            out.append(keep(escape(text[i:i + run])))
            i += run
            continue
        if ch == "\x00":
            out.append("?")
            i += 1
            continue
        out.append(ch)
        i += 1
    s = escape_keeping("".join(out))
    s = re.sub(r"(?<!\\)\[([^\]\x00]+)\]\(([^)\s]+)\)",  # not an escape's \[uXXXX]
               lambda m: m.group(1) if not re.match(r"https?:", m.group(2)) else "%s <%s>" % (m.group(1), m.group(2)),
               s)
    s = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"\\fB\1\\fR", s)
    s = re.sub(r"(?<![\w*\\])\*(?=[^\s*])(.+?)(?<=[^\s*\\])\*(?![\w*])", r"\\fI\1\\fR", s)
    s = re.sub(r"(?<![\w\\])_(?=[^\s_])(.+?)(?<=[^\s_])_(?!\w)", r"\\fI\1\\fR", s)
    return re.sub("\x00(\\d+)\x00", lambda m: saved[int(m.group(1))], s)


def escape_keeping(s):
    """escape() every character of s but the \\x00N\\x00 placeholders of inline()."""
    return "".join(part if part.startswith("\x00") else escape(part) for part in re.split("(\x00\\d+\x00)", s))


def text_lines(roff):
    """Split roff text into source lines, none empty or starting with a control character or a space."""
    out = []
    for line in roff.split("\n"):
        line = line.strip(" ")
        if not line:
            continue
        if line[0] in ".'":
            line = "\\&" + line
        out.append(line)
    return out


def code_lines(body):
    """Render the lines of a code block for no-fill mode."""
    out = []
    for line in body:
        line = escape(line.rstrip())
        out.append("\\&" + line if not line or line[0] in ".' " else line)
    return out


def render_table(header, rows):
    """Render a table with tbl: a bold header row, a rule, text blocks for the cells."""
    ncols = max([len(header)] + [len(r) for r in rows])
    out = [".ad l", ".TS", "tab(\t);", " ".join(["lb"] * ncols), " ".join(["lx"] * ncols) + "."]

    def row(cells):
        cells = list(cells) + [""] * (ncols - len(cells))
        # narrow columns: a line may also break after a minus sign or a slash (\\: is a break point)
        return "\t".join("T{\n%s\nT}" % ("\n".join(text_lines(
            inline(c).replace("\\-", "\\-\\:").replace("/", "/\\:"))) or "\\&") for c in cells)

    out.append(row(header))
    out.append("_")
    out.extend(row(r) for r in rows)
    out.extend([".TE", ".ad b"])
    return out


def render_blocks(blocks, nested, section):
    """Render parsed blocks as roff lines; nested: inside a list item (paragraphs continue its indent)."""
    out = []
    first = nested
    for block in blocks:
        kind = block[0]
        if kind == "heading":
            level, text = block[1], block[2]
            out.extend([".SH" if level <= 2 else ".SS"] + (text_lines(inline(text)) or ["\\&"]))
            section[0] = text.strip().upper()
            first = True  # a heading starts a paragraph of its own: no .PP right after it
            continue
        if kind == "para":
            text = "\n".join(block[1])
            if section[0] == "NAME":
                text = re.sub(r"\s+\u2014\s+", " - ", text, count=1)
            if not first:
                out.append(".IP" if nested else ".PP")
            if section[0] == "SYNOPSIS":  # one usage per source line, as man pages print them
                for n, line in enumerate(block[1]):
                    out.extend(([".br"] if n else []) + text_lines(inline(line)))
            else:
                out.extend(text_lines(inline(text)))
        elif kind == "code":
            if nested or not first:
                out.append(".IP" if nested else ".PP")
            if not nested:
                out.append(".RS 4")
            out.extend([".nf"] + code_lines(block[1]) + [".fi"])
            if not nested:
                out.append(".RE")
        elif kind == "table":
            if not first:
                out.append(".IP" if nested else ".PP")
            out.extend(render_table(block[1], block[2]))
        elif kind == "list":
            if nested:
                out.append(".RS")
            for tag, body in block[2]:
                if block[1] == "ul":
                    out.append(".IP \\(bu 2")
                elif block[1] == "ol":
                    out.append(".IP %s 4" % tag)
                else:
                    out.append(".TP")
                    out.extend(text_lines(inline(tag)) or ["\\&"])
                out.extend(render_blocks(body, True, section))
            if nested:
                out.append(".RE")
        first = False
    return out


def render(markdown, name="", section=""):
    """Return the roff man page for one Markdown page (name and section default to its `# name(N)` title)."""
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks = parse(lines)
    if blocks and blocks[0][0] == "heading" and blocks[0][1] == 1:
        m = TITLE.match(blocks[0][2])
        if m:
            name, section = name or m.group(1), section or m.group(2)
        blocks = blocks[1:]
    title = escape(name.upper() or "UNTITLED").replace('"', "\\(dq")
    section = re.sub(r"[^0-9A-Za-z]", "", section) or "1"
    head = ["'\\\" t", '.TH "%s" "%s" "" "pyqmail" "pyqmail manual"' % (title, section)]
    body = render_blocks(blocks, False, [""])
    # an ASCII stand-in for each non-ASCII character the output device lacks (groff -Tascii: the C locale)
    for code in sorted(set(re.findall(r"\\\[u([0-9A-F]{4,6})\]", "\n".join(body)))):
        head.append(".if !c\\[u%s] .char \\[u%s] %s" % (code, code, ascii_for(chr(int(code, 16)))))
    return "\n".join(head + body) + "\n"


def main(argv):
    """Render argv[1] to argv[2] (or stdout)."""
    if len(argv) not in (2, 3):
        sys.stderr.write("usage: manpage.py page.N.md [out]\n")
        return 100
    with open(argv[1], encoding="utf-8") as f:
        roff = render(f.read())
    if len(argv) == 3:
        with open(argv[2], "w", encoding="ascii") as f:
            f.write(roff)
    else:
        sys.stdout.write(roff)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
