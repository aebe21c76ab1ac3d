"""A NUL in a list control file separates entries, as qmail's control_readfile + constmap read it (issue 17.7)."""

from hypothesis import given, strategies as st

from pyqmail.lib.config import control
from test_qmail_smtpd import GREETING, OK, smtpd

NOGATEWAY = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
BMF = b"553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)\r\n"


def qmail_readfile(data):
    """Model of notqmail's control_readfile: getln at LF, striptrailingwhitespace (LF, space, tab; ours also
    strips CR, control.BLANKS: a file saved with CRLF), stralloc_0, and the line (with its NUL) appended unless
    its first byte is NUL or `#`."""
    sa, pos = b"", 0
    while True:
        nl = data.find(b"\n", pos)
        match = nl >= 0
        line = data[pos:nl + 1] if match else data[pos:]
        pos = nl + 1 if match else len(data)
        if not match and not line:
            return sa
        while line and line[-1:] in (b"\n", b" ", b"\t", b"\r"):
            line = line[:-1]
        line += b"\0"
        if line[0] != 0 and line[:1] != b"#":
            sa += line
        if not match:
            return sa


def constmap_keys(sa):
    """Model of constmap_init without colons: one key ends at each NUL of the buffer."""
    keys, i = [], 0
    for j, byte in enumerate(sa):
        if byte == 0:
            keys.append(sa[i:j])
            i = j + 1
    return keys


BYTES = [b"\0", b"\n", b" ", b"\t", b"\r", b"#", b"a", b"B", b"."]
CONTROL_BYTES = st.lists(st.sampled_from(BYTES), max_size=40).map(b"".join)


@given(CONTROL_BYTES)
def test_parse_list_is_qmails_readfile_then_constmap(data):
    assert control.parse_list(data) == constmap_keys(qmail_readfile(data))


@given(st.binary(max_size=60))
def test_parse_list_is_qmails_on_any_bytes(data):
    assert control.parse_list(data) == constmap_keys(qmail_readfile(data))


def test_nul_rules_by_example():
    assert control.parse_list(b"a.example\0b.example\n") == [b"a.example", b"b.example"]
    assert control.parse_list(b"a \0b \t\n") == [b"a ", b"b"]  # only the line's end is stripped
    assert control.parse_list(b"a\0\n") == [b"a", b""]
    assert control.parse_list(b"a\0#b\n") == [b"a", b"#b"]  # a comment is a line's first byte only
    assert control.parse_list(b"\0a.example\n#\0b\nc") == [b"c"]  # a line starting with NUL is skipped


def test_readlist_reads_a_file_the_same_way(tree, monkeypatch):
    monkeypatch.setenv("QMAILHOME", str(tree))
    (tree / "control" / "locals").write_bytes(b"one.example\0two.example\n\0three.example\n")
    assert control.readlist("locals") == [b"one.example", b"two.example"]


def test_smtpd_accepts_a_domain_after_a_nul_in_rcpthosts_as_qmail_does(tree):
    (tree / "control" / "rcpthosts").write_bytes(b"test.example\0other.example\n\0skipped.example\n")
    script = b"MAIL FROM:<a@b>\r\n" + b"".join(
        b"RCPT TO:<x@%s>\r\n" % d for d in (b"test.example", b"other.example", b"a.other.example",
                                            b"skipped.example"))
    assert smtpd(tree, script)[1] == GREETING + OK + OK + OK + NOGATEWAY + NOGATEWAY


def test_smtpd_refuses_a_sender_after_a_nul_in_badmailfrom_as_qmail_does(tree):
    (tree / "control" / "badmailfrom").write_bytes(b"first@x.example\0Bad@y.example\n")
    out = smtpd(tree, b"MAIL FROM:<bad@Y.example>\r\nRCPT TO:<c@test.example>\r\n")[1]
    assert out == GREETING + OK + BMF
    assert smtpd(tree, b"MAIL FROM:<first@x.example>\r\nRCPT TO:<c@test.example>\r\n")[1] == GREETING + OK + BMF
    # a line ending in NUL also lists the empty address: qmail then refuses the null sender
    (tree / "control" / "badmailfrom").write_bytes(b"first@x.example\0\n")
    assert smtpd(tree, b"MAIL FROM:<>\r\nRCPT TO:<c@test.example>\r\n")[1] == GREETING + OK + BMF
    assert smtpd(tree, b"MAIL FROM:<other@x.example>\r\nRCPT TO:<c@test.example>\r\n")[1] == GREETING + OK + OK
