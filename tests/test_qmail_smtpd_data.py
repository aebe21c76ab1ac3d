"""qmail-smtpd's parsers against byte-at-a-time translations of qmail's C (hypothesis), and an SMTP smuggling matrix
through the installed program: only CRLF.CRLF ends DATA, no transaction ever gives two messages."""

import itertools
import re

import pytest
from hypothesis import example, given, settings, strategies as st

from pyqmail.lib.config import rcpthosts as rh
from pyqmail.lib.smtpd import smtpcmd, smtpdata
from test_qmail_smtpd import GREETING, messages, smtpd


def blast(data):
    """qmail-smtpd.c's blast(), byte by byte: (stored, hops, rest after the end or None); ValueError on a bare LF."""
    out, state, hops, inheader, pos, mx, my, mz = bytearray(), 1, 0, True, 0, True, True, True
    for idx, ch in enumerate(data):
        c = bytes([ch])
        if inheader:
            if pos < 9:
                mz = mz and c in (b"delivered"[pos:pos + 1], b"DELIVERED"[pos:pos + 1])
                hops += mz and pos == 8
                mx = mx and (pos >= 8 or c in (b"received"[pos:pos + 1], b"RECEIVED"[pos:pos + 1]))
                hops += mx and pos == 7
                my = my and (pos >= 2 or c == b"\r\n"[pos:pos + 1])
                inheader = not (my and pos == 1)
                pos += 1
            if c == b"\n":
                pos, mx, my, mz = 0, True, True, True
        if state in (0, 1, 2) and c == b"\n":
            raise ValueError("bare LF")
        if state == 0 and c == b"\r" or state == 1 and c == b"\r":
            state = 4
            continue
        if state == 1 and c == b".":
            state = 2
            continue
        if state == 2 and c == b"\r":
            state = 3
            continue
        if state == 3:
            if c == b"\n":
                return bytes(out), hops, data[idx + 1:]
            out += b".\r"
            if c == b"\r":
                state = 4
                continue
        if state == 4:
            if c == b"\n":
                state = 1
            elif c != b"\r":
                out += b"\r"
                state = 0
        elif state != 0:
            state = 0
        out += c
    return bytes(out), hops, None


def decode(data, cuts):
    """Feed data to DataDecoder in pieces cut at cuts; return what blast() returns (or "stray")."""
    decoder, out = smtpdata.DataDecoder(), b""
    pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    try:
        for i, piece in enumerate(pieces):
            stored, rest = decoder.feed(piece)
            out += stored
            if rest is not None:
                return out, decoder.hops, rest + b"".join(pieces[i + 1:])
    except smtpdata.StrayNewline:
        return "stray"
    return out, decoder.hops, None


ATOMS = [b"\r", b"\n", b".", b"a", b"\0", b"\xff", b"Received:", b"DELIVERED-to", b"\r\n", b"\r\n.\r\n", b"..", b"x" * 40]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(ATOMS), max_size=40), st.lists(st.integers(0, 400), max_size=6),
       st.sampled_from([9, 16, 65536]))
@example([b"\r\n", b".", b"\r", b"a", b"\r\n", b".", b"\r", b"\r\n", b"..", b"\r\n"], [2], 65536)
@example([b"\r\n", b"a", b"\r\n", b".", b"\r", b"\r\n", b"..", b"\r\n", b"\r\n.\r\n"], [], 65536)
@example([b"Received:", b"x" * 40, b"\r", b"\r\n", b"\r\n", b".", b"x" * 40, b"\r\n", b"\r\n.\r\n"], [5, 30], 16)
def test_data_decoder_is_qmails_blast_for_any_input_and_any_split(atoms, cuts, long):
    data = b"".join(atoms)
    try:
        expected = blast(data)
    except ValueError:
        expected = "stray"
    saved, smtpdata.LONG = smtpdata.LONG, long  # small values make every long-line path run
    try:
        got = decode(data, sorted(c for c in cuts if c <= len(data)))
    finally:
        smtpdata.LONG = saved
    if expected != "stray" and got != "stray" and expected[2] is None:
        assert got[2] is None and expected[0].startswith(got[0])  # an unfinished line may still be held
    else:
        assert got == expected


def addrparse(arg):
    """qmail-smtpd.c's addrparse() without the liphost part, char by char; returns the address."""
    terminator = b">"
    i = arg.find(b"<")
    if i >= 0:
        arg = arg[i + 1:]
    else:
        terminator = b" "
        i = arg.find(b":")
        arg = arg[i:] if i >= 0 else b""
        arg = arg[1:] if arg[:1] == b":" else arg
        arg = arg.lstrip(b" ")
    if arg[:1] == b"@":
        while arg:
            ch, arg = arg[:1], arg[1:]
            if ch == b":":
                break
    out, esc, quoted = b"", False, False
    for ch in (arg[i:i + 1] for i in range(len(arg))):
        if esc:
            out, esc = out + ch, False
        elif not quoted and ch == terminator:
            break
        elif ch == b"\\":
            esc = True
        elif ch == b'"':
            quoted = not quoted
        else:
            out += ch
    return out


ADDR = st.lists(st.sampled_from([b"<", b">", b":", b" ", b"@", b'"', b"\\", b"a", b"b.c", b"\xe9", b"SIZE=1"]),
                max_size=25).map(b"".join)


@settings(max_examples=2000, deadline=None)
@given(ADDR)
def test_address_parser_is_qmails_addrparse(arg):
    address, rest = smtpcmd.parse_address(arg)
    assert address == addrparse(arg)
    assert len(rest) <= len(arg)


@given(st.binary(max_size=60))
def test_command_split_is_qmails(line):
    verb, arg = smtpcmd.split_command(line)
    c = line[:-1] if line.endswith(b"\r") else line
    c = c.split(b"\0", 1)[0]
    assert verb == c.split(b" ", 1)[0].lower()
    assert arg == (c.split(b" ", 1)[1].lstrip(b" ") if b" " in c else b"")


@given(st.lists(st.tuples(st.sampled_from([b"SIZE", b"body", b"SMTPUTF8", b"X-Y", b"-bad", b""]),
                          st.one_of(st.none(), st.binary(max_size=8).filter(lambda v: b" " not in v))), max_size=6))
def test_esmtp_parameters(pairs):
    rest = b" ".join(k + (b"" if v is None else b"=" + v) for k, v in pairs)
    got = smtpcmd.parse_params(rest)
    good = [(k.upper(), v) for k, v in pairs if k and k[:1] != b"-" and b"=" not in k]
    assert got == good
    sizes = [v for k, v in good if k == b"SIZE" and v and v.isdigit() and v.isascii()]
    assert smtpcmd.size_param(got) == (int(sizes[0]) if sizes else None)


# SMTP smuggling: every fake end of data, followed by a whole smuggled transaction, then the real end
FAKE_ENDS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\n", b"\n.\r", b"\r\n.\r", b".\r\n", b"\r\n\0.\r\n",
             b"\r\n.\0\r\n", b"\r\n.\r\r\n", b"\r\r\n.\r\n"]
SMUGGLED = b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@test.example>\r\nDATA\r\nFrom: forged\r\n\r\nsmuggled\r\n"


@pytest.mark.parametrize("fake,where", list(itertools.product(FAKE_ENDS, ["body", "header", "start"])))
def test_smuggling_never_gives_two_messages(tree, fake, where):
    if where == "body":
        data = b"Subject: s\r\n\r\nbefore" + fake + SMUGGLED
    elif where == "header":
        data = b"Subject: s" + fake + SMUGGLED
    else:
        data = fake + SMUGGLED
    script = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@test.example>\r\nDATA\r\n" + data + b"\r\n.\r\nQUIT\r\n"
    code, out = smtpd(tree, script)
    got = sorted(messages(tree), key=lambda m: m[1])
    try:
        stored, _, rest = blast(data + b"\r\n.\r\n")
    except ValueError:
        assert (code, got) == (1, []) and out.endswith(b"451 See https://cr.yp.to/docs/smtplf.html.\r\n")
        return
    if rest:  # the client itself sent CRLF.CRLF first: what follows is its next transaction
        assert [m[1] for m in got] == [b"a@b.example", b"evil@x.example"]
        assert got[0][0].split(b"\n", 2)[2] == stored
        return
    assert code == 0 and len(got) == 1 and out.count(b"354 go ahead") == 1, out
    assert got[0][0].split(b"\n", 2)[2] == stored  # the whole smuggled text is the one message's body
    assert got[0][1] == b"a@b.example" and got[0][2] == [b"c@test.example"]


def test_commands_pipelined_after_the_real_end_are_a_second_transaction_only_then(tree):
    script = (b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@test.example>\r\nDATA\r\nfirst\r\n.\r\n" + SMUGGLED +
              b".\r\nQUIT\r\n")
    code, out = smtpd(tree, script)
    assert code == 0 and out.startswith(GREETING) and len(re.findall(rb"250 ok \d+ qp", out)) == 2
    bodies = sorted(m[0].split(b"\n", 2)[2] for m in messages(tree))
    assert bodies == [b"From: forged\n\nsmuggled\n", b"first\n"]


def test_nul_bytes_in_data_are_kept_exactly(tree):
    smtpd(tree, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@test.example>\r\nDATA\r\nx\0y\r\n\0.\r\n.\0\r\n.\r\n")
    assert messages(tree)[0][0].split(b"\n", 2)[2] == b"x\0y\n\0.\n\0\n"


def rcpthosts(address, listed):
    """qmail's rcpthosts() over a list: every position that is the start or a dot, tried as a key."""
    j = address.rfind(b"@")
    if j < 0:
        return True
    host = address[j + 1:].lower()
    return any((i == 0 or host[i:i + 1] == b".") and host[i:] in listed for i in range(len(host)))


HOST = st.lists(st.sampled_from([b"a", b"B", b".", b"ex", b"@"]), max_size=8).map(b"".join)


@given(HOST, st.lists(HOST, max_size=5))
def test_rcpthosts_matching_is_qmails(address, listed):
    listed = set(x.lower() for x in listed)
    domain = rh.domain_of(address)
    assert (domain is None or rh.host_allowed(domain, listed)) == rcpthosts(address, listed)
    more = dict.fromkeys(listed, b"")  # the same keys in morercpthosts.cdb give the same answers
    assert (domain is None or rh.host_allowed(domain, set(), more.get)) == rcpthosts(address, listed)


@given(HOST, st.lists(HOST, max_size=5))
def test_badmailfrom_matches_the_address_or_its_at_domain_ignoring_case(address, entries):
    entries = set(e.lower() for e in entries if e)
    at = address.rfind(b"@")
    expected = address.lower() in entries or (at >= 0 and address[at:].lower() in entries)
    assert smtpcmd.in_badmailfrom(address, entries) == expected
