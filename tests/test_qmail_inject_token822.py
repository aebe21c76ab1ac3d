"""qmail-inject's parsers: token822 (parse, print with folding, address lists), the rewriting rules, the
header reader and qmail's getopt — hypothesis properties plus qmail-header(5)'s own examples."""

import os

import pytest
from hypothesis import given, settings, strategies as st

from pyqmail.lib.rfc822 import token822, token822list
from pyqmail.lib.inject.injectinput import Input, header
from pyqmail.lib.inject.injectrw import Rewriter, known
from pyqmail.lib.util.sgetopt import BadOption, getopt
from pyqmail.lib.rfc822.token822 import ATOM, COMMA, COMMENT, LITERAL, QUOTE

RW = Rewriter(b"silverton", b"berkeley.edu", b"berkeley.edu")
HEADERISH = st.lists(st.sampled_from([b"a", b"b.c", b"@", b",", b" ", b"<", b">", b":", b";", b"(x)", b'"q r"',
                                      b"[1.2.3.4]", b"\\", b"(", b")", b"\n ", b"\xe9", b"+", b".", b"]", b'"']),
                     max_size=30).map(b"".join)
ANY = st.one_of(st.binary(max_size=200), HEADERISH)


def identity(tokens):
    return tokens


def field_tokens(value):
    return token822.parse(b"To: " + value)


def atoms_print_back(tokens):
    """False if an atom is empty or holds an escaped blank or special (`a\\ b`): qmail prints atoms raw."""
    return not any(k == ATOM and (not t or any(c in token822._ATOM_END for c in t)) for k, t in tokens)


def c_unparse(tokens, linelen=80):
    """token822_unparse transcribed literally (tentative breaks moved in a buffer): the folding oracle."""
    out = bytearray()
    lineb, linee = 0, None

    def fold():
        nonlocal lineb, linee
        if linee is not None and (not linelen or len(out) - lineb <= linelen):
            del out[linee:linee + 2]
            out.extend(b"\n ")
            linee = len(out) - 2
        else:
            if linee is not None:
                lineb = linee + 1
            linee = len(out)
            out.extend(b"\n ")
    last = None
    for kind, text in tokens:
        if token822._needspace(last, kind):
            out.extend(b" ")
        last = kind
        if kind in token822._ENCLOSE:
            opening, closing = token822._ENCLOSE[kind]
            out.extend(opening + token822._escaped(text) + closing)
        else:
            out.extend(kind.encode())
            if kind == COMMA:
                fold()
    fold()
    return bytes(out[:-1])


@settings(max_examples=400)
@given(ANY)
def test_parse_never_crashes_and_tokens_are_typed(data):
    tokens = token822.parse(data)
    if tokens is None:
        return
    for kind, text in tokens:
        assert kind in token822.WORDS or (kind in ".,@<>:;" and text == b"")
        if kind == ATOM:
            assert not any(c < 32 or c > 126 or c in b")]\\" for c in text)


@settings(max_examples=400)
@given(ANY)
def test_printed_tokens_parse_back_the_same(data):
    tokens = token822.parse(data)
    if tokens is None:
        return
    if not atoms_print_back(tokens):
        return
    assert token822.parse(token822.unparse(tokens, 80)) == tokens
    assert token822.parse(token822.unparse(tokens, 0)) == tokens


@settings(max_examples=400)
@given(ANY, st.sampled_from([0, 1, 20, 80]))
def test_folding_matches_token822_unparse(data, linelen):
    tokens = field_tokens(data)
    if tokens is not None:
        assert token822.unparse(tokens, linelen) == c_unparse(tokens, linelen)


@settings(max_examples=300)
@given(st.lists(st.from_regex(rb"\A[a-z]{1,30}@[a-z]{1,20}\.example\Z"), min_size=1, max_size=40))
def test_folding_keeps_lines_short_and_unfolds_to_one_line(addresses):
    tokens = field_tokens(b", ".join(addresses))
    folded = token822.unparse(tokens, 80)
    assert folded.replace(b",\n  ", b", ") == token822.unparse(tokens, 0) == b"To: " + b", ".join(addresses) + b"\n"
    for line in folded.split(b"\n")[:-1]:
        assert len(line) <= 78 or line.count(b",") <= 1  # only a single long address may overflow


@settings(max_examples=400)
@given(ANY)
def test_address_lists_never_crash_and_rewritten_lists_parse_again(data):
    tokens = field_tokens(data)
    if tokens is None:
        return
    seen = []

    def rewrite(address):
        seen.append(address)
        return RW.address(address)
    out = token822list.addrlist(tokens, rewrite)
    if out is None or not atoms_print_back(tokens):
        return
    printed = token822.unparse(out, 80)
    again = token822.parse(printed)
    assert again is not None
    # a valid address list again (not always a fixed point: `x@.@` -> `x@.` -> `x@host`, one pass per rule as qmail)
    assert token822list.addrlist(again, RW.address) is not None
    for address in seen:
        assert all(kind != COMMA or address for kind, _ in address)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.from_regex(rb"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z"),
                          st.lists(st.from_regex(rb"\A[ -~]{0,40}\Z"), min_size=1, max_size=3)),
                max_size=8),
       st.binary(max_size=100), st.sampled_from([1, 2, 7, 65536]))
def test_header_reader_unfolds_fields_and_passes_the_body_untouched(fields, body, chunk):
    raw = [name + b": " + lines[0] + b"\n" + b"".join(b"\t" + l + b"\n" for l in lines[1:]) for name, lines in fields]
    data = b"".join(raw) + b"\n" + body
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    import pyqmail.lib.inject.injectinput as ii
    old, ii.CHUNK = ii.CHUNK, chunk
    try:
        source = Input(r)
        got = []
        start = header(source, got.append)
        rest = b"".join(source.chunks())
    finally:
        ii.CHUNK = old
        os.close(r)
    assert got == raw
    assert start == b"\n"
    assert rest == body + (b"\n" if body and not body.endswith(b"\n") else b"")


@pytest.mark.parametrize("width, folded", [(78, False), (79, True)])
def test_a_line_holds_at_most_78_bytes_up_to_its_comma(width, folded):
    first = b"a" * (width - len(b"To: , b@c.example,")) + b"@x.example"
    first = first[len(b"@x.example"):]  # keep the total exact
    line = b"To: " + first + b"@x.example, b@c.example,"
    first = first[:len(first) - (len(line) - width)]
    value = first + b"@x.example, b@c.example, d@e.example"
    assert len(b"To: " + first + b"@x.example, b@c.example,") == width
    out = token822.unparse(field_tokens(value))
    if folded:
        assert out == b"To: " + first + b"@x.example,\n  b@c.example, d@e.example\n"
    else:
        assert out == b"To: " + first + b"@x.example, b@c.example,\n  d@e.example\n"


def read_header(data):
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    source = Input(r)
    got = []
    start = header(source, got.append)
    rest = b"".join(source.chunks())
    os.close(r)
    return got, start + rest


@pytest.mark.parametrize("data, fields, body", [
    (b"From joe Sat\nTo: x\n\nb\n", [b"MBOX-Line: From joe Sat\n", b"To: x\n"], b"\nb\n"),
    (b"To: x\nnot a field\nmore\n", [b"To: x\n"], b"\nnot a field\nmore\n"),
    (b"To: x\n\r\nb", [b"To: x\n"], b"\n\r\nb\n"),
    (b"To: x\n y", [b"To: x\n y\n"], b""),
    (b"", [], b""),
    (b" To: x\n", [], b"\n To: x\n"),
])
def test_header_reader_follows_qmails_headerbody(data, fields, body):
    assert read_header(data) == (fields, body)


@pytest.mark.parametrize("before, after", [  # qmail-header(5)'s examples and qmail-inject(8)'s rules
    (b"djb", b"djb@silverton.berkeley.edu"),
    (b"djb@silverton", b"djb@silverton.berkeley.edu"),
    (b"eric@mammoth.cs+", b"eric@mammoth.cs.berkeley.edu"),
    (b"eric@mammoth+", b"eric@mammoth.berkeley.edu"),
    (b"djb@[128.32.183.163]", b"djb@[128.32.183.163]"),
    (b"@r1,@r2:djb@a.b", b"djb@a.b"),
    (b"@r1", b""),
    (b"user@host.", b"user@host.berkeley.edu"),
    (b"user@", b"user@silverton.berkeley.edu"),
    (b"foo@[]", b"foo@[]"),
    (b"", b""),
    (b'"john doe"@a.b', b"john doe@a.b"),
])
def test_address_rules(before, after):
    assert token822.unquote(RW.address(token822.parse(before))) == after


def test_plus_default_host_uses_plusdomain_not_defaultdomain():
    rw = Rewriter(b"mammoth+", b"wrong.example", b"berkeley.edu")
    assert token822.unquote(rw.address(token822.parse(b"eric"))) == b"eric@mammoth.berkeley.edu"


@pytest.mark.parametrize("field, name", [(b"To: x", b"to"), (b"tO :x", b"to"), (b"RESENT-cc\t: x", b"resent-cc"),
                                         (b"X-To: x", None), (b"To", None), (b"Resent_To: x", None)])
def test_known_fields(field, name):
    assert known(field) == name


@pytest.mark.parametrize("argv, spec, result", [
    (["-ab", "-fx", "y"], "abf:", [("a", None), ("b", None), ("f", "x"), (None, ["y"])]),
    (["-f", "x", "-", "-a"], "af:", [("f", "x"), (None, ["-", "-a"])]),
    (["--", "-a"], "a", [(None, ["-a"])]),
    (["--x", "-a"], "a", [(None, ["-a"])]),
    (["-Efoo", "-a", "b"], "aE", [("E", "foo"), ("a", None), (None, ["b"])]),
])
def test_qmail_getopt(argv, spec, result):
    assert list(getopt(argv, spec, "p", rest="E")) == result


@pytest.mark.parametrize("argv, message", [(["-z"], "p: illegal option -- z"),
                                           (["-f"], "p: option requires an argument -- f")])
def test_qmail_getopt_complaints(argv, message):
    with pytest.raises(BadOption) as e:
        list(getopt(argv, "f:", "p"))
    assert str(e.value) == message


def test_addrlist_calls_rewrite_right_to_left_and_inserts_commas():
    seen = []
    out = token822list.addrlist(field_tokens(b"a b, c"), lambda t: seen.append(token822.unquote(t)) or t)
    assert seen == [b"c", b"b", b"a"]
    assert token822.unparse(out) == b"To: a, b, c\n"


def test_nested_comments_lose_their_inner_parentheses():
    assert token822.parse(b"(a (b) c)") == [(COMMENT, b"a b c")]
    assert token822.parse(b'"a\\"b" [x\\]y]') == [(QUOTE, b'a"b'), (LITERAL, b"x]y")]
    assert token822.parse(b"a)b") == [(QUOTE, b"a)b")]
    assert token822.parse(b")") is None and token822.parse(b"(") is None and token822.parse(b'"') is None
